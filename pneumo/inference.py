"""From decoded images to probabilities and labels, in batches; used by the CLI, the app and the benchmark."""

from __future__ import annotations

import weakref
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from pneumo import config

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
