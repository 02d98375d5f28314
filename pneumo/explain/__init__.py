"""Explanations: the evidence for a class from the signed CAM (:mod:`.cam`) and its drawing over the film
(:mod:`.draw`). The CAM itself comes from the classifier's TFLite copy (pneumo.nets.forward_cam)."""

from pneumo.explain.cam import (
    class_heat,
    class_scale,
    explained_class,
    faint_note,
    heatmap_from_cam,
    scale_words,
    shown_class,
)
from pneumo.explain.draw import overlay_heatmap, result_overlay

__all__ = [
    "class_heat",
    "class_scale",
    "explained_class",
    "faint_note",
    "heatmap_from_cam",
    "overlay_heatmap",
    "result_overlay",
    "scale_words",
    "shown_class",
]
