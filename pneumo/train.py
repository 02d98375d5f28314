"""Train the pneumo CNN on the public "Chest X-Ray Images (Pneumonia)" folder layout.

Examples (DATA/chest_xray: the public data set's folder; the README's training section shows the command used):
    # the committed model (2 CPU cores: about an hour; decoded images are cached in ~/.cache/pneumo)
    python -m pneumo.train --data DATA/chest_xray --out models/
    # a few seconds, on any folder with the same layout (used by the tests)
    python -m pneumo.train --data /tmp/synthetic --out /tmp/model --preset smoke

Layout: DATA/train/{NORMAL,PNEUMONIA}/*.jpeg, optional DATA/val/... (the tiny official val, reported only) and
DATA/test/... (evaluated once at the end, recorded, never used for any choice). Model selection uses a validation
split carved from train by patient id, stratified by class. Writes OUT/pneumo_cnn.keras, OUT/pneumo_cnn.json
(metadata) and OUT/pneumo_cnn_training.png (ROC and training curves).
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

import numpy as np

log = logging.getLogger("pneumo.train")


# ----------------------------------------------------------------------------------------------------------------
# settings: every knob in one place; presets override some of them
@dataclass
class Settings:
    image_size: int = 224  # the data set copies are 224x224
    stem_width: int = 32
    widths: tuple[int, ...] = (64, 128, 192, 256)
    dropout: float = 0.3
    weight_decay: float = 1e-4  # L2 on pointwise convolutions
    batch_size: int = 32
    epochs: int = 24  # upper bound; early stopping on validation AUC usually ends sooner
    patience: int = 6  # epochs without a validation-AUC improvement before stopping
    learning_rate: float = 1e-3
    min_sensitivity: float = 0.95  # threshold rule: the highest threshold keeping validation sensitivity >= this
    val_fraction: float = 0.15  # share of each class's training images (whole patients) held out for validation
    seed: int = 1337
    max_per_class: int = 0  # 0 = all images; the smoke preset uses a few
    # augmentation suited to radiographs (applied on the fly, training only)
    rotate_deg: float = 10.0
    shift: float = 0.08  # fraction of the side
    zoom: tuple[float, float] = (0.9, 1.15)
    aspect: float = 0.08  # independent x/y scale jitter: the originals had varied aspect before squashing
    gamma: tuple[float, float] = (0.7, 1.4)
    contrast: tuple[float, float] = (0.75, 1.3)
    brightness: float = 0.1
    noise: float = 0.03  # max std of additive Gaussian noise on the 0..1 scale
    cache_dir: str = str(Path.home() / ".cache" / "pneumo")


PRESETS: dict[str, dict] = {
    "full": {},
    "smoke": dict(
        image_size=32,
        stem_width=4,
        widths=(8, 8, 8, 8),
        epochs=1,
        batch_size=8,
        max_per_class=12,
        patience=1,
        val_fraction=0.3,
        cache_dir="",
    ),
}


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, Settings]:
    p = argparse.ArgumentParser(prog="python -m pneumo.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, type=Path, help="folder with train/{NORMAL,PNEUMONIA} (and val/, test/)")
    p.add_argument("--out", default=Path("models"), type=Path, help="output folder (default: models/)")
    p.add_argument("--name", default="pneumo_cnn", help="file stem of the model and its metadata")
    p.add_argument("--preset", default="full", choices=sorted(PRESETS))
    p.add_argument(
        "--threshold-only",
        action="store_true",
        help="no training: re-choose the threshold of the existing OUT/NAME.keras on the same validation split "
        "with the current rule, and rewrite its metadata and plot (the training record is kept)",
    )
    for f in dataclasses.fields(Settings):
        if f.type in ("int", "float", "str"):
            p.add_argument(f"--{f.name.replace('_', '-')}", type=eval(f.type), default=None)
    args = p.parse_args(argv)
    settings = Settings(**PRESETS[args.preset])
    for f in dataclasses.fields(Settings):
        v = getattr(args, f.name, None)
        if v is not None:
            setattr(settings, f.name, v)
    return args, settings


# ----------------------------------------------------------------------------------------------------------------
def make_augment(s: Settings):
    """A batched tf augmentation: (B, S, S, 1) float 0..255 -> same, random affine + gamma/contrast/noise."""
    import tensorflow as tf

    size = s.image_size

    def augment(x, y):
        b = tf.shape(x)[0]
        theta = tf.random.uniform([b], -s.rotate_deg, s.rotate_deg) * (np.pi / 180.0)
        zoom = tf.random.uniform([b], s.zoom[0], s.zoom[1])
        sx = zoom * tf.random.uniform([b], 1.0 - s.aspect, 1.0 + s.aspect)
        sy = zoom * tf.random.uniform([b], 1.0 - s.aspect, 1.0 + s.aspect)
        tx = tf.random.uniform([b], -s.shift, s.shift) * size
        ty = tf.random.uniform([b], -s.shift, s.shift) * size
        c = (size - 1) / 2.0
        cos, sin = tf.cos(theta), tf.sin(theta)
        a0, a1 = cos / sx, -sin / sx
        b0, b1 = sin / sy, cos / sy
        a2 = c - a0 * c - a1 * c + tx
        b2 = c - b0 * c - b1 * c + ty
        zeros = tf.zeros([b])
        transforms = tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)  # (B, 8): output -> input coords
        x = tf.raw_ops.ImageProjectiveTransformV3(
            images=x,
            transforms=transforms,
            output_shape=[size, size],
            fill_value=0.0,
            interpolation="BILINEAR",
            fill_mode="NEAREST",
        )
        x = x / 255.0
        gamma = tf.exp(tf.random.uniform([b, 1, 1, 1], np.log(s.gamma[0]), np.log(s.gamma[1])))
        x = tf.pow(tf.clip_by_value(x, 1e-6, 1.0), gamma)
        mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
        contrast = tf.random.uniform([b, 1, 1, 1], s.contrast[0], s.contrast[1])
        x = (x - mean) * contrast + mean + tf.random.uniform([b, 1, 1, 1], -s.brightness, s.brightness)
        x = x + tf.random.normal(tf.shape(x)) * tf.random.uniform([b, 1, 1, 1], 0.0, s.noise)
        return tf.clip_by_value(x, 0.0, 1.0) * 255.0, y

    return augment


def predict_probs(model, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """P(pneumonia) for uint8 (N, S, S, 1) -> float (N,)."""
    return model.predict(x.astype("float32"), batch_size=batch_size, verbose=0).reshape(-1)


def plot_training(history: dict, roc_sets: dict, path: Path) -> None:
    """Save a PNG with ROC curves (left) and the training curves (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    for name, (y, p) in roc_sets.items():
        if len(np.unique(y)) == 2:
            fpr, tpr, _ = roc_curve(y, p)
            axes[0].plot(fpr, tpr, label=name)
    axes[0].plot([0, 1], [0, 1], "k:", lw=0.8)
    axes[0].set(xlabel="1 - specificity", ylabel="sensitivity", title="ROC")
    axes[0].legend(loc="lower right")
    ep = np.arange(1, len(history["loss"]) + 1)
    axes[1].plot(ep, history["loss"], label="train loss")
    axes[1].plot(ep, history["val_loss"], label="validation loss")
    axes[1].set(xlabel="epoch", title="Loss")
    axes[1].legend()
    axes[2].plot(ep, history["auc"], label="train AUC")
    axes[2].plot(ep, history["val_auc"], label="validation AUC")
    axes[2].set(xlabel="epoch", title="AUC")
    axes[2].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def train(args: argparse.Namespace, s: Settings) -> dict:
    """Run the whole training and write the model, metadata and plot; returns the metadata."""
    import keras
    import tensorflow as tf

    from pneumo import config, data, metrics
    from pneumo.model import build_model, metadata_path

    t0 = time.time()
    keras.utils.set_random_seed(s.seed)
    root = args.data
    paths, labels = data.list_split(root / "train")
    if len(paths) == 0:
        raise SystemExit(f"no images under {root / 'train'}/{{NORMAL,PNEUMONIA}}")
    if s.max_per_class:
        keep = np.concatenate([np.flatnonzero(labels == c)[: s.max_per_class] for c in (0, 1)])
        paths, labels = [paths[i] for i in keep], labels[keep]
    log.info("train folder: %d images (%d NORMAL, %d PNEUMONIA)", len(paths), (labels == 0).sum(), labels.sum())
    fp = data.fingerprint(paths, root)
    cache = Path(s.cache_dir) if s.cache_dir else None
    x_all = data.load_arrays(paths, s.image_size, cache)  # (N, S, S, 1) uint8
    tr, va = data.patient_split(paths, labels, s.val_fraction, s.seed)
    x_tr, y_tr, x_va, y_va = x_all[tr], labels[tr], x_all[va], labels[va]
    n_pat = len({data.patient_id(paths[i].name) for i in va})
    log.info("patient split: train %d images, validation %d images (%d patients)", len(tr), len(va), n_pat)

    model_file = args.out / f"{args.name}.keras"
    if args.threshold_only:
        from pneumo.model import load_model

        previous = json.loads(metadata_path(model_file).read_text())["training"]
        final = load_model(model_file).model
        history, class_weight = previous["history"], previous["class_weight"]
        best_epoch, seconds = previous["best_epoch"], previous["seconds"]
        command = previous["command"]
    else:
        # class weights: each class contributes equally to the loss (train is 1:2.9 NORMAL:PNEUMONIA)
        counts = np.bincount(y_tr, minlength=2)
        class_weight = {c: float(len(y_tr) / (2.0 * max(counts[c], 1))) for c in (0, 1)}

        ds = (
            tf.data.Dataset.from_tensor_slices((x_tr.astype("float32"), y_tr.astype("float32")))
            .shuffle(len(y_tr), seed=s.seed, reshuffle_each_iteration=True)
            .batch(s.batch_size)
            .map(make_augment(s), num_parallel_calls=tf.data.AUTOTUNE)
            .prefetch(tf.data.AUTOTUNE)
        )
        model = build_model(s.image_size, s.stem_width, s.widths, s.dropout, s.weight_decay)
        model.compile(
            optimizer=keras.optimizers.Adam(s.learning_rate),
            loss="binary_crossentropy",
            metrics=[keras.metrics.AUC(name="auc")],
        )
        log.info("model: %d parameters", model.count_params())
        callbacks = [
            keras.callbacks.EarlyStopping(
                monitor="val_auc", mode="max", patience=s.patience, restore_best_weights=True
            ),
            keras.callbacks.ReduceLROnPlateau(monitor="val_auc", mode="max", factor=0.5, patience=3, min_lr=1e-5),
        ]
        hist = model.fit(
            ds,
            validation_data=(x_va.astype("float32"), y_va.astype("float32")),
            epochs=s.epochs,
            class_weight=class_weight,
            callbacks=callbacks,
            verbose=2,
        )
        history = {k: [round(float(v), 5) for v in vals] for k, vals in hist.history.items()}
        best_epoch = int(np.argmax(history["val_auc"])) + 1

        # a fresh, uncompiled copy: no optimizer state in the file, nothing stateful from training
        final = build_model(s.image_size, s.stem_width, s.widths, s.dropout, s.weight_decay)
        final.set_weights(model.get_weights())
        seconds = round(time.time() - t0, 1)
        command = "python -m pneumo.train " + " ".join(sys.argv[1:]) if args.cli else "pneumo.train.train()"

    p_va = predict_probs(final, x_va)
    threshold = metrics.choose_threshold(y_va, p_va, s.min_sensitivity)
    evaluation = {"validation": metrics.metrics_at(y_va, p_va, threshold)}
    roc_sets = {"validation (patient split)": (y_va, p_va)}
    for split in ("val", "test"):
        if (root / split).is_dir():
            sp, sl = data.list_split(root / split)
            if len(sp):
                p = predict_probs(final, data.load_arrays(sp, s.image_size, None))
                key = "official_val" if split == "val" else "test"
                evaluation[key] = metrics.metrics_at(sl, p, threshold)
                roc_sets[key] = (sl, p)
                log.info("%s: %s", key, json.dumps({k: v for k, v in evaluation[key].items() if k != "confusion"}))

    args.out.mkdir(parents=True, exist_ok=True)
    if not args.threshold_only:
        final.save(model_file)
    plot_file = args.out / f"{args.name}_training.png"
    plot_training(history, roc_sets, plot_file)
    meta = {
        "name": args.name,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "input_size": s.image_size,
        "channels": config.CHANNELS,
        "input": "grayscale pixel values 0..255, squashed to input_size x input_size with area interpolation",
        "class_names": list(config.CLASS_NAMES),
        "output": "sigmoid P(PNEUMONIA)",
        "gradcam_layer": config.GRADCAM_LAYER,
        "threshold": threshold,
        "threshold_rule": metrics.THRESHOLD_RULE.format(min_sensitivity=s.min_sensitivity),
        "parameters": int(final.count_params()),
        "metrics": evaluation,
        "validation_split": {
            "rule": f"{s.val_fraction:.0%} of each class's training images, whole patients, seed {s.seed}",
            "patients": n_pat,
            "images": int(len(va)),
        },
        "operating_points": metrics.operating_points(y_va, p_va),
        "roc": {"validation": metrics.roc_points(y_va, p_va)},
        "training": {
            "command": command,
            "threshold_command": (
                "python -m pneumo.train " + " ".join(sys.argv[1:]) if args.cli else "pneumo.train.train()"
            )
            if args.threshold_only
            else command,
            "preset": args.preset,
            "settings": dataclasses.asdict(s),
            "class_weight": class_weight,
            "epochs_run": len(history["loss"]),
            "best_epoch": best_epoch,
            "seconds": seconds,
            "history": history,
            "data": {
                "fingerprint_sha256": fp,
                "train_images": int(len(paths)),
                "train_normal": int((labels == 0).sum()),
                "train_pneumonia": int(labels.sum()),
                "dataset": "Kermany, Zhang, Goldbaum (2018), Chest X-Ray Images (Pneumonia), "
                "doi:10.17632/rscbjbr9sj.2, CC BY 4.0",
            },
            "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
        },
        "versions": {
            "python": platform.python_version(),
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "numpy": np.__version__,
        },
        "files": {"model": model_file.name, "plot": plot_file.name},
    }
    metadata_path(model_file).write_text(json.dumps(meta, indent=1) + "\n")
    v = evaluation["validation"]
    log.info(
        "done in %.0f s: validation AUC %.4f, accuracy %.4f, sensitivity %.4f, specificity %.4f at threshold %.2f",
        time.time() - t0,
        v["auc"],
        v["accuracy"],
        v["sensitivity"],
        v["specificity"],
        threshold,
    )
    log.info("wrote %s, %s, %s", model_file, metadata_path(model_file), plot_file)
    return meta


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    args, settings = parse_args(argv)
    args.cli = argv is None
    train(args, settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
