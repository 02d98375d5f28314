"""The numbers of an explanation: a signed class-activation map (CAM, logit units, > 0 supports PNEUMONIA) turned
into the evidence for one class on the model's absolute scale. No drawing here (:mod:`pneumo.explain.draw`).

Scale: each class's map is divided by the model's ``cam_scale`` for that class (the median, over validation images of
the class, of the largest value of the map): a typical case of the class reaches full colour, an image with little
evidence for a class stays cold, and the same colour means the same evidence on every image. Models without
``cam_scale`` fall back to each map's own maximum (shape only, no magnitude).
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from pneumo import config

EPS = 1e-7


def heatmap_from_cam(signed_cam: np.ndarray, target_class: int, size: int, scale: float | None = None) -> np.ndarray:
    """Turn one signed cam (h, w) into the heatmap of a class: float32 (size, size) in [0, 1].

    target_class 1 (PNEUMONIA) keeps the positive part, 0 (NORMAL) the negative part.
    scale: the model's absolute scale (metadata ``cam_scale``): heat = clip(cam / scale, 0, 1), the same colour means
    the same evidence on every image, and an image with almost no evidence for a class stays cold. None: each map is
    divided by its own maximum (the heatmap shows *where*, not *how much*; a faint map is stretched to full red).
    An all-zero or non-finite cam gives an all-zero heatmap, never NaN.
    """
    if target_class not in (0, 1):
        raise ValueError("target_class must be 0 (NORMAL) or 1 (PNEUMONIA)")
    cam = np.nan_to_num(np.asarray(signed_cam, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    cam = np.maximum(cam if target_class == 1 else -cam, 0.0)  # (h, w)
    if scale is None:
        cam = cam / (float(cam.max()) + EPS)
    else:
        if not (np.isfinite(scale) and scale > 0):
            raise ValueError("scale must be a positive number")
        cam = cam / np.float32(scale)
    heat = cv2.resize(np.minimum(cam, 1.0), (size, size), interpolation=cv2.INTER_LINEAR)  # (size, size)
    return np.clip(heat, 0.0, 1.0).astype(np.float32)


def class_scale(metadata: dict[str, Any], target_class: int) -> float | None:
    """The absolute scale of a class's map from the model metadata, or None (per-image maximum)."""
    scale = metadata.get("cam_scale")
    if isinstance(scale, dict):
        value = scale.get(config.CLASS_NAMES[target_class])
        return float(value) if value else None
    return float(scale) if isinstance(scale, (int, float)) and scale > 0 else None


def class_heat(cam224: np.ndarray, target_class: int, metadata: dict[str, Any]) -> np.ndarray:
    """The evidence for a class over the 224 squash: signed CAM (224, 224) -> float32 (224, 224) in [0, 1]."""
    return heatmap_from_cam(cam224, target_class, cam224.shape[0], class_scale(metadata, target_class))


def faint_note(result: Any, metadata: dict[str, Any], target_class: int) -> str:
    """Sentences for a faint map of a class (peak < config.FAINT_HEAT on the absolute scale), else ''; they also say
    when the other class's map is the stronger one on this image.

    A borderline PNEUMONIA label with a faint PNEUMONIA map is consistent, but puzzling without it.
    """
    if result.cam224 is None or class_scale(metadata, target_class) is None:
        return ""
    peak = float(class_heat(result.cam224, target_class, metadata).max())
    if peak >= config.FAINT_HEAT:
        return ""
    name, other = config.CLASS_NAMES[target_class], config.CLASS_NAMES[1 - target_class]
    note = f"The map is faint (peak {peak:.2f}): the evidence for {name} is weaker than on a typical {name} image."
    if class_scale(metadata, 1 - target_class) is not None:
        rival = float(class_heat(result.cam224, 1 - target_class, metadata).max())
        if rival > peak:
            note += f" The {other} map is stronger on this image (peak {rival:.2f})."
    return note


def shown_class(result: Any, target_class: int | None, threshold: float) -> int:
    """The class a heatmap explains: the one asked for, else the label at the threshold."""
    if target_class is not None:
        return target_class
    p = result.probability if result.probability is not None else 0.0
    return 1 if p >= threshold else 0


def scale_words(metadata: dict[str, Any], target_class: int) -> str:
    """What full colour means on a heatmap of this model, for legends and captions."""
    name = config.CLASS_NAMES[target_class]
    if class_scale(metadata, target_class) is None:
        return f"evidence for {name}: 0 = none, 1 = this image's own maximum (no absolute scale for this model)"
    return (
        f"evidence for {name} on one scale for all images: 1 = as strong as the peak of a typical {name} "
        "validation image, or more"
    )


def explained_class(choice: str, probability: float, threshold: float) -> int:
    """Class index to explain: 'PNEUMONIA' -> 1, 'NORMAL' -> 0, anything else -> the label at the threshold."""
    if choice in config.CLASS_NAMES:
        return config.CLASS_NAMES.index(choice)
    return 1 if probability >= threshold else 0
