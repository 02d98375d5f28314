"""Grad-CAM for the one-unit sigmoid model: heatmaps for either class and a colour overlay.

PNEUMONIA is explained with the gradient of +logit and NORMAL with -logit. Both come from one forward/backward pass:
the channel weights of -logit are the negated weights of +logit, so the two heatmaps are ReLU(+cam) and ReLU(-cam).
The loaded model is never modified: a second functional model shares its layers and outputs the feature map.
Neither function touches files or Streamlit.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import cv2
import keras
import numpy as np
import tensorflow as tf

from pneumo import config

EPS = 1e-7
_CAM_FNS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _cam_fn(model: keras.Model, layer_name: str) -> Callable:
    """A compiled function (B, S, S, 1) float32 -> (P(pneumonia) (B,), signed cam (B, h, w)), cached per model."""
    per_model = _CAM_FNS.setdefault(model, {})
    if layer_name not in per_model:
        grad_model = keras.Model(
            model.inputs, [model.get_layer(layer_name).output, model.get_layer("logit").output], name="gradcam"
        )
        size = model.input_shape[1:]

        @tf.function(input_signature=[tf.TensorSpec((None, *size), tf.float32)], reduce_retracing=True)
        def cam(x):
            with tf.GradientTape() as tape:
                fmap, logit = grad_model(x, training=False)  # (B, h, w, K), (B, 1)
                target = tf.reduce_sum(logit)  # the images of a batch are independent: one gradient call
            grads = tape.gradient(target, fmap)  # (B, h, w, K)
            weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)  # (B, 1, 1, K)
            signed = tf.reduce_sum(weights * fmap, axis=-1)  # (B, h, w): >0 supports PNEUMONIA, <0 NORMAL
            return tf.sigmoid(logit[:, 0]), signed

        per_model[layer_name] = cam
    return per_model[layer_name]


def _as_batch(x: np.ndarray) -> np.ndarray:
    """(S, S, 1) or (B, S, S, 1) -> float32 (B, S, S, 1)."""
    x = np.asarray(x, dtype=np.float32)
    return x[None] if x.ndim == 3 else x


def explain_batch(
    model: keras.Model, x: np.ndarray, layer_name: str = config.GRADCAM_LAYER
) -> tuple[np.ndarray, np.ndarray]:
    """P(pneumonia) (B,) and the signed class-activation map (B, h, w) for model inputs (B, S, S, 1)."""
    prob, signed = _cam_fn(model, layer_name)(tf.constant(_as_batch(x)))
    return prob.numpy().astype(np.float64), signed.numpy().astype(np.float32)


def heatmap_from_cam(signed_cam: np.ndarray, target_class: int, size: int) -> np.ndarray:
    """Turn one signed cam (h, w) into the heatmap of a class: float32 (size, size) in [0, 1].

    target_class 1 (PNEUMONIA) keeps the positive part, 0 (NORMAL) the negative part; an all-zero or non-finite
    cam (vanishing gradients) gives an all-zero heatmap, never NaN.
    """
    cam = np.nan_to_num(np.asarray(signed_cam, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    cam = np.maximum(cam if target_class == 1 else -cam, 0.0)  # (h, w)
    cam = cam / (float(cam.max()) + EPS)
    heat = cv2.resize(cam, (size, size), interpolation=cv2.INTER_LINEAR)  # (size, size)
    return np.clip(heat, 0.0, 1.0).astype(np.float32)


def compute_heatmap(
    model: keras.Model, x: np.ndarray, target_class: int = 1, layer_name: str = config.GRADCAM_LAYER
) -> np.ndarray:
    """Grad-CAM of one model input (S, S, 1) for ``target_class`` (1 = PNEUMONIA, 0 = NORMAL).

    Returns float32 (S, S) in [0, 1].
    """
    if target_class not in (0, 1):
        raise ValueError("target_class must be 0 (NORMAL) or 1 (PNEUMONIA)")
    _, signed = explain_batch(model, x, layer_name)
    return heatmap_from_cam(signed[0], target_class, int(model.input_shape[1]))


def overlay_heatmap(
    image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.4, colormap: int = cv2.COLORMAP_JET
) -> np.ndarray:
    """Blend a heatmap over an image at the image's own resolution.

    image: uint8 (H, W) grayscale or (H, W, 3) RGB. heatmap: float (h, w) in [0, 1], resized to (H, W).
    alpha: heatmap opacity in [0, 1]. Returns uint8 (H, W, 3) RGB.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError("alpha must be in [0, 1]")
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError("image must be uint8")
    rgb = np.repeat(image[:, :, None], 3, axis=2) if image.ndim == 2 else image[:, :, :3]  # (H, W, 3)
    h, w = rgb.shape[:2]
    heat = np.clip(np.nan_to_num(np.asarray(heatmap, dtype=np.float32)), 0.0, 1.0)
    heat = cv2.resize(heat, (w, h), interpolation=cv2.INTER_LINEAR)  # (H, W)
    colour = cv2.cvtColor(cv2.applyColorMap(np.round(heat * 255).astype(np.uint8), colormap), cv2.COLOR_BGR2RGB)
    # weight the colour by the heat itself so cold regions keep the radiograph visible; cv2's per-pixel blend is
    # about 4x faster than the same arithmetic in numpy at full resolution
    a = (alpha * heat).astype(np.float32)  # (H, W)
    return cv2.blendLinear(np.ascontiguousarray(rgb), colour, 1.0 - a, a)  # (H, W, 3) uint8
