"""Heatmaps of an analysed image: the class evidence on one absolute scale, drawn within the lungs with their outline.

Used by the app, the CLI's ``--heatmaps`` and the report, so all three draw the same picture. The numbers
(:func:`class_heat`) are apart from the drawing (:func:`result_overlay`).

Scale: the CAM is in logit units. Each class's map is divided by the model's ``cam_scale`` for that class (the
median, over validation images of the class, of the largest value of the map): a typical case of the class reaches
full colour, an image with little evidence for a class stays cold, and the same colour means the same evidence on
every image. Models without ``cam_scale`` fall back to each map's own maximum (shape only, no magnitude).
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from pneumo import config, lungs
from pneumo.heatmap import heatmap_from_cam, overlay_heatmap


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


def result_overlay(
    result: Any,
    metadata: dict[str, Any],
    target_class: int,
    alpha: float = 0.45,
    outline: bool = True,
    image: np.ndarray | None = None,
) -> np.ndarray:
    """The heatmap of an analysed image over ``image`` (default: its pixels): uint8 (H, W, 3) RGB.

    result: a pneumo.pipeline.Result or pneumo.analysis.Analysis (cam224, lung_mask, pixels). The heat is kept within
    the dilated lung mask (what the classifier saw) and the lung outline is drawn when ``outline``.
    """
    if result.cam224 is None:
        raise ValueError("this analysis has no heatmap")
    base = result.pixels if image is None else image
    heat = class_heat(result.cam224, target_class, metadata)  # (224, 224)
    mask = result.lung_mask
    within = None
    if mask is not None:  # what the classifier saw, with soft edges (the 224 mask is blocky when enlarged)
        within = cv2.GaussianBlur(lungs.dilate(mask).astype(np.float32), (0, 0), 1.5)
    return overlay_heatmap(base, heat, alpha, within=within, outline=mask if (outline and mask is not None) else None)


def scale_words(metadata: dict[str, Any], target_class: int) -> str:
    """What full colour means on a heatmap of this model, for legends and captions."""
    name = config.CLASS_NAMES[target_class]
    if class_scale(metadata, target_class) is None:
        return f"evidence for {name}: 0 = none, 1 = this image's own maximum (no absolute scale for this model)"
    return (
        f"evidence for {name} on one scale for all images: 1 = as strong as the peak of a typical {name} "
        "validation image, or more"
    )
