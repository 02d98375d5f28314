"""Train the lung-field U-Net on the lung masks of the training images.

Examples (DATA: the public data set's folder; MASKS: the lung-mask folder with train/{NORMAL,PNEUMONIA}/*.png):
    # the committed model (2 CPU cores: about 4 minutes; decoded images are cached in .cache/)
    python -m pneumo.training.train_lungs --data DATA/chest_xray --masks DATA/lung_masks --out models/
    # a few seconds, on a synthetic folder with the same layout (used by the tests)
    python -m pneumo.training.train_lungs --data /tmp/synth --masks /tmp/synth_masks --out /tmp/model --preset smoke

The validation split is the classifier's (pneumo.data.patient_split on the whole train folder, same fraction and
seed), so neither model has seen the other's validation patients. Dice and IoU are measured at 224 px, after
post-processing, on validation images with a mask. Writes OUT/pneumo_lungs.keras and OUT/pneumo_lungs.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import logging
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import keras
import numpy as np
import tensorflow as tf

from pneumo import config
from pneumo.training import data
from pneumo.training.augment import Augmentation, image_mask_augment
from pneumo.training.export import export_or_warn
from pneumo.training.metrics import lung_figures
from pneumo.training.networks import build_unet, dice_loss, keras_network, layer_rows
from pneumo.training.settings import add_setting_args, settings_from, trainer_parser

log = logging.getLogger("pneumo.train_lungs")


# ----------------------------------------------------------------------------------------------------------------
@dataclass
class Settings(Augmentation):
    image_size: int = config.LUNG_SEG_SIZE  # U-Net input; masks are evaluated at 224
    widths: tuple[int, ...] = (8, 16, 32, 64, 128)
    batch_size: int = 16
    epochs: int = 14
    patience: int = 4  # epochs without a validation-loss improvement before stopping
    learning_rate: float = 2e-3
    val_fraction: float = 0.15  # the classifier's split: same fraction, same seed
    seed: int = 1337
    max_per_class: int = 0  # 0 = all images
    # augmentation (image and mask move together; intensity changes touch the image only): milder geometry
    shift: float = 0.06
    zoom: tuple[float, float] = (0.9, 1.1)
    aspect: float = 0.06
    cache_dir: str = ".cache"


PRESETS: dict[str, dict] = {
    "full": {},
    "smoke": dict(
        image_size=32, widths=(4, 8, 8), epochs=1, batch_size=4, max_per_class=6, val_fraction=0.3, cache_dir=""
    ),  # fmt: skip
}


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, Settings]:
    p = trainer_parser("pneumo-train-lungs", __doc__, "pneumo_lungs", PRESETS)
    p.add_argument("--masks", required=True, type=Path, help="folder with train/{NORMAL,PNEUMONIA}/<stem>.png masks")
    add_setting_args(p, Settings)
    args = p.parse_args(argv)
    s = settings_from(args, Settings, PRESETS[args.preset])
    return args, s


# ----------------------------------------------------------------------------------------------------------------
def to_size(x: np.ndarray, size: int) -> np.ndarray:
    """Area-resize a stack (N, H, W) of uint8 or float to (N, size, size) float32."""
    return np.stack([cv2.resize(np.asarray(a, np.float32), (size, size), interpolation=cv2.INTER_AREA) for a in x])


def train(args: argparse.Namespace, s: Settings) -> dict:
    """Train, evaluate on the validation patients and write the model and its metadata; returns the metadata."""

    t0 = time.time()
    keras.utils.set_random_seed(s.seed)
    paths, labels = data.list_split(args.data / "train")
    if not paths:
        raise SystemExit(f"no images under {args.data / 'train'}")
    tr, va = data.patient_split(paths, labels, s.val_fraction, s.seed)  # on ALL images: the classifier's split
    if s.max_per_class:
        keep = set(np.concatenate([np.flatnonzero(labels == c)[: s.max_per_class] for c in (0, 1)]).tolist())
        tr, va = np.array([i for i in tr if i in keep]), np.array([i for i in va if i in keep])
    masks = data.load_masks(paths, args.data, args.masks)  # (N, 224, 224) bool
    has = masks.reshape(len(masks), -1).any(axis=1)
    tr, va = tr[has[tr]], va[has[va]]
    log.info("images with a mask: train %d, validation %d (of %d)", len(tr), len(va), len(paths))
    cache = Path(s.cache_dir) if s.cache_dir else None
    used = np.concatenate([tr, va])
    x224 = np.zeros((len(paths), 224, 224), np.uint8)
    x224[used] = data.load_arrays([paths[i] for i in used], 224, cache)[..., 0]
    x_tr = to_size(x224[tr], s.image_size)[..., None]  # (N, s, s, 1) float 0..255
    y_tr = to_size(masks[tr], s.image_size)[..., None]  # (N, s, s, 1) soft 0..1
    x_va = to_size(x224[va], s.image_size)[..., None]
    y_va = to_size(masks[va], s.image_size)[..., None]

    ds = (
        tf.data.Dataset.from_tensor_slices((x_tr, y_tr))
        .shuffle(len(x_tr), seed=s.seed, reshuffle_each_iteration=True)
        .batch(s.batch_size)
        .map(image_mask_augment(s), num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )
    model = build_unet(s.image_size, s.widths)
    model.compile(optimizer=keras.optimizers.Adam(s.learning_rate), loss=dice_loss)
    log.info("U-Net: %d parameters", model.count_params())
    callbacks = [
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=s.patience, restore_best_weights=True),
        keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=2, min_lr=1e-5),
    ]
    hist = model.fit(ds, validation_data=(x_va, y_va), epochs=s.epochs, callbacks=callbacks, verbose=2)
    final = build_unet(s.image_size, s.widths)  # an uncompiled copy: no optimizer state in the file
    final.set_weights(model.get_weights())
    seconds = round(time.time() - t0, 1)

    net = keras_network(final, {"input_size": s.image_size})
    val = lung_figures(net, x224[va], masks[va])
    by_class = {c: lung_figures(net, x224[va][labels[va] == k], masks[va][labels[va] == k])
                for k, c in enumerate(("NORMAL", "PNEUMONIA"))}  # fmt: skip
    log.info("validation (224 px, post-processed): %s", json.dumps(val))
    args.out.mkdir(parents=True, exist_ok=True)
    model_file = args.out / f"{args.name}.keras"
    final.save(model_file)
    meta = metadata(args, s, final, val, by_class, hist.history, seconds, paths, labels, len(tr), len(va))
    model_file.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")
    meta["tflite"] = export_or_warn(model_file)  # the TFLite copy the app and the CLI run
    log.info("done in %.0f s; wrote %s", time.time() - t0, model_file)
    return meta


def metadata(args, s, model, val, by_class, history, seconds, paths, labels, n_tr, n_va) -> dict:
    """The JSON that travels with the model: inputs, layers, threshold, metrics with their data, command, versions."""

    return {
        "name": args.name,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "task": "lung-field segmentation (V7 Labs masks: lung fields including the retrocardiac region)",
        "input_size": s.image_size,
        "input": "the 224x224 squash of the image (pneumo.preprocess), area-resized to input_size, 0..255",
        "output": "P(lung) per pixel; resized to 224, thresholded, two largest components kept, holes filled",
        "threshold": 0.5,
        "post_processing": "threshold 0.5 at 224 px; the two largest 8-connected components (each >= 10% of the "
        "largest); holes filled",
        "parameters": int(model.count_params()),
        "layers": layer_rows(model),
        "metrics": {
            "validation": {
                **val,
                "data": f"validation split carved from train by patient ({n_va} images with a "
                "mask), Dice/IoU at 224 px after post-processing",
            },  # fmt: skip
            "validation_by_class": by_class,
        },
        "training": {
            "command": "python -m pneumo.training.train_lungs " + " ".join(sys.argv[1:]) if args.cli else "train()",
            "preset": args.preset,
            "settings": dataclasses.asdict(s),
            "train_images": n_tr,
            "validation_images": n_va,
            "epochs_run": len(history["loss"]),
            "history": {k: [round(float(v), 5) for v in vals] for k, vals in history.items()},
            "seconds": seconds,
            "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
            "data": {
                "fingerprint_sha256": data.fingerprint(paths, args.data),
                "images": "Kermany, Zhang, Goldbaum (2018), Chest X-Ray Images (Pneumonia), doi:10.17632/rscbjbr9sj.2,"
                " CC BY 4.0",
                "masks": "V7 Labs COVID-19 X-ray dataset semantic lung masks, CC BY 4.0, matched to the 224 copies",
            },
        },
        "versions": {"python": platform.python_version(), "tensorflow": tf.__version__, "keras": keras.__version__},
    }


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    args, settings = parse_args(argv)
    args.cli = argv is None
    train(args, settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
