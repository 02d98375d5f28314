"""Train the scope gate (pneumo/checks/scope.py): one small CNN with four heads on one encoder: kind of image,
orientation, mirror, and the lung fields (the lung head: the pipeline's lung masks come from the gate's own pass, so
pneumo runs two networks per image, not three).

Examples (DATA: the public data set's folder; SCOPE: the out-of-scope reference folder with its README; MASKS: the
lung-mask folder train/{NORMAL,PNEUMONIA}/<stem>.png):
    # the committed gate (2 CPU cores: about 17 minutes; decoded images are cached in ~/.cache/pneumo)
    python -m pneumo.training.train_scope --data DATA/chest_xray --scope DATA/scope --masks DATA/lung_masks \
        --out models/
    # a few seconds, on any folders with the same layout (used by the tests); without --masks: no lung head
    python -m pneumo.training.train_scope --data /tmp/synth --scope /tmp/synth_scope --out /tmp/gate --preset smoke

In scope: DATA/train/{NORMAL,PNEUMONIA} minus the classifier's validation split (same patient split, same seed), which
stays held out for the thresholds and the figures. Out of scope: SCOPE/<folder>/* (kind from the folder name, ~20 %
of each folder held out by source file) and negatives generated here (photo-like fields, gradients, textures, noise,
text pages, shapes, portraits, real photos from matplotlib's sample data, crops and tilings of radiographs). The lung
head learns from the in-scope films that have a mask, upright or mirrored (the mask moves with the film), with BCE +
soft Dice. Writes OUT/pneumo_scope.keras and OUT/pneumo_scope.json (thresholds, rules, per-kind catch rates and the
lung head's Dice, each with n).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import functools
import gzip
import hashlib
import json
import logging
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import keras
import numpy as np
import tensorflow as tf
from keras import layers
from matplotlib import cbook
from PIL import Image, ImageDraw, ImageFont

from pneumo import config
from pneumo.checks import lungs, scope
from pneumo.checks.lungs import LUNG_OUTPUT
from pneumo.io.decode import load_image
from pneumo.nets.modelfile import Network
from pneumo.training import data
from pneumo.training.augment import Augmentation, add_devices, gate_augment
from pneumo.training.export import export_or_warn
from pneumo.training.metrics import lung_figures
from pneumo.training.networks import (
    BN_MOMENTUM,
    PerImageStandardization,
    dice_loss,
    keras_network,
    layer_rows,
    load_keras_with_metadata,
)
from pneumo.training.robustness import grey_outside
from pneumo.training.settings import add_setting_args, settings_from, trainer_parser

log = logging.getLogger("pneumo.train_scope")
LUNG = LUNG_OUTPUT  # the lung head's output (a gate built with lung_widths)

# Folder of the scope reference set -> kind it teaches (unknown folders are skipped with a warning).
FOLDER_KINDS = {
    "adult_frontal_cxr": "adult",
    "lateral_cxr": "not_frontal",
    "mednist_hand": "not_chest",
    "ct": "not_radiograph",
    "mednist_headct": "not_radiograph",
    "mednist_chestct": "not_radiograph",
    "mednist_abdomenct": "not_radiograph",
    "mednist_breastmri": "not_radiograph",
}


# ----------------------------------------------------------------------------------------------------------------
# settings: every knob in one place; presets override some of them
@dataclass
class Settings(Augmentation):
    image_size: int = 96  # gate input side; the 224 squash area-resized down
    stem_width: int = 16
    widths: tuple[int, ...] = (32, 64, 96, 128)
    dropout: float = 0.3
    batch_size: int = 64
    epochs: int = 11
    learning_rate: float = 2e-3  # cosine-decayed to 0 over all epochs; the last epoch's weights are kept
    val_fraction: float = 0.15  # the classifier's split (pneumo.train): same fraction and seed
    seed: int = 1337
    heldout_mod: int = 5  # 1 in heldout_mod source groups of each scope folder is held out (~20 %)
    # samples per epoch, by kind (drawn with replacement from each kind's sources)
    n_in_scope: int = 2400
    n_adult: int = 1000
    n_not_frontal: int = 400
    n_not_chest: int = 800
    n_not_radiograph: int = 1600
    p_identity: float = 0.4  # share of in-scope samples not turned or inverted (the rest: one of the 7 others)
    p_mirrored: float = 0.5  # share of samples (every kind) mirrored left-right, independently of the turn
    n_mirror: int = 2400  # extra in-scope samples per epoch for the mirror head only (upright, half mirrored)
    mirror_loss_weight: float = 3.0  # the mirror head's loss weight (the other heads' losses push towards invariance)
    lung_widths: tuple[int, ...] = (64, 32, 16, 8)  # the lung decoder, one per level up to S (empty: no lung head)
    p_grey_outside: float = 0.3  # share of the extra (mirror and lung only) samples greyed outside their lungs
    lung_convs: int = 2  # separable 3x3 convs per decoder level (1: Dice 0.938 against 0.943, same epochs x 9/11)
    lung_loss_weight: float = 2.0  # the lung head's loss (BCE + soft Dice) against the other heads'
    orient_width: int = 8  # channels of the orientation and mirror heads' 1x1 reductions (they keep where things are)
    p_devices: float = 0.25  # share of samples (every kind) with synthetic lines, tubes and ECG electrodes drawn on
    n_synthetic: int = 200  # generated training negatives per generator (and n_synthetic // 3 held out)
    max_per_source: int = 0  # 0 = all; the smoke preset uses a few
    # augmentation (all kinds; OpenCV, pneumo.training.augment.gate_augment)
    zoom: tuple[float, float] = (0.9, 1.12)
    shift: float = 0.05
    p_degrade: float = 0.3  # down to 64 px and back up, as the 64x64 MedNIST images are (their README)
    # threshold rules (on the in-scope validation split)
    max_flag_rate: float = 0.01  # at most this share of in-scope validation images out of scope
    max_false_correction: float = 0.002  # orientation threshold: upright images wrongly "corrected"
    max_unclear: float = 0.002  # upright_min: upright images called "orientation unclear"
    max_false_mirror: float = 0.005  # mirror threshold: upright images wrongly flipped (a few films fool the head)
    min_mirror_warned: float = 0.95  # mirror_warn: mirrored images at least warned (the target for mirrored films)
    adult_catch_target: float = 0.98  # reported only: the in-scope cut that would catch this share of held-out adults
    cache_dir: str = str(Path.home() / ".cache" / "pneumo")


PRESETS: dict[str, dict] = {
    "full": {},
    "smoke": dict(
        image_size=32,
        stem_width=4,
        widths=(8, 8),
        lung_widths=(8, 4),
        epochs=1,
        batch_size=16,
        n_in_scope=48,
        n_adult=16,
        n_not_frontal=8,
        n_not_chest=16,
        n_not_radiograph=32,
        n_synthetic=6,
        n_mirror=16,
        max_per_source=12,
        val_fraction=0.3,
        heldout_mod=2,
        cache_dir="",
    ),
}


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, Settings]:
    p = trainer_parser("pneumo-train-scope", __doc__, "pneumo_scope", PRESETS)
    p.add_argument("--scope", required=True, type=Path, help="out-of-scope folder (adult_frontal_cxr/, ct/, ...)")
    p.add_argument(
        "--masks",
        type=Path,
        default=None,
        help="lung-mask folder (train/{NORMAL,PNEUMONIA}/<stem>.png) that teaches the lung head (with lung_widths)",
    )
    p.add_argument(
        "--evaluate-only",
        action="store_true",
        help="no training: re-choose the thresholds of OUT/NAME.keras and re-measure it (the training record is kept)",
    )
    add_setting_args(p, Settings)
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # recorded in the metadata
    settings = settings_from(args, Settings, PRESETS[args.preset])
    if settings.lung_widths and args.masks is None:  # the lung head learns from masks: without them, a gate only
        log.warning("no --masks: the gate is trained without its lung head (the pipeline then needs a lung U-Net)")
        settings = dataclasses.replace(settings, lung_widths=())
    return args, settings


# ---------------------------------------------------------------------------------------------------- the model
def build_gate(s: Settings):
    """Functional Keras CNN: uint8-valued (S, S, 1) -> {"kind": (5,) softmax, "orientation": (8,) softmax,
    "mirror": (1,) handedness score h (linear; P(mirrored) = sigmoid(h(x) - h(flipped x)), see scope._forward)}, and
    with ``s.lung_widths`` also "lung_probability": (S, S, 1) P(lung), a light U-Net decoder on the same encoder (one
    network finds the lungs and judges the scope: pneumo runs two networks per image, not three)."""

    inp = keras.Input((s.image_size, s.image_size, 1), name="image")  # raw 0..255
    x = layers.Rescaling(1 / 255.0, name="rescale")(inp)
    x = std = PerImageStandardization(name="standardize")(x)  # (S, S, 1)
    x = layers.Conv2D(s.stem_width, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(x)  # (S/2)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    skips = []  # each block's output before pooling: (S/2, S/4, ...) for the lung decoder
    for b, w in enumerate(s.widths):
        for i in (1, 2):
            x = layers.SeparableConv2D(w, 3, padding="same", use_bias=False, name=f"block{b}_sep{i}")(x)
            x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"block{b}_bn{i}")(x)
            x = layers.ReLU(name=f"block{b}_relu{i}")(x)
        if b < len(s.widths) - 1:
            skips.append(x)
            x = layers.MaxPooling2D(name=f"block{b}_pool")(x)  # halves the side
    feat = x  # (S / 2**len(widths), same, widths[-1])
    k = layers.GlobalAveragePooling2D(name="kind_pool")(feat)
    k = layers.Dropout(s.dropout, name="kind_dropout")(k)
    kind = layers.Dense(len(scope.KINDS), activation="softmax", name=scope.KIND_OUTPUT)(k)
    heads = {}
    for name, short, n, act in ((scope.ORIENTATION_OUTPUT, "orient", scope.N_TURNS, "softmax"),
                                (scope.MIRROR_OUTPUT, "mirror", 1, None)):  # fmt: skip
        o = layers.Conv2D(s.orient_width, 1, use_bias=False, name=f"{short}_reduce")(feat)  # keeps where things are
        o = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{short}_bn")(o)
        o = layers.ReLU(name=f"{short}_relu")(o)
        o = layers.Flatten(name=f"{short}_flatten")(o)
        o = layers.Dropout(s.dropout, name=f"{short}_dropout")(o)
        heads[name] = layers.Dense(n, activation=act, name=name)(o)
    if s.lung_widths:
        heads[LUNG] = lung_decoder(feat, [std, *skips], s.lung_widths, s.lung_convs)
    return keras.Model(inp, {scope.KIND_OUTPUT: kind, **heads}, name="pneumo_scope")


def lung_decoder(feat, skips: list, widths: tuple[int, ...], convs: int = 1):
    """The lung head: from the encoder's last features, up by 2 per level (bilinear), each time joined with the
    encoder's map of that size (the last: the standardised input) and ``convs`` separable 3x3 conv + BN + ReLU; then
    a 1x1 sigmoid. feat (S/2**L, ., C) -> P(lung) (S, S, 1). ``widths``: one per level, len(skips) of them."""
    if len(widths) != len(skips):
        raise ValueError(f"lung_widths needs {len(skips)} values (one per level), got {len(widths)}")
    x = feat
    for j, (skip, w) in enumerate(zip(reversed(skips), widths, strict=True)):
        x = layers.UpSampling2D(skip.shape[1] // x.shape[1], interpolation="bilinear", name=f"lung_up{j}")(x)
        x = layers.Concatenate(name=f"lung_join{j}")([x, skip])
        for c in range(convs):
            tag = f"{j}" if c == 0 else f"{j}_{c + 1}"
            x = layers.SeparableConv2D(w, 3, padding="same", use_bias=False, name=f"lung_sep{tag}")(x)
            x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"lung_bn{tag}")(x)
            x = layers.ReLU(name=f"lung_relu{tag}")(x)
    return layers.Conv2D(1, 1, activation="sigmoid", dtype="float32", name=LUNG)(x)  # (S, S, 1)


MIRRORED = "mirrored"  # the training wrapper's output: P(mirrored) = sigmoid(h(x) - h(x flipped left-right))


def training_wrapper(gate):
    """The gate run on x and on x flipped left-right (shared weights): kind and orientation of x, and
    P(mirrored) = sigmoid(h(x) - h(flipped x)), so that the mirror head learns to compare a film with its mirror image.
    Used for training only; the gate itself is saved (scope._forward computes the same P at inference)."""
    inp = keras.Input(gate.input_shape[1:], name="image")
    out = gate(inp)
    flipped = layers.Lambda(lambda t: keras.ops.flip(t, axis=2), name="fliplr")(inp)  # (B, S, S, 1)
    diff = layers.Subtract(name="handedness")([out[scope.MIRROR_OUTPUT], gate(flipped)[scope.MIRROR_OUTPUT]])
    p = layers.Reshape((), name=MIRRORED)(layers.Activation("sigmoid")(diff))  # (B,)
    lung = {LUNG: out[LUNG]} if LUNG in out else {}  # of x only
    return keras.Model(inp, {scope.KIND_OUTPUT: out[scope.KIND_OUTPUT],
                             scope.ORIENTATION_OUTPUT: out[scope.ORIENTATION_OUTPUT], MIRRORED: p, **lung})  # fmt: skip


# ---------------------------------------------------------------------------------------------------- data
def to_gate(x224: np.ndarray, size: int) -> np.ndarray:
    """uint8 (N, 224, 224[, 1]) squashes -> (N, size, size) by area resizing (as scope.gate_input does)."""
    return np.stack([cv2.resize(np.squeeze(a), (size, size), interpolation=cv2.INTER_AREA) for a in x224])


def load_in_scope(args: argparse.Namespace, s: Settings) -> tuple[np.ndarray, ...]:
    """In-scope training and validation squashes uint8 (N, 224, 224), validation labels (1 = PNEUMONIA), all paths,
    and the training and validation lung masks bool (N, 224, 224) (all False without --masks or a mask)."""
    paths, labels = data.list_split(args.data / "train")
    if s.max_per_source:
        keep = np.concatenate([np.flatnonzero(labels == c)[: s.max_per_source] for c in (0, 1)])
        paths, labels = [paths[i] for i in keep], labels[keep]
    tr, va = data.patient_split(paths, labels, s.val_fraction, s.seed)
    x = data.load_arrays(paths, config.IMAGE_SIZE, Path(s.cache_dir) if s.cache_dir else None)[..., 0]
    if args.masks is not None:
        m = data.load_masks(paths, args.data, args.masks)  # (N, 224, 224) bool
    else:
        m = np.zeros(x.shape, bool)
    return x[tr], x[va], labels[va], paths, m[tr], m[va]


def _group(path: Path) -> str:
    """Source group of a scope file: the stem without its last numeric part (images of one case stay together)."""
    stem = path.stem
    head, sep, tail = stem.rpartition("_" if "_" in stem else "-")
    return head if sep and tail.isdigit() else stem


def load_scope(args: argparse.Namespace, s: Settings) -> tuple[dict, dict, list[Path]]:
    """Scope folder -> ({folder: train (N, S, S)}, {folder: held-out (M, S, S)}, all paths)."""
    train, held, every = {}, {}, []
    for folder in sorted(p for p in args.scope.iterdir() if p.is_dir()):
        if folder.name not in FOLDER_KINDS:
            log.warning("skipping unknown scope folder %s", folder.name)
            continue
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in config.IMAGE_SUFFIXES)
        files = files[: s.max_per_source] if s.max_per_source else files
        every += files

        def make(files=files) -> np.ndarray:
            return np.stack([scope.gate_input(load_image(p).pixels, s.image_size)[..., 0] for p in files])

        arr = data.cached_array(s.cache_dir, f"scope_{folder.name}_{s.image_size}", files, make)  # (N, S, S)
        is_held = np.array([int(hashlib.sha256(_group(p).encode()).hexdigest()[:8], 16) % s.heldout_mod == 0
                            for p in files])  # fmt: skip
        train[folder.name], held[folder.name] = arr[~is_held], arr[is_held]
        log.info("%s: %d train, %d held out", folder.name, (~is_held).sum(), is_held.sum())
    return train, held, every


def make_synthetic(x224: np.ndarray, n: int, seed: int, held_out: bool, size: int) -> dict[str, np.ndarray]:
    """Generated negatives per generator, uint8 (n, size, size); ``x224`` feeds the crop and tile generators."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, gen in GENERATORS.items():
        imgs = [gen(rng, x224, held_out) for _ in range(n)]  # each (224, 224) uint8
        out[name] = to_gate(np.stack(imgs), size)
    return out


# ---------------------------------------------------------------------------------------------------- negatives
# Generated out-of-scope images: each generator(rng, x224, held_out) -> uint8 (224, 224). x224: in-scope squashes
# (N, 224, 224) for crops and tilings (training images for training, validation images for the held-out set).
_N = config.IMAGE_SIZE
_WORDS = (
    "the patient was seen on monday and the report states that there are no further findings of note in "
    "this study which was compared with prior imaging from another site please call with questions"
).split()


def _smooth(rng: np.random.Generator, cells: int) -> np.ndarray:
    """A smooth random field float (224, 224) in 0..1, from a (cells, cells) grid upsampled bicubically."""
    f = cv2.resize(rng.random((cells, cells)).astype(np.float32), (_N, _N), interpolation=cv2.INTER_CUBIC)
    return (f - f.min()) / (np.ptp(f) + 1e-6)


def _u8(x: np.ndarray) -> np.ndarray:
    return np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8)


def gen_photo_field(rng, x224, held_out) -> np.ndarray:
    """A photo-like scene: smooth colour fields (3 channels, random luma weights) turned gray, with some noise."""
    rgb = np.stack([_smooth(rng, int(rng.integers(3, 12))) for _ in range(3)], -1)  # (224, 224, 3)
    w = rng.dirichlet(np.ones(3))
    return _u8(rgb @ w + rng.normal(0, 0.02, (_N, _N)))


def gen_gradient(rng, x224, held_out) -> np.ndarray:
    """A linear or radial gradient."""
    yy, xx = np.mgrid[0:_N, 0:_N] / _N
    if rng.random() < 0.5:
        a = rng.uniform(0, 2 * np.pi)
        g = np.cos(a) * xx + np.sin(a) * yy
    else:
        g = np.hypot(xx - rng.random(), yy - rng.random())
    g = (g - g.min()) / (np.ptp(g) + 1e-6)
    return _u8(g ** rng.uniform(0.5, 2) + rng.normal(0, 0.01, g.shape))


def gen_texture(rng, x224, held_out) -> np.ndarray:
    """Gratings, checkerboards or a mix: periodic textures."""
    yy, xx = np.mgrid[0:_N, 0:_N].astype(np.float32)
    t = np.zeros((_N, _N), np.float32)
    for _ in range(int(rng.integers(1, 4))):
        a, f = rng.uniform(0, np.pi), rng.uniform(0.05, 0.6)
        t += np.sin(f * (np.cos(a) * xx + np.sin(a) * yy) + rng.uniform(0, 6))
    if rng.random() < 0.3:
        c = int(rng.integers(6, 40))
        t = ((xx // c + yy // c) % 2) * 2 - 1.0
    return _u8((t - t.min()) / (np.ptp(t) + 1e-6))


def gen_noise(rng, x224, held_out) -> np.ndarray:
    """Gaussian, uniform or salt-and-pepper noise, at a random grain."""
    grain = int(rng.choice([1, 2, 4, 8]))
    kind = rng.integers(3)
    small = rng.normal(0.5, 0.2, (_N // grain,) * 2) if kind == 0 else rng.random((_N // grain,) * 2)
    if kind == 2:
        small = (small > 0.5).astype(float)
    return _u8(cv2.resize(small.astype(np.float32), (_N, _N), interpolation=cv2.INTER_NEAREST))


def gen_text(rng, x224, held_out) -> np.ndarray:
    """A page of text: dark words on a light page (PIL ImageDraw, default font at a random size)."""
    size = int(rng.integers(8, 22))
    page = Image.new("L", (_N, _N), int(rng.integers(200, 256)))
    draw = ImageDraw.Draw(page)
    font = ImageFont.load_default(size=size)
    y = int(rng.integers(0, 15))
    while y < _N:
        line = " ".join(rng.choice(_WORDS, 12))
        draw.text((int(rng.integers(0, 20)), y), line, fill=int(rng.integers(0, 80)), font=font)
        y += int(size * rng.uniform(1.2, 2.0))
    return np.asarray(page)


def gen_shapes(rng, x224, held_out) -> np.ndarray:
    """Random filled rectangles, ellipses and polygons on a flat or graded background."""
    img = np.full((_N, _N), rng.uniform(0, 1), np.float32)
    for _ in range(int(rng.integers(2, 12))):
        v, c = float(rng.random()), rng.integers(0, _N, 2)
        r = rng.integers(8, 90, 2)
        pick = rng.integers(3)
        if pick == 0:
            cv2.rectangle(img, tuple(int(a) for a in c), tuple(int(a) for a in c + r), v, -1)
        elif pick == 1:
            cv2.ellipse(img, (int(c[0]), int(c[1])), (int(r[0]), int(r[1])), float(rng.uniform(0, 180)), 0, 360, v, -1)
        else:
            cv2.fillPoly(img, [rng.integers(0, _N, (int(rng.integers(3, 7)), 2)).astype(np.int32)], v)
    return _u8(img)


def gen_portrait(rng, x224, held_out) -> np.ndarray:
    """A portrait-like blob: a head and shoulders on a smooth background, blurred."""
    img = _smooth(rng, 3) * rng.uniform(0.2, 1.0)
    v = float(rng.uniform(0.2, 1.0))
    cx, cy = int(_N / 2 + rng.integers(-25, 25)), int(_N * rng.uniform(0.3, 0.45))
    cv2.ellipse(img, (cx, cy), (int(rng.integers(30, 50)), int(rng.integers(40, 65))), 0, 0, 360, v, -1)
    cv2.ellipse(img, (cx, _N + 20), (int(rng.integers(80, 120)), int(rng.integers(60, 100))), 0, 180, 360, v, -1)
    for dx in (-15, 15):  # eyes
        cv2.circle(img, (cx + dx, cy - 5), 4, v * 0.3, -1)
    return _u8(cv2.GaussianBlur(img, (0, 0), rng.uniform(1, 4)))


@functools.lru_cache(maxsize=2)
def _sample_photos(held_out: bool) -> list[np.ndarray]:
    """Real photographs and pictures shipped with matplotlib, gray float 0..1; grace_hopper.jpg is held out."""

    if held_out:
        names = ["grace_hopper.jpg"]
    else:
        names = ["Minduka_Present_Blue_Pack.png", "logo2.png"]
    out = [np.asarray(Image.open(cbook.get_sample_data(n)).convert("L"), np.float32) / 255 for n in names]
    if not held_out:
        for npz, key in (("topobathy.npz", "topo"), ("jacksboro_fault_dem.npz", "elevation")):
            z = np.asarray(cbook.get_sample_data(npz)[key], np.float32)
            out.append((z - z.min()) / (np.ptp(z) + 1e-6))
        with gzip.open(cbook.get_sample_data("s1045.ima.gz", asfileobj=False)) as f:  # an MR slice of a head
            mr = np.frombuffer(f.read(), np.uint16).reshape(256, 256).astype(np.float32)
        out.append(mr / mr.max())
    return out


def gen_photo(rng, x224, held_out) -> np.ndarray:
    """A random crop (40-100 % of the side) of a real photograph, squashed to 224."""
    photos = _sample_photos(held_out)
    p = photos[rng.integers(len(photos))]
    h, w = p.shape
    ch, cw = int(h * rng.uniform(0.4, 1)), int(w * rng.uniform(0.4, 1))
    y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    return _u8(cv2.resize(p[y : y + ch, x : x + cw], (_N, _N), interpolation=cv2.INTER_AREA))


def gen_crop(rng, x224, held_out) -> np.ndarray:
    """A zoomed part of a radiograph (20-50 % of the side): a radiograph, but not of a whole chest."""
    img = x224[rng.integers(len(x224))]
    c = int(_N * rng.uniform(0.2, 0.5))
    y, x = rng.integers(0, _N - c, 2)
    return cv2.resize(img[y : y + c, x : x + c], (_N, _N), interpolation=cv2.INTER_LINEAR)


def gen_tiles(rng, x224, held_out) -> np.ndarray:
    """2x2 or 3x3 tiles of radiographs (some mirrored): a contact sheet, not one chest."""
    k = int(rng.integers(2, 4))
    s = _N // k
    tiles = []
    for _ in range(k * k):
        t = cv2.resize(x224[rng.integers(len(x224))], (s, s), interpolation=cv2.INTER_AREA)
        tiles.append(t[:, ::-1] if rng.random() < 0.5 else t)
    grid = np.vstack([np.hstack(tiles[r * k : (r + 1) * k]) for r in range(k)])
    return cv2.resize(grid, (_N, _N), interpolation=cv2.INTER_NEAREST)


GENERATORS: dict[str, Callable[..., np.ndarray]] = {
    "photo_field": gen_photo_field, "gradient": gen_gradient, "texture": gen_texture, "noise": gen_noise,
    "text": gen_text, "shapes": gen_shapes, "portrait": gen_portrait, "photo": gen_photo, "crop": gen_crop,
    "tiles": gen_tiles,
}  # fmt: skip
# Kind each generator teaches (the rest: not_radiograph).
GENERATOR_KINDS = {"crop": "not_chest"}


def _counts(s: Settings) -> dict[str, int]:
    """Samples per epoch by kind."""
    n = (s.n_in_scope, s.n_adult, s.n_not_frontal, s.n_not_chest, s.n_not_radiograph)
    return dict(zip(scope.KINDS, n, strict=True))


def epoch_arrays(pools: dict[str, list[np.ndarray]], s: Settings, rng: np.random.Generator, masks: dict | None = None):
    """One epoch: x uint8 (N, S, S, 1), kind labels (N,), transform labels (N,) (index into scope.ORIENTATIONS: turn
    + 4 inverted + 8 mirrored), loss weights {output name: (N,)} and lung masks float32 (N, S, S, 1).

    masks: {kind: [float32 (n, S, S) in [0, 1] or None, aligned with pools[kind]]}: an image's lung mask moves with
    it (augmentation, mirror, turn); the lung head learns from in-scope samples with a mask that are neither turned
    nor inverted (at inference it reads the upright film).

    Each sample: augmented, devices drawn on with p_devices (every kind alike, so devices tell no kind), mirrored
    with p_mirrored, then turned/inverted (in scope: left as is with p_identity). The orientation head learns the turn
    (transform % 8) of in-scope samples; the mirror head whether in-scope samples that are not turned or inverted are
    mirrored (at inference it sees the image once turned upright), from those and from n_mirror extra in-scope samples
    that teach nothing else.
    """
    counts = _counts(s)
    xs, kinds, orients, extra = [], [], [], []
    size = next(p for ps in pools.values() for p in ps if len(p)).shape[1]
    ys = []  # (S, S) float32 lung masks, zeros where none
    mask_sources = {id(p): (masks or {}).get(kind, [None] * len(ps))[j]
                    for kind, ps in pools.items() for j, p in enumerate(ps)}  # fmt: skip
    for k, kind in enumerate(scope.KINDS):
        sources = [p for p in pools[kind] if len(p)]
        n = counts[kind] + (s.n_mirror if kind == "in_scope" else 0)
        for j in range(n if sources else 0):
            src = sources[rng.integers(len(sources))]  # sources equally often, then an image within
            ii = int(rng.integers(len(src)))
            msrc = mask_sources[id(src)]
            if msrc is not None and msrc[ii].any():
                img, lung = gate_augment(src[ii], rng, s, msrc[ii])
                if j >= counts[kind] and rng.random() < s.p_grey_outside:
                    img = grey_outside_lungs(img, lung, rng)  # the lung head must find lungs from the lungs
            else:
                img, lung = gate_augment(src[ii], rng, s), None
            if rng.random() < s.p_devices:
                img = add_devices(img, rng)
            if j >= counts[kind]:  # an extra mirror-head sample: upright frame
                o = 0
            elif kind == "in_scope":
                o = 0 if rng.random() < s.p_identity else int(rng.integers(1, scope.N_TURNS))
            else:
                o = int(rng.integers(scope.N_TURNS))  # the kind head must not depend on orientation
            o += scope.N_TURNS * int(rng.random() < s.p_mirrored)
            xs.append(scope.apply_orientation(img, o))
            turn = o - 4 * ((o // 4) % 2)  # the geometry only: a mask is not inverted
            ys.append(np.zeros((size, size), np.float32) if lung is None else scope.apply_orientation(lung, turn))
            kinds.append(k)
            orients.append(o)
            extra.append(j >= counts[kind])
    kinds_a, orients_a, extra_a = np.array(kinds), np.array(orients), np.array(extra, bool)
    order = rng.permutation(len(xs))
    inside = kinds_a == 0
    weights = {
        scope.KIND_OUTPUT: (~extra_a).astype(np.float32),
        scope.ORIENTATION_OUTPUT: (inside & ~extra_a).astype(np.float32),  # in-scope images only
        MIRRORED: (inside & (orients_a % scope.N_TURNS == 0)).astype(np.float32),  # neither turned nor inverted
    }
    y_lung = np.stack(ys)[..., None]  # (N, S, S, 1)
    if masks:
        has = y_lung.reshape(len(ys), -1).max(axis=1) > 0
        weights[LUNG] = (inside & has & (orients_a % scope.N_TURNS == 0)).astype(np.float32)
    return (np.stack(xs)[order, :, :, None], kinds_a[order], orients_a[order],
            {k: w[order] for k, w in weights.items()}, y_lung[order])  # fmt: skip


def grey_outside_lungs(img: np.ndarray, lung: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """uint8 (S, S) with everything outside its lung mask float (S, S), grown by 0-5 % of the side, set to one grey
    between the mean inside the lungs and the whole image's mean: what is left to find the lungs by is the lungs."""
    n = img.shape[0]
    inside = lung > 0.5
    if not inside.any():
        return img
    px = int(rng.integers(0, max(1, round(0.05 * n)) + 1))
    if px:
        disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * px + 1, 2 * px + 1))
        inside = cv2.dilate(inside.astype(np.uint8), disc) > 0
    grey = rng.uniform(*sorted((float(img[inside].mean()), float(img.mean()))))
    out = img.copy()
    out[~inside] = np.uint8(round(grey))
    return out


# ---------------------------------------------------------------------------------------------------- thresholds
def choose_thresholds(model, x_val: np.ndarray, s: Settings) -> dict[str, float]:
    """Orientation, upright_min and in-scope thresholds from the upright in-scope validation images (N, S, S, 1)."""
    gate = keras_network(model, {"input_size": s.image_size, "thresholds": {}})
    kind, orient, pm, _, _ = scope._forward(gate, x_val)
    n = len(x_val)
    best = orient.argmax(1)
    grid = np.round(np.arange(0.5, 1.0, 0.01), 2)
    wrong = [((best != 0) & (orient.max(1) >= t)).mean() for t in grid]
    t_orient = float(next((t for t, r in zip(grid, wrong, strict=True) if r <= s.max_false_correction), 0.999))
    ugrid = np.round(np.arange(0.5, -0.001, -0.01), 2)
    unclear = [((orient[:, 0] < u) & ~((best != 0) & (orient.max(1) >= t_orient))).mean() for u in ugrid]
    upright_min = float(next((u for u, r in zip(ugrid, unclear, strict=True) if r <= s.max_unclear), 0.0))
    t = {"orientation": t_orient, "upright_min": upright_min, "in_scope": 0.0}
    if pm is not None:  # flip: at most max_false_mirror of upright images; below it a warning band, no refusal band
        t_mirror = float(next((m for m in grid if (pm >= m).mean() <= s.max_false_mirror), 0.999))
        pm_mirrored = scope._forward(gate, np.ascontiguousarray(x_val[:, :, ::-1]))[2]  # (N,) the mirror images
        wgrid = np.round(np.arange(0.5, 0.0, -0.01), 2)  # never above 0.5: from there a film looks more mirrored
        t_warn = float(next((m for m in wgrid if (pm_mirrored >= m).mean() >= s.min_mirror_warned), 0.01))
        t.update(mirror=t_mirror, mirror_unclear=t_mirror, mirror_warn=min(t_warn, t_mirror))
    gate.metadata["thresholds"] = t
    d = scope.decide(gate, x_val)
    allowed = int(np.floor(s.max_flag_rate * n)) - int(d.unclear.sum())
    cand = float(np.sort(d.kind[:, 0])[max(allowed, 0)])  # flags p < cand: at most `allowed` images
    while cand > 1e-6:  # corrections refused at this cut can add flags: lower it until within budget
        gate.metadata["thresholds"] = dict(t, in_scope=cand)
        d = scope.decide(gate, x_val)
        if (~d.in_scope | d.unclear).sum() <= s.max_flag_rate * n:
            break
        cand *= 0.9
    return dict(t, in_scope=cand)


# ---------------------------------------------------------------------------------------------------- evaluation
def _rate(mask: np.ndarray) -> float:
    return round(float(mask.mean()), 4) if mask.size else float("nan")


def caught(gate: Network, x: np.ndarray) -> dict:
    """Catch rate of out-of-scope images uint8 (N, S, S): share not in scope, and the codes given."""
    d = scope.decide(gate, x[..., None])
    flagged = ~d.in_scope | d.unclear
    codes: dict[str, int] = {}
    for i in np.flatnonzero(flagged):
        for c in scope._gate_codes(d, i):
            codes[c] = codes.get(c, 0) + 1
    return {"n": len(x), "caught": _rate(flagged), "codes": codes}


def orientation_report(gate: Network, x_val: np.ndarray) -> dict:
    """Per transform of the in-scope validation images uint8 (N, S, S): corrected exactly / flagged / missed."""
    out = {}
    for o in range(len(scope.ORIENTATIONS)):
        xt = np.stack([scope.apply_orientation(a, o) for a in x_val])[..., None]  # (N, S, S, 1)
        d = scope.decide(gate, xt)
        flagged = ~d.in_scope | d.unclear
        exact = ~flagged & (d.applied == o)
        out[scope.ORIENTATIONS[o]] = {
            "n": len(x_val),
            "corrected_upright": _rate(exact if o else ~flagged & (d.applied == 0)),
            "flagged": _rate(flagged),
            "corrected_wrong": _rate(~flagged & (d.applied != o) & (d.applied != 0)),
            "missed" if o else "wrongly_corrected": _rate(~flagged & (d.applied == 0 if o else d.applied != 0)),
            "flagged_or_corrected_upright": _rate(flagged | exact),
        }
    return out


def evaluate(model, thresholds: dict, s: Settings, val: tuple, held: dict, syn_held: dict) -> dict:
    """Every figure stored in the metadata, each with the data it was measured on and n.

    val: in-scope validation images uint8 (N, S, S) and labels (N,), 1 = PNEUMONIA.
    """
    x_val, y_val = val
    gate = keras_network(model, {"input_size": s.image_size, "thresholds": thresholds})
    d = scope.decide(gate, x_val[..., None])
    deg = np.stack([cv2.resize(cv2.resize(a, (64, 64), interpolation=cv2.INTER_AREA), a.shape[::-1],
                               interpolation=cv2.INTER_LINEAR) for a in x_val])  # fmt: skip
    d64 = scope.decide(gate, deg[..., None])
    return {
        "in_scope_validation": {
            "data": "in-scope validation split carved from train by patient (the classifier's split), upright",
            "n": len(x_val),
            "flagged_out_of_scope": _rate(~d.in_scope | d.unclear),
            "wrongly_corrected": _rate(d.applied != 0),
            "flagged_by_class": {
                c: {"n": int((y_val == i).sum()), "flagged": _rate((~d.in_scope | d.unclear)[y_val == i])}
                for i, c in enumerate(config.CLASS_NAMES)
            },  # fmt: skip
        },
        "in_scope_validation_augmented": _augmented_report(gate, x_val, s),
        "in_scope_validation_devices": devices_report(gate, x_val, y_val, s.seed + 3),
        "in_scope_validation_degraded_64px": {
            "data": "the same images down to 64 px and back up (as MedNIST)",
            "n": len(x_val),
            "flagged_out_of_scope": _rate(~d64.in_scope | d64.unclear),
        },
        "orientation_validation": orientation_report(gate, x_val),
        "mirror_validation": mirror_report(gate, x_val, y_val),
        "scope_held_out": {k: {"kind": FOLDER_KINDS[k], **caught(gate, v)} for k, v in held.items() if len(v)},
        "synthetic_held_out": {k: caught(gate, v) for k, v in syn_held.items()},
        "scope_held_out_turned": {k: caught(gate, _turned(v, i)) for i, (k, v) in enumerate(held.items()) if len(v)},
        "in_scope_cut_tradeoff": adult_tradeoff(
            gate, x_val, y_val, held.get("adult_frontal_cxr", np.zeros((0, 1, 1), np.uint8)), s.adult_catch_target
        ),
    }


def lung_report(model, s: Settings, x_va224: np.ndarray, m_va224: np.ndarray, y_va: np.ndarray) -> dict:
    """The lung head's Dice and IoU at 224 px (post-processed) on the validation images with a reference mask."""
    net = keras_network(model, {"input_size": s.image_size, "thresholds": {}})
    has = m_va224.reshape(len(m_va224), -1).any(axis=1)
    data_text = (f"validation split carved from train by patient ({int(has.sum())} images with a mask), Dice/IoU at "
                 "224 px after post-processing")  # fmt: skip
    by_class = {c: lung_figures(net, x_va224[has & (y_va == i)], m_va224[has & (y_va == i)])
                for i, c in enumerate(config.CLASS_NAMES)}  # fmt: skip
    x, m = x_va224[has], m_va224[has]
    own, _ = lungs.segment(net, x)  # (N, 224, 224) the head's masks of the films as they are
    greyed, _ = lungs.segment(net, grey_outside(x, m))  # and with everything outside the grown reference lungs grey
    stable = np.array([lungs.dice(a, b) for a, b in zip(own, greyed, strict=True)])
    return {"lungs_validation": {**lung_figures(net, x, m), "data": data_text},
            "lungs_validation_by_class": by_class,
            "lungs_greyed_outside": {
                "data": "the same films with everything outside the reference lung mask grown by 8 px set to the "
                "image mean (the classifier's outside-the-lungs test): Dice of the head's mask against its own mask "
                "of the film as it is",
                "n": int(len(x)), "dice_mean": round(float(stable.mean()), 4),
                "dice_p05": round(float(np.percentile(stable, 5)), 4) if len(x) else None}}  # fmt: skip


def mirror_report(gate: Network, x_val: np.ndarray, y_val: np.ndarray) -> dict:
    """What the gate does with the upright validation images uint8 (N, S, S) and with their mirror images."""
    if not scope.has_mirror_head(gate):
        return {}
    out: dict = {"data": "the in-scope validation images upright, and the same images mirrored left-right"}
    for name, x in (("upright", x_val), ("mirrored", np.ascontiguousarray(x_val[:, :, ::-1]))):
        d = scope.decide(gate, x[..., None])
        refused = ~d.in_scope | d.unclear
        flipped = ~refused & (d.applied >= scope.N_TURNS)  # a mirror undone (alone or with a turn)
        warned = d.mirror_warned if d.mirror_warned is not None else np.zeros(len(x), bool)
        row = {
            "n": len(x),
            "flipped": _rate(flipped),
            "flipped_back_exactly": _rate(~refused & (d.applied == scope.N_TURNS)),
            "warned_possibly_mirrored": _rate(warned),
            "flipped_or_warned": _rate(flipped | warned),
            "refused": _rate(refused),
            "p_mirrored_at_least_0.5": _rate(d.mirrored >= 0.5),
            "by_class": {
                c: {
                    "n": int((y_val == i).sum()),
                    "flipped": _rate(flipped[y_val == i]),
                    "warned_possibly_mirrored": _rate(warned[y_val == i]),
                    "refused": _rate(refused[y_val == i]),
                }
                for i, c in enumerate(config.CLASS_NAMES)
            },  # fmt: skip
        }
        out[name] = row
    return out


def adult_tradeoff(gate: Network, x_val: np.ndarray, y_val: np.ndarray, adults: np.ndarray, target: float) -> dict:
    """The highest P(in scope) cut that keeps the stored one's in-scope validation refusals, and the cut that would
    catch ``target`` of the held-out adult films uint8 (N, S, S), with the validation refusals it would cost."""
    if not len(adults):
        return {}
    thresholds = dict(gate.metadata["thresholds"])

    def at(cut: float) -> dict:
        gate.metadata["thresholds"] = dict(thresholds, in_scope=cut)
        d, da = scope.decide(gate, x_val[..., None]), scope.decide(gate, adults[..., None])
        refused = ~d.in_scope | d.unclear
        return {
            "in_scope_cut": round(cut, 4),
            "adults_caught": _rate(~da.in_scope | da.unclear),
            "validation_refused": _rate(refused),
            "validation_refused_by_class": {c: _rate(refused[y_val == i]) for i, c in enumerate(config.CLASS_NAMES)},
        }

    p_adult = scope.decide(gate, adults[..., None]).kind[:, 0]  # (M,) P(in scope) of the adults
    need = int(np.ceil(target * len(adults)))  # adults to catch; caught when P(in scope) < cut
    cut = float(np.sort(p_adult)[need - 1]) + 1e-6
    out = {"data": f"the {len(adults)} held-out adult films and the in-scope validation images",
           "target_adults_caught": target, "stored": at(thresholds["in_scope"]), "for_target": at(cut)}  # fmt: skip
    gate.metadata["thresholds"] = thresholds
    return out


def _augmented_report(gate: Network, x_val: np.ndarray, s: Settings) -> dict:
    """Flag rate on the validation images uint8 (N, S, S) after one mild training augmentation (no 64 px)."""
    rng = np.random.default_rng(s.seed + 2)
    mild = dataclasses.replace(s, p_degrade=0.0)
    d = scope.decide(gate, np.stack([gate_augment(a, rng, mild) for a in x_val])[..., None])
    return {
        "data": f"the validation images, each rotated <= {s.rotate_deg:g} deg, zoomed, shifted, gamma, noise (once)",
        "n": len(x_val),
        "flagged_out_of_scope": _rate(~d.in_scope | d.unclear),
        "wrongly_corrected": _rate(d.applied != 0),
    }


def devices_report(gate: Network, x_val: np.ndarray, y_val: np.ndarray, seed: int) -> dict:
    """Flag rate on the validation images uint8 (N, S, S) with synthetic devices drawn on each (fixed seed)."""
    rng = np.random.default_rng(seed)
    d = scope.decide(gate, np.stack([add_devices(a, rng) for a in x_val])[..., None])
    flagged = ~d.in_scope | d.unclear
    return {
        "data": "the validation images, each with synthetic lines/tubes (bright curves) and ECG electrodes (discs)",
        "n": len(x_val),
        "flagged_out_of_scope": _rate(flagged),
        "flagged_by_class": {
            c: {"n": int((y_val == i).sum()), "flagged": _rate(flagged[y_val == i])}
            for i, c in enumerate(config.CLASS_NAMES)
        },
        "codes": {c: int(sum(c in scope._gate_codes(d, i) for i in np.flatnonzero(flagged))) for c in scope.KINDS[1:]},
    }


def _turned(x: np.ndarray, seed: int) -> np.ndarray:
    """Each uint8 (N, S, S) image with a random non-identity orientation transform (fixed seed)."""
    rng = np.random.default_rng(seed)
    return np.stack([scope.apply_orientation(a, int(rng.integers(1, len(scope.ORIENTATIONS)))) for a in x])


# ---------------------------------------------------------------------------------------------------- training
def fit(model, pools: dict, s: Settings, rng: np.random.Generator, masks: dict | None = None) -> list[dict]:
    """Train for s.epochs freshly augmented epochs with a cosine learning-rate decay; returns per-epoch losses.
    masks: the lung masks of the pools (:func:`epoch_arrays`), for a gate with a lung head."""
    per_epoch = sum(n for kind, n in _counts(s).items() if any(len(p) for p in pools[kind])) + s.n_mirror
    steps = s.epochs * int(np.ceil(per_epoch / s.batch_size))
    lr = keras.optimizers.schedules.CosineDecay(s.learning_rate, max(steps, 1))
    wrapper = training_wrapper(model)
    lung = LUNG in wrapper.output
    loss = {scope.KIND_OUTPUT: "sparse_categorical_crossentropy",
            scope.ORIENTATION_OUTPUT: "sparse_categorical_crossentropy", MIRRORED: "binary_crossentropy"}  # fmt: skip
    weights = {scope.KIND_OUTPUT: 1.0, scope.ORIENTATION_OUTPUT: 1.0, MIRRORED: s.mirror_loss_weight}
    metrics = {scope.KIND_OUTPUT: "accuracy", scope.ORIENTATION_OUTPUT: "accuracy", MIRRORED: "accuracy"}
    if lung:
        loss[LUNG], weights[LUNG] = dice_loss, s.lung_loss_weight
    wrapper.compile(optimizer=keras.optimizers.Adam(lr), loss=loss, loss_weights=weights, metrics=metrics)
    history = []
    for epoch in range(s.epochs):
        t0 = time.time()
        x, yk, yt, w, y_lung = epoch_arrays(pools, s, rng, masks if lung else None)
        y = {
            scope.KIND_OUTPUT: yk,
            scope.ORIENTATION_OUTPUT: yt % scope.N_TURNS,
            MIRRORED: (yt >= scope.N_TURNS).astype(np.float32),
        }
        if lung:
            y[LUNG] = y_lung
        h = wrapper.fit(x.astype(np.float32), y, sample_weight=w, batch_size=s.batch_size, epochs=1, verbose=0,
                        shuffle=False)  # fmt: skip
        row = {k: round(float(v[-1]), 4) for k, v in h.history.items()}
        history.append({"epoch": epoch + 1, **row, "seconds": round(time.time() - t0, 1)})
        log.info("epoch %d/%d %s", epoch + 1, s.epochs, history[-1])
    return history


def build_pools(
    x_tr224: np.ndarray, train: dict, syn_train: dict, s: Settings, m_tr224: np.ndarray | None = None
) -> tuple[dict[str, list[np.ndarray]], dict[str, list[np.ndarray | None]]]:
    """Training sources per kind, each a uint8 (N, S, S) array drawn equally often within its kind, and their lung
    masks float32 (N, S, S) (the in-scope images' from m_tr224 bool (N, 224, 224); None for the others)."""
    pools: dict[str, list[np.ndarray]] = {k: [] for k in scope.KINDS}
    masks: dict[str, list[np.ndarray | None]] = {k: [] for k in scope.KINDS}
    pools["in_scope"].append(to_gate(x_tr224, s.image_size))
    masks["in_scope"].append(None if m_tr224 is None else to_gate_mask(m_tr224, s.image_size))
    for folder, arr in train.items():
        pools[FOLDER_KINDS[folder]].append(arr)
        masks[FOLDER_KINDS[folder]].append(None)
    for name, arr in syn_train.items():
        kind = GENERATOR_KINDS.get(name, "not_radiograph")
        pools[kind].append(arr)
        masks[kind].append(None)
    return pools, masks


def to_gate_mask(m224: np.ndarray, size: int) -> np.ndarray:
    """bool (N, 224, 224) masks -> float32 (N, size, size) lung shares by area resizing (soft edges)."""
    return np.stack([cv2.resize(m.astype(np.float32), (size, size), interpolation=cv2.INTER_AREA) for m in m224])


def train(args: argparse.Namespace, s: Settings) -> dict:
    """Load, train (or reload with --evaluate-only), choose thresholds, evaluate, save; returns the metadata."""

    t_start = time.time()
    keras.utils.set_random_seed(s.seed)
    rng = np.random.default_rng(s.seed)
    x_tr224, x_va224, y_va, in_paths, m_tr224, m_va224 = load_in_scope(args, s)
    train_sc, held_sc, scope_paths = load_scope(args, s)
    syn_train = make_synthetic(x_tr224, s.n_synthetic, s.seed, False, s.image_size)
    syn_held = make_synthetic(x_va224, max(s.n_synthetic // 3, 2), s.seed + 1, True, s.image_size)
    path = args.out / f"{args.name}.keras"
    if args.evaluate_only:
        model, old = load_keras_with_metadata(path)[0], json.loads(path.with_suffix(".json").read_text())
        history, seconds = old["history"], old["training"]["seconds"]
    else:
        model = build_gate(s)
        log.info("gate: %d parameters", model.count_params())
        pools, masks = build_pools(x_tr224, train_sc, syn_train, s, m_tr224 if s.lung_widths else None)
        history = fit(model, pools, s, rng, masks)
        seconds = time.time() - t_start
    x_val = to_gate(x_va224, s.image_size)  # (N, S, S)
    thresholds = choose_thresholds(model, x_val[..., None], s)
    metrics = evaluate(model, thresholds, s, (x_val, y_va), held_sc, syn_held)
    if LUNG in model.output:
        metrics.update(lung_report(model, s, x_va224, m_va224, y_va))
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.evaluate_only:
        model.save(path)
    meta = metadata(model, s, args, thresholds, metrics, history, seconds)
    if args.evaluate_only:
        meta["training"] = {**old["training"], "evaluated_by": meta["training"]["command"]}
    meta["training"]["data"] = {
        "in_scope_fingerprint_sha256": data.fingerprint(in_paths, args.data),
        "scope_fingerprint_sha256": data.fingerprint(scope_paths, args.scope) if scope_paths else "",
        "n_in_scope_train": len(x_tr224),
        "n_in_scope_validation": len(x_va224),
        "n_scope_train": {k: len(v) for k, v in train_sc.items()},
        "n_scope_held_out": {k: len(v) for k, v in held_sc.items()},
        "n_synthetic_train_per_generator": s.n_synthetic,
    }
    path.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")
    meta["tflite"] = export_or_warn(path)  # the TFLite copy the app and the CLI run
    log.info("wrote %s (%.0f s)", path, time.time() - t_start)
    return meta


def metadata(model, s: Settings, args, thresholds: dict, metrics: dict, history: list, seconds: float) -> dict:
    """The gate's JSON metadata: inputs, classes, layers, thresholds with their rules, metrics, provenance."""

    return {
        "name": args.name,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "input_size": s.image_size,
        "input": "uint8 grayscale (S, S, 1): pneumo.preprocess 224 squash, area-resized to S (scope.gate_input)",
        "kinds": list(scope.KINDS),
        "orientations": list(scope.ORIENTATIONS),
        "outputs": {
            scope.KIND_OUTPUT: "softmax over kinds",
            scope.ORIENTATION_OUTPUT: "softmax over the first 8 orientations (turns x inverted)",
            scope.MIRROR_OUTPUT: "handedness score h: P(mirrored) = sigmoid(h(x) - h(x flipped left-right))",
            **(
                {
                    LUNG: "P(lung) per pixel (S, S, 1) of the upright film; resized to 224, thresholded at "
                    "lung_threshold, two largest components kept, holes filled (pneumo.checks.lungs)"
                }
                if LUNG in model.output
                else {}
            ),
        },
        **(
            {
                "lung_threshold": 0.5,
                "post_processing": "P(lung) resized to 224 px, threshold lung_threshold (0.5), the two largest "
                "8-connected components (each >= 10% of the largest), holes filled",
                "task": "scope gate and lung-field segmentation (V7 Labs masks: lung fields "
                "including the retrocardiac region) from one encoder",
            }
            if LUNG in model.output
            else {}
        ),
        "parameters": int(model.count_params()),
        "layers": layer_rows(model),
        "thresholds": thresholds,
        "threshold_rules": {
            "orientation": f"the smallest of 0.50, 0.51, ... at which at most {s.max_false_correction:.1%} of upright "
            "in-scope validation images would be 'corrected'",
            "upright_min": f"the largest of 0.50, 0.49, ... at which at most {s.max_unclear:.1%} of upright "
            "in-scope validation images are 'orientation unclear'",
            "mirror": f"the smallest of 0.50, 0.51, ... at which at most {s.max_false_mirror:.1%} of upright "
            "in-scope validation images would be flipped (P(mirrored) >= it)",
            "mirror_unclear": "equal to the mirror threshold: no refusal band for mirrors (below the flip threshold a "
            "film is analysed as it is, warned from mirror_warn)",
            "mirror_warn": f"the largest of 0.50, 0.49, ... at which at least {s.min_mirror_warned:.0%} of the "
            "mirrored in-scope validation images have P(mirrored) >= it: from it up to the mirror threshold the "
            "film is analysed as it is with the 'possibly_mirrored' warning",
            "in_scope": f"the largest P(in scope) cut at which at most {s.max_flag_rate:.0%} of in-scope "
            "validation images (after orientation correction) are out of scope",
        },
        "metrics": metrics,
        "history": history,
        "training": {
            "command": "python -m pneumo.training.train_scope " + " ".join(args.argv),
            "preset": args.preset,
            "settings": dataclasses.asdict(s),
            "seconds": round(seconds, 1),
        },
        "versions": {
            "python": platform.python_version(),
            "keras": keras.__version__,
            "tensorflow": tf.__version__,
            "numpy": np.__version__,
            "opencv": cv2.__version__,
        },  # fmt: skip
    }


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args, s = parse_args(argv)
    train(args, s)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
