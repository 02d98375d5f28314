"""Train and score the seed notebook's approach on pneumo's patient-level validation split, for comparison.

The original notebook trained five copies of a small CNN at 64x64 (BN, conv32 3x3, maxpool, dropout, conv32 5x5,
maxpool, conv64 5x5, maxpool, conv128 5x5, maxpool, dense 256, dense 2 softmax) and averaged them, with no
augmentation and no class weights, labelling at P >= 0.5. This script reproduces that on exactly the split that
`pneumo.train` uses (same seed and fraction), so the two models' validation figures can be compared.

Example:
    python -m pneumo.training.baseline --data DATA/chest_xray --out models/baseline_seed_ensemble.json
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import cv2
import keras
import numpy as np
from keras import layers

from pneumo import __version__, config
from pneumo.training import data, metrics
from pneumo.training.train import Settings

log = logging.getLogger("pneumo.baseline")


def notebook_cnn(x, prefix: str = ""):
    """The notebook CNN's layers on x, float (B, S, S, 1) in 0..1.

    Returns (last convolution's feature map (B, S/8, S/8, 128), logits (B, 2) for NORMAL, PNEUMONIA).
    """
    x = layers.BatchNormalization(name=f"{prefix}bn")(x)
    x = layers.Conv2D(32, 3, padding="same", activation="relu", name=f"{prefix}conv1")(x)  # (B, S, S, 32)
    x = layers.MaxPooling2D(2)(x)  # S/2
    x = layers.Dropout(0.25)(x)
    x = layers.Conv2D(32, 5, padding="same", activation="relu", name=f"{prefix}conv2")(x)
    x = layers.MaxPooling2D(2)(x)  # S/4
    x = layers.Conv2D(64, 5, padding="same", activation="relu", name=f"{prefix}conv3")(x)
    x = layers.MaxPooling2D(2)(x)  # S/8
    fmap = layers.Conv2D(128, 5, padding="same", activation="relu", name=f"{prefix}conv4")(x)  # (B, S/8, S/8, 128)
    x = layers.MaxPooling2D(2)(fmap)  # S/16
    x = layers.Dense(256, activation="relu")(layers.Flatten()(x))
    return fmap, layers.Dense(2, name=f"{prefix}logits")(x)  # (B, 2)


def build_member(size: int = 64, seed: int = 0):
    """One copy of the notebook CNN, compiled: (B, size, size, 1) 0..255 -> softmax (B, 2)."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((size, size, 1))
    _, logits = notebook_cnn(layers.Rescaling(1.0 / 255.0)(inp))
    model = keras.Model(inp, layers.Softmax()(logits))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return model


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pneumo.training.baseline", description=__doc__.split("\n\n")[0])
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--out", type=Path, default=Path("models/baseline_seed_ensemble.json"))
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--members", type=int, default=5)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--cache-dir", default=Settings.cache_dir, help="decoded-image cache ('' = none)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    s = Settings()
    t0 = time.time()
    paths, labels = data.list_split(args.data / "train")
    cache = Path(args.cache_dir) if args.cache_dir else None
    x224 = data.load_arrays(paths, config.IMAGE_SIZE, cache)  # (N, 224, 224, 1): the squash, as in training
    x = np.stack([cv2.resize(im[:, :, 0], (args.size, args.size), interpolation=cv2.INTER_AREA) for im in x224])
    x = x[..., None].astype("float32")  # (N, size, size, 1)
    tr, va = data.patient_split(paths, labels, s.val_fraction, s.seed)
    probs = []
    for m in range(args.members):
        model = build_member(args.size, seed=s.seed + m)
        model.fit(x[tr], labels[tr], batch_size=32, epochs=args.epochs, shuffle=True, verbose=2)
        probs.append(model.predict(x[va], verbose=0)[:, 1])
        log.info("member %d/%d done", m + 1, args.members)
    p_va = np.mean(probs, axis=0)
    result = {
        "approach": f"seed notebook: {args.members} x notebook CNN at {args.size}x{args.size}, no augmentation, "
        f"no class weights, {args.epochs} epochs each, averaged, label at P >= 0.5",
        "validation_split": f"same as pneumo.train: {s.val_fraction:.0%} of each class, whole patients, seed {s.seed}",
        "validation": metrics.metrics_at(labels[va], p_va, 0.5),
        "command": "python -m pneumo.training.baseline " + " ".join(sys.argv[1:] if argv is None else argv),
        "seconds": round(time.time() - t0, 1),
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    log.info("validation: %s", json.dumps(result["validation"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
