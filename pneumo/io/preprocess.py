"""The one preprocessing step from a decoded radiograph to the model input, shared by training, CLI and app."""

from __future__ import annotations

import cv2
import numpy as np

from pneumo import config


def preprocess(pixels: np.ndarray, size: int = config.IMAGE_SIZE) -> np.ndarray:
    """Squash a uint8 (H, W) grayscale image to the model input, uint8 (size, size, 1).

    The public data set's 224 px copies were squashed from the originals without keeping the aspect ratio, using
    area (box) filtering; doing exactly the same here makes a full-resolution upload and its 224 px copy give the
    same input. Scaling to [0, 1] and intensity normalisation happen inside the model.
    """
    if pixels.ndim != 2:
        raise ValueError(f"expected a (H, W) grayscale array, got shape {pixels.shape}")
    if pixels.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels, got {pixels.dtype}")
    h, w = pixels.shape
    if (h, w) != (size, size):
        interp = cv2.INTER_AREA if (h >= size and w >= size) else cv2.INTER_LINEAR
        pixels = cv2.resize(pixels, (size, size), interpolation=interp)  # (size, size)
    return np.ascontiguousarray(pixels[:, :, None])  # (size, size, 1)
