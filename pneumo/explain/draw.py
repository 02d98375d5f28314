"""Drawing an explanation: the class evidence (:mod:`pneumo.explain.cam`) blended over the radiograph, kept within
the lungs the classifier saw, with their outline. The app, the CLI's ``--heatmaps`` and the report all draw with
:func:`result_overlay`, so all three show the same picture. Arrays in, arrays out.

Each class has its own colour scale, chosen in one place (:func:`heat_lut`): PNEUMONIA evidence in a warm scale
(pale yellow to red, red at the strongest), NORMAL evidence in a cool one (navy to aqua, no red or yellow), so that a
map of NORMAL evidence never looks like disease and no weak PNEUMONIA map looks like a NORMAL one. The app's legend
(:func:`heat_css_stops`) and the report's colour bar read the same table.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from pneumo import config
from pneumo.checks.lungs import dilate
from pneumo.explain.cam import class_heat

_LUTS: dict[int, np.ndarray] = {}
_STOP_LUTS: dict[int, np.ndarray] = {}  # colour scales built from config stops, (256, 1, 3) RGB
# Lung outlines are traced on the mask upsampled to at most this side: smooth at display size, cheap to trace.
_OUTLINE_SIDE = 512


def _rgb_lut(colormap: int) -> np.ndarray:
    """OpenCV colormap as an RGB lookup table uint8 (256, 1, 3), cached (saves a BGR->RGB pass per overlay)."""
    if colormap not in _LUTS:
        ramp = np.arange(256, dtype=np.uint8).reshape(256, 1)
        _LUTS[colormap] = np.ascontiguousarray(cv2.applyColorMap(ramp, colormap)[:, :, ::-1])  # (256, 1, 3) RGB
    return _LUTS[colormap]


def heat_lut(target_class: int) -> np.ndarray:
    """The colour scale of the evidence for ``target_class`` (0 NORMAL, 1 PNEUMONIA): RGB uint8 (256, 1, 3), level 0
    (no evidence) to 255 (a typical peak or more). The one place that maps a class to its colours (config)."""
    if target_class in (0, 1):
        if target_class not in _STOP_LUTS:
            chosen = config.HEAT_STOPS_PNEUMONIA if target_class == 1 else config.HEAT_STOPS_NORMAL
            stops = np.asarray(chosen, dtype=np.float64)  # (k, 3) RGB, evenly spaced over 0..1
            at = np.linspace(0.0, 1.0, len(stops))  # (k,)
            ramp = np.linspace(0.0, 1.0, 256)  # (256,)
            lut = np.stack([np.interp(ramp, at, stops[:, c]) for c in range(3)], axis=1)  # (256, 3)
            _STOP_LUTS[target_class] = np.round(lut).astype(np.uint8).reshape(256, 1, 3)
        return _STOP_LUTS[target_class]
    raise ValueError(f"target_class must be 0 or 1, not {target_class!r}")


def heat_css_stops(target_class: int, stops: int = 17) -> str:
    """The colour scale of :func:`heat_lut` as CSS linear-gradient stops ('#rrggbb 0%, ..., #rrggbb 100%'), sampled
    at ``stops`` evenly spaced levels: the app's legend shows exactly the overlay's colours."""
    lut = heat_lut(target_class)[:, 0]  # (256, 3) RGB
    parts = []
    for i in range(stops):
        level = round(i * 255 / (stops - 1))
        r, g, b = (int(x) for x in lut[level])
        parts.append(f"#{r:02x}{g:02x}{b:02x} {level / 255:.2%}")
    return ", ".join(parts)


def _draw_outline(rgb: np.ndarray, outline: np.ndarray, colour: tuple[int, int, int]) -> None:
    """Draw the contour of a binary mask (any size) onto rgb (H, W, 3) in place; thickness scales with the image."""
    h, w = rgb.shape[:2]
    unit = _unit_mask(outline, "outline")  # (mh, mw) in [0, 1]
    mh, mw = unit.shape
    # a smooth outline: upsample the mask bilinearly (to at most _OUTLINE_SIDE px) before thresholding, then scale
    # the contour to the image; no full-size mask is made
    f = min(max(h / mh, w / mw), _OUTLINE_SIDE / max(mh, mw))
    if f > 1:
        unit = cv2.resize(unit, (round(mw * f), round(mh * f)), interpolation=cv2.INTER_LINEAR)
    mask = (unit > 0.5).astype(np.uint8)  # (mh', mw') 0/1
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)  # [(n, 1, 2) x, y]
    factor = np.array([w / mask.shape[1], h / mask.shape[0]], dtype=np.float64)
    contours = [np.round((c.astype(np.float64) + 0.5) * factor - 0.5).astype(np.int32) for c in contours]
    thickness = max(1, round(max(h, w) / config.OUTLINE_PIXELS_PER_WIDTH))
    cv2.drawContours(rgb, contours, -1, colour, thickness, lineType=cv2.LINE_AA)


def overlay_heatmap(
    image: np.ndarray,
    heatmap: np.ndarray,
    alpha: float = 0.4,
    colormap: int | np.ndarray = cv2.COLORMAP_JET,
    *,
    outline: np.ndarray | None = None,
    within: np.ndarray | None = None,
    outline_colour: tuple[int, int, int] = config.OUTLINE_COLOUR,
) -> np.ndarray:
    """Blend a heatmap over an image at the image's own resolution (pass a display-size image to keep it cheap).

    image: uint8 (H, W) grayscale or (H, W, 3) RGB. heatmap: float (h, w) in [0, 1], resized to (H, W).
    alpha: heatmap opacity in [0, 1]. colormap: an OpenCV colormap id or an RGB table uint8 (256, 1, 3) such as
    :func:`heat_lut`'s. outline: optional binary mask (any size, e.g. the lungs) whose contour is drawn
    thin in ``outline_colour``. within: optional mask (see :func:`mask_heatmap`) restricting the heat.
    Returns uint8 (H, W, 3) RGB.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError("alpha must be in [0, 1]")
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError("image must be uint8")
    h, w = image.shape[:2]
    heat = np.clip(np.nan_to_num(np.asarray(heatmap, dtype=np.float32)), 0.0, 1.0)  # (h, w)
    if within is not None:  # on the finer grid of the two, so the tint stops at the mask's edge, not at a cell's
        mask = _unit_mask(within, "within")  # (mh, mw) in [0, 1]
        fine = max(heat.shape, mask.shape, key=lambda hw: hw[0] * hw[1])  # (gh, gw)
        heat, mask = (a if a.shape == fine else cv2.resize(a, fine[::-1], interpolation=cv2.INTER_LINEAR)
                      for a in (heat, mask))  # fmt: skip
        heat = heat * mask  # (gh, gw)
    # quantise at the small grid, then one resize of the uint8 levels to the image: 4x cheaper than resizing floats
    level = cv2.resize(np.round(heat * 255).astype(np.uint8), (w, h), interpolation=cv2.INTER_LINEAR)  # (H, W)
    # out = image * (1 - a) + colour * a with a = alpha * heat: the colour is weighted by the heat itself so that
    # cold regions keep the radiograph visible. Both terms are 256-entry lookup tables of the heat level, so the
    # per-pixel work is two table lookups, one multiply and one add in uint8 (~3 ms at 1200x960, vs ~10 ms for a
    # float blend); rounding differs from a float blend by at most 2 grey levels at alpha 0.4.
    # Level 0 leaves a pixel exactly as it was (keep 255, tint 0), so the blend runs only inside the box of the
    # non-zero levels: within the lungs that is about half the image.
    out = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB) if image.ndim == 2 else image[:, :, :3].copy()  # never the input
    bx, by, bw, bh = cv2.boundingRect(level)  # (H, W, 3) uint8 so far: the radiograph as RGB
    if bw and bh:
        roi = (slice(by, by + bh), slice(bx, bx + bw))
        lev = level[roi]  # (bh, bw)
        weight = alpha * np.arange(256, dtype=np.float64) / 255.0  # (256,) a per heat level
        keep = cv2.LUT(lev, np.round(255.0 * (1.0 - weight)).astype(np.uint8))  # (bh, bw) (1 - a) * 255
        table = colormap if isinstance(colormap, np.ndarray) else _rgb_lut(colormap)  # (256, 1, 3) RGB
        tint_lut = np.round(table * weight[:, None, None]).astype(np.uint8)  # (256, 1, 3)
        tint = cv2.applyColorMap(lev, tint_lut)  # (bh, bw, 3) colour * a
        if image.ndim == 2:  # one channel to weight, then to RGB: the same numbers, a third of the work
            base = cv2.cvtColor(cv2.multiply(image[roi], keep, scale=1.0 / 255.0), cv2.COLOR_GRAY2RGB)  # (bh, bw, 3)
        else:
            base = cv2.multiply(out[roi], cv2.merge([keep, keep, keep]), scale=1.0 / 255.0)  # (bh, bw, 3)
        out[roi] = cv2.add(base, tint)  # uint8, saturating
    if outline is not None:
        _draw_outline(out, outline, outline_colour)
    return out


def _unit_mask(mask: np.ndarray, what: str) -> np.ndarray:
    """A (H, W) mask as float32 in [0, 1]: bool, 0/1, 0/255 uint8 or float probabilities."""
    m = np.asarray(mask)
    if m.ndim != 2 or m.size == 0:
        raise ValueError(f"{what} must be a (H, W) mask")
    scale = 255.0 if m.dtype == np.uint8 and m.max() > 1 else 1.0
    return np.clip(np.nan_to_num(m.astype(np.float32) / scale), 0.0, 1.0)


def result_overlay(
    result: Any,
    metadata: dict[str, Any],
    target_class: int,
    alpha: float = 0.45,
    outline: bool = True,
    image: np.ndarray | None = None,
) -> np.ndarray:
    """The heatmap of an analysed image over ``image`` (default: its pixels): uint8 (H, W, 3) RGB.

    result: a pneumo.pipeline.Result (cam224, lung_mask, pixels). The heat is kept within
    the dilated lung mask (what the classifier saw) and the lung outline is drawn when ``outline``. The colours are
    the class's own scale (:func:`heat_lut`).
    """
    if result.cam224 is None:
        raise ValueError("this analysis has no heatmap")
    base = result.pixels if image is None else image
    heat = class_heat(result.cam224, target_class, metadata)  # (224, 224)
    mask = result.lung_mask
    within = None
    if mask is not None:  # what the classifier saw, with soft edges (the 224 mask is blocky when enlarged)
        within = cv2.GaussianBlur(dilate(mask).astype(np.float32), (0, 0), 1.5)
    return overlay_heatmap(
        base,
        heat,
        alpha,
        heat_lut(target_class),
        within=within,
        outline=mask if (outline and mask is not None) else None,
    )
