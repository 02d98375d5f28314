"""Training augmentations, one place for all three trainers. ``s`` is a trainer's Settings (rotate_deg, zoom, shift,
aspect, gamma, contrast, brightness, noise; the gate's also p_degrade): the classifier and the U-Net augment batches in
TensorFlow (:func:`image_augment`, :func:`image_mask_augment`), the gate single images in OpenCV (:func:`gate_augment`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import tensorflow as tf


@dataclass
class Augmentation:
    """The augmentation knobs, written once: each trainer's Settings inherits them and changes only its own values."""

    rotate_deg: float = 10.0  # random rotation, degrees either way
    shift: float = 0.08  # fraction of the side
    zoom: tuple[float, float] = (0.9, 1.15)
    aspect: float = 0.08  # independent x/y scale jitter: the originals had varied aspect before squashing
    gamma: tuple[float, float] = (0.7, 1.4)
    contrast: tuple[float, float] = (0.75, 1.3)
    brightness: float = 0.1
    noise: float = 0.03  # max std of additive Gaussian noise on the 0..1 scale
    p_degrade: float = 0.0  # the gate: share of images taken down to 64 px and back up


def random_affine(x, s: Any):
    """Random rotation, zoom, aspect, shift of a batch (B, S, S, C) float; every channel moves together."""
    size = s.image_size
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
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=x,
        transforms=transforms,
        output_shape=[size, size],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="NEAREST",
    )


def random_intensity(x, s: Any):
    """Random gamma, contrast, brightness and noise of a batch (B, S, S, 1) float 0..255 -> same."""
    b = tf.shape(x)[0]
    x = x / 255.0
    gamma = tf.exp(tf.random.uniform([b, 1, 1, 1], np.log(s.gamma[0]), np.log(s.gamma[1])))
    x = tf.pow(tf.clip_by_value(x, 1e-6, 1.0), gamma)
    mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
    contrast = tf.random.uniform([b, 1, 1, 1], s.contrast[0], s.contrast[1])
    x = (x - mean) * contrast + mean + tf.random.uniform([b, 1, 1, 1], -s.brightness, s.brightness)
    x = x + tf.random.normal(tf.shape(x)) * tf.random.uniform([b, 1, 1, 1], 0.0, s.noise)
    return tf.clip_by_value(x, 0.0, 1.0) * 255.0


def image_augment(s: Any):
    """A batched tf augmentation: (B, S, S, C) float 0..255 -> same, random affine on every channel + gamma/contrast/
    noise on channel 0 only (channel 1, when present, is the lung mask: it moves with the image, nothing else)."""

    def augment(x, y):
        moved = random_affine(x, s)  # (B, S, S, C)
        return tf.concat([random_intensity(moved[..., :1], s), moved[..., 1:]], axis=-1), y

    return augment


def image_mask_augment(s: Any):
    """Joint augmentation of (image, mask) batches (B, S, S, 1) each: affine on both, intensity on the image."""

    def augment(x, y):
        both = random_affine(tf.concat([x, y], axis=-1), s)  # (B, S, S, 2)
        return random_intensity(both[..., :1], s), tf.clip_by_value(both[..., 1:], 0.0, 1.0)

    return augment


def gate_augment(img: np.ndarray, rng: np.random.Generator, s: Any, mask: np.ndarray | None = None) -> Any:
    """One random affine + degradation + gamma + noise on uint8 (S, S) -> uint8 (S, S).

    mask: a lung mask float32 (S, S) in [0, 1] that moves with the image (the same affine, nothing else); then
    returns (image, mask).
    """
    n = img.shape[0]
    if rng.random() < s.p_degrade:
        small = cv2.resize(img, (64, 64), interpolation=cv2.INTER_AREA) if n > 64 else img
        img = cv2.resize(small, (n, n), interpolation=cv2.INTER_LINEAR)
    zoom = rng.uniform(*s.zoom)
    m = cv2.getRotationMatrix2D(((n - 1) / 2, (n - 1) / 2), rng.uniform(-s.rotate_deg, s.rotate_deg), zoom)
    m[:, 2] += rng.uniform(-s.shift, s.shift, 2) * n
    img = cv2.warpAffine(img, m, (n, n), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    x = (img.astype(np.float32) / 255.0) ** rng.uniform(*s.gamma)
    if rng.random() < 0.5:
        x = x + rng.normal(0, rng.uniform(0, s.noise), x.shape)
    out = np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if mask is None:
        return out
    moved = cv2.warpAffine(np.asarray(mask, np.float32), m, (n, n), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)  # fmt: skip  # (S, S) in [0, 1]
    return out, moved


def add_devices(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Synthetic devices drawn on uint8 (S, S) -> uint8 (S, S): lines and tubes (thin bright curves, some with a
    radio-opaque stripe) and ECG electrodes (small bright discs or rings, with a wire). At least one device is drawn."""
    n = img.shape[0]
    out = img.copy()
    unit = n / 96.0  # sizes are chosen at the gate's 96 px and scaled
    t = np.linspace(0.0, 1.0, 40)[:, None]  # curve parameter (40, 1)
    n_curves, n_discs = int(rng.integers(0, 4)), int(rng.integers(0, 6))
    if n_curves + n_discs == 0:
        n_curves = 1
    for _ in range(n_curves):  # quadratic Bezier from an edge into the chest
        p0 = np.array([rng.choice([0.0, n - 1.0]), rng.uniform(0, n)]) if rng.random() < 0.5 else rng.uniform(0, n, 2)
        p1, p2 = rng.uniform(0.1 * n, 0.9 * n, 2), rng.uniform(0.2 * n, 0.8 * n, 2)
        pts = ((1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2).astype(np.int32)  # (40, 2) x, y
        value = int(rng.integers(190, 256))
        cv2.polylines(out, [pts], False, value, max(1, round(unit * rng.uniform(0.6, 2.2))), cv2.LINE_AA)
    for _ in range(n_discs):  # electrodes: disc or ring, radius ~2-4 px at 96
        c = tuple(int(v) for v in rng.uniform(0.1 * n, 0.9 * n, 2))
        r = max(1, round(unit * rng.uniform(1.5, 4.0)))
        value = int(rng.integers(200, 256))
        cv2.circle(out, c, r, value, -1 if rng.random() < 0.6 else max(1, round(unit)), cv2.LINE_AA)
        if rng.random() < 0.5:  # its lead wire, out of the image
            end = (int(rng.uniform(0, n)), int(rng.choice([0, n - 1])))
            cv2.line(out, c, end, value, max(1, round(unit * 0.7)), cv2.LINE_AA)
    return out
