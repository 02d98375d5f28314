"""From decoded images to probabilities and labels, in batches; used by the CLI, the app and the benchmark."""

from __future__ import annotations

import numpy as np

from pneumo import config


def predict_proba(model, x: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """P(pneumonia) for model inputs (B, S, S, 1) or one (S, S, 1); returns float64 (B,).

    Runs through pneumo.engine.forward: the TFLite copy where one is attached, else compiled once per model.
    """
    from pneumo.engine import forward

    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 3:
        x = x[None]
    if len(x) == 0:
        return np.zeros(0)
    return np.asarray(forward(model, x, batch_size)).reshape(-1).astype(np.float64)


def label_for(probability: float, threshold: float) -> str:
    """NORMAL or PNEUMONIA at the threshold (probability >= threshold -> PNEUMONIA)."""
    return config.CLASS_NAMES[1] if probability >= threshold else config.CLASS_NAMES[0]
