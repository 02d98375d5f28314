"""Train the pneumo CNN on the public "Chest X-Ray Images (Pneumonia)" folder layout.

Examples (DATA/chest_xray: the public data set's folder; the README's training section shows the command used):
    # the committed model (2 CPU cores: about an hour; decoded images are cached in ~/.cache/pneumo)
    python -m pneumo.training.train --data DATA/chest_xray --out models/
    # a few seconds, on any folder with the same layout (used by the tests)
    python -m pneumo.training.train --data /tmp/synthetic --out /tmp/model --preset smoke

Layout: DATA/train/{NORMAL,PNEUMONIA}/*.jpeg, optional DATA/val/... (the tiny official val, reported only) and
DATA/test/... (evaluated once at the end, recorded, never used for any choice). The threshold is chosen on a validation
split carved from train by patient id, stratified by class. Writes OUT/pneumo_cnn.keras, OUT/pneumo_cnn.json
(metadata) and OUT/pneumo_cnn_training.png (ROC and training curves).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import hashlib
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
from sklearn.metrics import roc_curve

from pneumo import config
from pneumo.checks import lungs
from pneumo.nets.modelfile import metadata_path
from pneumo.pipeline import load_models
from pneumo.training import data, metrics
from pneumo.training import robustness as rb
from pneumo.training.augment import Augmentation, image_augment
from pneumo.training.export import export_or_warn
from pneumo.training.gradcam import explain_batch
from pneumo.training.networks import (
    build_model,
    ensemble_model,
    layer_rows,
    load_keras_network,
    load_keras_with_metadata,
)
from pneumo.training.settings import add_setting_args, settings_from, trainer_parser

log = logging.getLogger("pneumo.train")


# ----------------------------------------------------------------------------------------------------------------
# settings: every knob in one place; presets override some of them
@dataclass
class Settings(Augmentation):
    image_size: int = 160  # the classifier input: the dilated lung box of the 224 copy, squashed to this side
    input_mode: str = "lungs"  # "lungs": only the lung fields reach the model; "full": the whole 224 squash
    lung_model: str = "models/pneumo_scope.keras"  # what finds the lungs (input_mode "lungs"): the gate's lung head
    cam_stride: int = 16  # the explained feature map is image_size / cam_stride (10x10 at 160)
    stem_width: int = 32
    widths: tuple[int, ...] = (64, 128, 192, 256)
    dropout: float = 0.3
    weight_decay: float = 1e-4  # L2 on pointwise convolutions
    margin_jitter: float = 0.0  # share of training images seen with the visible margin around the lungs cut to a
    # random 0..LUNG_MARGIN_PX px and greyed with the image mean (as when the U-Net's mask is off at the edge)
    lung_pooling: bool = True  # average the last features over the lung mask only (input_mode "lungs"): a 2nd channel
    batch_size: int = 32
    epochs: int = 12  # a fixed count with a cosine learning-rate decay, unless early_stopping
    early_stopping: bool = False  # True: stop on validation AUC (patience) and keep the best epoch; then validation
    # patients choose the epoch AND the threshold. False: they choose only the threshold.
    patience: int = 5  # early_stopping only: epochs without a validation-AUC improvement before stopping
    learning_rate: float = 1e-3
    min_sensitivity: float = 0.95  # threshold rule: the highest threshold keeping validation sensitivity >= this
    val_fraction: float = 0.15  # share of each class's training images (whole patients) held out for validation
    seed: int = 1337
    max_per_class: int = 0  # 0 = all images; the smoke preset uses a few
    # augmentation: pneumo.training.augment.Augmentation's defaults, applied on the fly, training only
    cache_dir: str = ".cache"  # decoded 224 copies, relative to the working directory (git-ignored)
    robustness_masks: str = ""  # reference lung masks: when given, pneumo.robustness runs at the end of training
    members: int = 1  # > 1: an ensemble of that many networks (other initialisations), logits averaged in one model


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
        lung_model="",  # the smoke test passes a tiny random U-Net with --lung-model
    ),
}


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, Settings]:
    p = trainer_parser("pneumo-train", __doc__, "pneumo_cnn", PRESETS)
    p.add_argument(
        "--threshold-only",
        action="store_true",
        help="no training: re-choose the threshold of the existing OUT/NAME.keras on the same validation split "
        "with the current rule, and rewrite its metadata and plot (the training record is kept)",
    )
    add_setting_args(p, Settings)
    args = p.parse_args(argv)
    settings = settings_from(args, Settings, PRESETS[args.preset])
    return args, settings


INPUT_WORDS = {
    "lungs": "grayscale 0..255: the 224x224 squash (area interpolation), outside the lung mask grown by "
    "LUNG_MARGIN_PX set to the mean inside it, the grown mask's bounding box squashed to input_size",
    "lungs+mask": "channel 0, grayscale 0..255: the 224x224 squash (area interpolation), outside the lung mask grown "
    "by LUNG_MARGIN_PX set to the mean inside it, the grown mask's bounding box squashed to input_size; channel 1: the "
    "lung mask itself (not grown) in the same box, 0..255 (pneumo.checks.lungs.mask_input); the last features are "
    "averaged over the lung cells only",
    "full": "grayscale pixel values 0..255, squashed to input_size x input_size with area interpolation",
}


def effective_mode(s: Settings) -> str:
    """'lungs' when a lung model is given and asked for, else 'full'."""
    return "lungs" if (s.input_mode == "lungs" and s.lung_model) else "full"


def pooled(s: Settings) -> bool:
    """Whether the classifier averages its last features over the lung mask only (its input then has 2 channels)."""
    return effective_mode(s) == "lungs" and s.lung_pooling


def lung_model_facts(s: Settings) -> dict | None:
    """Name and sha256 of the lung model the classifier was trained behind (it must be the same at inference)."""
    if effective_mode(s) != "lungs":
        return None
    path = Path(s.lung_model)
    return {"file": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def lung_masks(x224: np.ndarray, s: Settings) -> np.ndarray:
    """The U-Net's lung masks of 224 squashes: uint8 (N, 224, 224) -> bool (N, 224, 224), in chunks of 256."""
    seg = load_keras_network(s.lung_model, "lung model")
    out = np.empty(x224.shape, bool)
    for i in range(0, len(x224), 256):
        out[i : i + 256], _ = lungs.segment(seg, x224[i : i + 256])
        log.info("lung masks: %d/%d", min(i + 256, len(x224)), len(x224))
    return out


def model_inputs(
    x224: np.ndarray, s: Settings, masks: np.ndarray | None = None, jitter_seed: int | None = None
) -> np.ndarray:
    """The classifier's inputs from 224 squashes: uint8 (N, 224, 224) -> uint8 (N, S, S, C).

    input_mode "lungs": the U-Net's mask (``masks`` when already made, else :func:`lung_masks`), then the dilated
    lung box greyed outside the lungs (pneumo.checks.lungs), plus the mask in the same box as channel 1 when the
    classifier pools over the lungs (C = 2); "full": the whole squash resized to S.
    jitter_seed: each image's visible margin cut to a random 0..LUNG_MARGIN_PX px, greyed with the image mean
    (training only, see Settings.margin_jitter).
    """

    if effective_mode(s) == "full":
        return np.stack([cv2.resize(x, (s.image_size,) * 2, interpolation=cv2.INTER_AREA) for x in x224])[..., None]
    masks = lung_masks(x224, s) if masks is None else masks
    out = np.empty((len(x224), s.image_size, s.image_size, 2 if pooled(s) else 1), np.uint8)
    rng = np.random.default_rng(jitter_seed) if jitter_seed is not None else None
    for i, (im, m) in enumerate(zip(x224, masks, strict=True)):
        margin = (int(rng.integers(0, config.LUNG_MARGIN_PX + 1)), round(float(im.mean()))) if rng else None
        view = lungs.lung_input(im, m, s.image_size, margin, with_mask=pooled(s))  # (S, S[, 2])
        out[i] = view if view.ndim == 3 else view[..., None]
    return out


def cam_scale(model, x_va: np.ndarray, y_va: np.ndarray) -> dict[str, float]:
    """The heatmaps' absolute scale, one per class: the median over validation images of that class of the
    largest CAM value for the class (logit units). The app divides by it, so a typical case of a class reaches
    full colour and an image with little evidence for a class stays pale."""
    _, cams = explain_batch(model, x_va, config.GRADCAM_LAYER)  # (N, h, w) signed
    peak_pos = cams.reshape(len(cams), -1).max(axis=1)
    peak_neg = (-cams).reshape(len(cams), -1).max(axis=1)
    out = {}
    for k, name in enumerate(config.CLASS_NAMES):
        peaks = (peak_pos if k == 1 else peak_neg)[y_va == k]
        out[name] = round(float(np.median(peaks)), 5) if len(peaks) and np.median(peaks) > 0 else 1.0
    return out


def robustness(model_file: Path, data_root: Path, masks: Path) -> dict:
    """The robustness measurements of pneumo.robustness for the model just written (validation split only)."""
    models = load_models(model_file, with_gate=False, loader=load_keras_network)  # not exported yet
    x224, y, ref = rb.validation_set(data_root, masks, models.classifier.metadata)
    result = rb.measure(models, x224, y, ref)
    result["data"] = f"validation split carved from train by patient, {len(y)} images with a reference lung mask"
    return result


def fit_member(s: Settings, x_tr, y_tr, x_va, y_va, class_weight: dict, x_alt=None) -> tuple:
    """Train one network (augmentation, class weights, early stopping on validation AUC, best weights kept).

    x_alt: the same training images with a cut margin (Settings.margin_jitter): each draw takes it with that chance.
    Returns a fresh, uncompiled copy with the best weights (no optimizer state) and its history.
    """

    if x_alt is None:
        ds = tf.data.Dataset.from_tensor_slices((x_tr.astype("float32"), y_tr.astype("float32")))
    else:
        p_alt = s.margin_jitter

        def pick(x, alt, y):
            return tf.where(tf.random.uniform([]) < p_alt, alt, x), y

        ds = tf.data.Dataset.from_tensor_slices((x_tr, x_alt, y_tr.astype("float32"))).map(
            lambda x, alt, y: pick(tf.cast(x, tf.float32), tf.cast(alt, tf.float32), y)
        )
    ds = (
        ds.shuffle(len(y_tr), seed=s.seed, reshuffle_each_iteration=True)
        .batch(s.batch_size)
        .map(image_augment(s), num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )
    model = build_model(s.image_size, s.stem_width, s.widths, s.dropout, s.weight_decay, s.cam_stride, pooled(s))
    steps = s.epochs * int(np.ceil(len(y_tr) / s.batch_size))
    rate = s.learning_rate if s.early_stopping else keras.optimizers.schedules.CosineDecay(s.learning_rate, steps)
    model.compile(
        optimizer=keras.optimizers.Adam(rate),
        loss="binary_crossentropy",
        metrics=[keras.metrics.AUC(name="auc")],
    )
    log.info("model: %d parameters", model.count_params())
    callbacks = (
        [
            keras.callbacks.EarlyStopping(
                monitor="val_auc", mode="max", patience=s.patience, restore_best_weights=True
            ),
            keras.callbacks.ReduceLROnPlateau(monitor="val_auc", mode="max", factor=0.5, patience=3, min_lr=1e-5),
        ]
        if s.early_stopping
        else []  # the last epoch is kept: validation only watches
    )
    hist = model.fit(
        ds,
        validation_data=(x_va.astype("float32"), y_va.astype("float32")),
        epochs=s.epochs,
        class_weight=class_weight,
        callbacks=callbacks,
        verbose=2,
    )
    final = build_model(s.image_size, s.stem_width, s.widths, s.dropout, s.weight_decay, s.cam_stride, pooled(s))
    final.set_weights(model.get_weights())
    return final, {k: [round(float(v), 5) for v in vals] for k, vals in hist.history.items()}


def predict_probs(model, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """P(pneumonia) for uint8 (N, S, S, 1) -> float (N,)."""
    return model.predict(x.astype("float32"), batch_size=batch_size, verbose=0).reshape(-1)


def plot_training(histories: list[dict], roc_sets: dict, path: Path) -> None:
    """Save a PNG with ROC curves (left) and the training curves of every member (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    for name, (y, p) in roc_sets.items():
        if len(np.unique(y)) == 2:
            fpr, tpr, _ = roc_curve(y, p)
            axes[0].plot(fpr, tpr, label=name)
    axes[0].plot([0, 1], [0, 1], "k:", lw=0.8)
    axes[0].set(xlabel="1 - specificity", ylabel="sensitivity", title="ROC")
    axes[0].legend(loc="lower right")
    for i, history in enumerate(histories, start=1):
        ep = np.arange(1, len(history["loss"]) + 1)
        who = f"member {i}, " if len(histories) > 1 else ""
        for ax, key, what in ((axes[1], "loss", "loss"), (axes[2], "auc", "AUC")):
            (line,) = ax.plot(ep, history[key], ":", label=f"{who}train {what}")
            ax.plot(ep, history[f"val_{key}"], "-", color=line.get_color(), label=f"{who}validation {what}")
    early = " (each run stops once validation AUC stops improving)" if len(histories) > 1 else ""
    axes[1].set(xlabel="epoch", title="Loss" + early)
    axes[2].set(xlabel="epoch", title="AUC")
    for ax in axes[1:]:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def train(args: argparse.Namespace, s: Settings) -> dict:
    """Run the whole training and write the model, metadata and plot; returns the metadata."""

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
    x224 = data.load_arrays(paths, 224, cache)[..., 0]  # (N, 224, 224) uint8
    masks = lung_masks(x224, s) if effective_mode(s) == "lungs" else None  # (N, 224, 224): the U-Net runs once
    x_all = model_inputs(x224, s, masks)  # (N, S, S, C) uint8
    tr, va = data.patient_split(paths, labels, s.val_fraction, s.seed)
    x_tr, y_tr, x_va, y_va = x_all[tr], labels[tr], x_all[va], labels[va]
    x_alt = None
    if s.margin_jitter > 0 and effective_mode(s) == "lungs" and not args.threshold_only:
        x_alt = model_inputs(x224[tr], s, masks[tr], jitter_seed=s.seed)  # (N_tr, S, S, C): margins cut at random
    n_pat = len({data.patient_id(paths[i].name) for i in va})
    log.info("patient split: train %d images, validation %d images (%d patients)", len(tr), len(va), n_pat)

    model_file = args.out / f"{args.name}.keras"
    if args.threshold_only:
        previous = json.loads(metadata_path(model_file).read_text())["training"]
        final, _ = load_keras_with_metadata(model_file)
        history, class_weight = previous["history"], previous["class_weight"]
        best_epoch, seconds = previous["best_epoch"], previous["seconds"]
        command = previous["command"]
        histories = previous.get("member_histories") or [history]
    else:
        # class weights: each class contributes equally to the loss (train is 1:2.9 NORMAL:PNEUMONIA)
        counts = np.bincount(y_tr, minlength=2)
        class_weight = {c: float(len(y_tr) / (2.0 * max(counts[c], 1))) for c in (0, 1)}

        members, histories = [], []
        for m in range(s.members):
            keras.utils.set_random_seed(s.seed + 1000 * m)  # another initialisation and augmentation, same split
            member, hist = fit_member(s, x_tr, y_tr, x_va, y_va, class_weight, x_alt)
            log.info("member %d/%d: best validation AUC %.4f", m + 1, s.members, max(hist["val_auc"]))
            members.append(member)
            histories.append(hist)
        history = histories[0]
        best_epoch = int(np.argmax(history["val_auc"])) + 1 if s.early_stopping else len(history["loss"])
        final = members[0] if s.members == 1 else ensemble_model(members)
        seconds = round(time.time() - t0, 1)
        command = "python -m pneumo.training.train " + " ".join(sys.argv[1:]) if args.cli else "pneumo.train.train()"

    p_va = predict_probs(final, x_va)
    threshold = metrics.choose_threshold(y_va, p_va, s.min_sensitivity)
    evaluation = {"validation": metrics.metrics_at(y_va, p_va, threshold)}
    roc_sets = {"validation (patient split)": (y_va, p_va)}
    for split in ("val", "test"):
        if (root / split).is_dir():
            sp, sl = data.list_split(root / split)
            if len(sp):
                p = predict_probs(final, model_inputs(data.load_arrays(sp, 224, None)[..., 0], s))
                key = "official_val" if split == "val" else "test"
                evaluation[key] = metrics.metrics_at(sl, p, threshold)
                roc_sets[key] = (sl, p)
                log.info("%s: %s", key, json.dumps({k: v for k, v in evaluation[key].items() if k != "confusion"}))

    args.out.mkdir(parents=True, exist_ok=True)
    if not args.threshold_only:
        final.save(model_file)
    plot_file = args.out / f"{args.name}_training.png"
    plot_training(histories, roc_sets, plot_file)
    meta = {
        "name": args.name,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "input_size": s.image_size,
        "channels": 2 if pooled(s) else config.CHANNELS,
        "input_mode": effective_mode(s),
        "input": INPUT_WORDS["lungs+mask" if pooled(s) else effective_mode(s)],
        "pooling": "lung mask (masked average pooling)" if pooled(s) else "global average",
        "lung_model": lung_model_facts(s),
        "class_names": list(config.CLASS_NAMES),
        "output": "sigmoid P(PNEUMONIA)",
        "gradcam_layer": config.GRADCAM_LAYER,
        "threshold": threshold,
        "threshold_rule": metrics.THRESHOLD_RULE.format(min_sensitivity=s.min_sensitivity),
        "parameters": int(final.count_params()),
        "layers": layer_rows(final),
        "metrics": evaluation,
        "validation_split": {
            "rule": f"{s.val_fraction:.0%} of each class's training images, whole patients, seed {s.seed}",
            "patients": n_pat,
            "images": int(len(va)),
            "chose": "the epoch (early stopping) and the threshold"
            if s.early_stopping
            else "the threshold only: a fixed number of epochs, the last one kept",
        },
        "operating_points": metrics.operating_points(y_va, p_va),
        "cam_scale": cam_scale(final, x_va, y_va),
        "roc": {"validation": metrics.roc_points(y_va, p_va)},
        "training": {
            "command": command,
            "threshold_command": (
                "python -m pneumo.training.train " + " ".join(sys.argv[1:]) if args.cli else "pneumo.train.train()"
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
            "members": len(histories),
            "member_histories": histories if len(histories) > 1 else None,
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
    if s.robustness_masks:
        meta["robustness"] = robustness(model_file, root, Path(s.robustness_masks))
        metadata_path(model_file).write_text(json.dumps(meta, indent=1) + "\n")
    meta["tflite"] = export_or_warn(model_file)  # the TFLite copy the app and the CLI run
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
