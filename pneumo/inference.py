"""From decoded images to probabilities and labels, in batches; used by the CLI, the app and the benchmark."""

from __future__ import annotations

import weakref
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from pneumo import config
from pneumo.model import LoadedModel

_PREDICT_FNS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _predict_fn(model) -> Callable:
    """The model's forward pass compiled once, for any batch size: (B, S, S, C) float32 -> (B, 1), cached per model.

    Calling a Keras model eagerly costs ~40 ms of Python overhead per call on 2 CPU cores (see pneumo.bench).
    """
    if model not in _PREDICT_FNS:
        ref = weakref.ref(model)  # the cached function must not keep the model alive
        spec = tf.TensorSpec((None, *model.input_shape[1:]), tf.float32)
        _PREDICT_FNS[model] = tf.function(lambda x: ref()(x, training=False), input_signature=[spec])
    return _PREDICT_FNS[model]


def predict_proba(model, x: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """P(pneumonia) for model inputs (B, S, S, 1) or one (S, S, 1); returns float64 (B,)."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 3:
        x = x[None]
    fn = _predict_fn(model)
    out = [fn(tf.constant(x[i : i + batch_size])).numpy().reshape(-1) for i in range(0, len(x), batch_size)]
    return np.concatenate(out).astype(np.float64) if out else np.zeros(0)


def label_for(probability: float, threshold: float) -> str:
    """NORMAL or PNEUMONIA at the threshold (probability >= threshold -> PNEUMONIA)."""
    return config.CLASS_NAMES[1] if probability >= threshold else config.CLASS_NAMES[0]


def confidence_text(probability: float, threshold: float) -> str:
    """Plain words for how far a probability lies from the operating point, on the logit scale.

    The distance |logit(p) - logit(t)| < 1 is 'borderline', < 3 'moderately confident', else 'confident'.
    """
    p = float(np.clip(probability, 1e-6, 1 - 1e-6))
    t = float(np.clip(threshold, 1e-6, 1 - 1e-6))
    d = abs(np.log(p / (1 - p)) - np.log(t / (1 - t)))
    if d < 1.0:
        return "borderline: close to the decision threshold"
    if d < 3.0:
        return "moderately confident"
    return "confident"


def model_summary(loaded: LoadedModel) -> dict:
    """A few facts about a loaded model for display: version, size, threshold and validation metrics."""
    meta = loaded.metadata
    return {
        "name": meta.get("name", loaded.path.stem),
        "created": meta.get("created", "unknown"),
        "parameters": meta.get("parameters", loaded.model.count_params()),
        "threshold": loaded.threshold,
        "validation": meta.get("metrics", {}).get("validation", {}),
    }


def heatmap_scale(loaded: LoadedModel) -> float | None:
    """The model's absolute heatmap scale (metadata ``cam_scale``, written by training), or None when it has none.

    Pass it to ``pneumo.gradcam.heatmap_from_cam(..., scale=...)``; None falls back to each map's own maximum.
    """
    value = loaded.metadata.get("cam_scale")
    try:
        scale = float(value) if value is not None else None
    except (TypeError, ValueError):
        return None
    return scale if scale is not None and np.isfinite(scale) and scale > 0 else None
