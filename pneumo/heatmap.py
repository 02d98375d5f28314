"""Heatmaps and overlays from class-activation maps, without TensorFlow: the app's drawing path imports only this.

:func:`heatmap_from_cam` turns a signed CAM (from pneumo.gradcam or the TFLite copy in pneumo.engine) into the heat of
one class; :func:`overlay_heatmap` blends it over the radiograph; :func:`colorbar` draws the legend. Arrays in,
arrays out: nothing here touches files, Streamlit or a model.
"""

from __future__ import annotations

import cv2
import numpy as np

from pneumo import config

EPS = 1e-7


def cam_scale(signed_cams: np.ndarray, percentile: float = config.CAM_SCALE_PERCENTILE) -> float:
    """An absolute heatmap scale for a model: the ``percentile`` of |cam| over many images' maps (N, h, w).

    Training computes it on the validation images and stores it in the model metadata as ``cam_scale``.
    """
    values = np.abs(np.nan_to_num(np.asarray(signed_cams, dtype=np.float64))).ravel()
    if values.size == 0:
        raise ValueError("no cam values")
    return float(max(np.percentile(values, percentile), EPS))


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


def _unit_mask(mask: np.ndarray, what: str) -> np.ndarray:
    """A (H, W) mask as float32 in [0, 1]: bool, 0/1, 0/255 uint8 or float probabilities."""
    m = np.asarray(mask)
    if m.ndim != 2 or m.size == 0:
        raise ValueError(f"{what} must be a (H, W) mask")
    scale = 255.0 if m.dtype == np.uint8 and m.max() > 1 else 1.0
    return np.clip(np.nan_to_num(m.astype(np.float32) / scale), 0.0, 1.0)


def mask_heatmap(heatmap: np.ndarray, within: np.ndarray) -> np.ndarray:
    """Restrict or weight a heatmap (h, w) in [0, 1] to a mask of any size: float32 (h, w) in [0, 1].

    within: (H, W) binary (restrict) or float in [0, 1] (weight), e.g. a lung mask; resized to the heatmap.
    """
    heat = np.asarray(heatmap, dtype=np.float32)
    mask = _unit_mask(within, "within")  # (H, W) in [0, 1]
    mask = cv2.resize(mask, (heat.shape[1], heat.shape[0]), interpolation=cv2.INTER_LINEAR)  # (h, w)
    return np.clip(heat * np.clip(mask, 0.0, 1.0), 0.0, 1.0)


_LUTS: dict[int, np.ndarray] = {}
# Lung outlines are traced on the mask upsampled to at most this side: smooth at display size, cheap to trace.
_OUTLINE_SIDE = 512


def _rgb_lut(colormap: int) -> np.ndarray:
    """OpenCV colormap as an RGB lookup table uint8 (256, 1, 3), cached (saves a BGR->RGB pass per overlay)."""
    if colormap not in _LUTS:
        ramp = np.arange(256, dtype=np.uint8).reshape(256, 1)
        _LUTS[colormap] = np.ascontiguousarray(cv2.applyColorMap(ramp, colormap)[:, :, ::-1])  # (256, 1, 3) RGB
    return _LUTS[colormap]


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
    colormap: int = cv2.COLORMAP_JET,
    *,
    outline: np.ndarray | None = None,
    within: np.ndarray | None = None,
    outline_colour: tuple[int, int, int] = config.OUTLINE_COLOUR,
) -> np.ndarray:
    """Blend a heatmap over an image at the image's own resolution (pass a display-size image to keep it cheap).

    image: uint8 (H, W) grayscale or (H, W, 3) RGB. heatmap: float (h, w) in [0, 1], resized to (H, W).
    alpha: heatmap opacity in [0, 1]. outline: optional binary mask (any size, e.g. the lungs) whose contour is drawn
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
        tint_lut = np.round(_rgb_lut(colormap) * weight[:, None, None]).astype(np.uint8)  # (256, 1, 3)
        tint = cv2.applyColorMap(lev, tint_lut)  # (bh, bw, 3) colour * a
        if image.ndim == 2:  # one channel to weight, then to RGB: the same numbers, a third of the work
            base = cv2.cvtColor(cv2.multiply(image[roi], keep, scale=1.0 / 255.0), cv2.COLOR_GRAY2RGB)  # (bh, bw, 3)
        else:
            base = cv2.multiply(out[roi], cv2.merge([keep, keep, keep]), scale=1.0 / 255.0)  # (bh, bw, 3)
        out[roi] = cv2.add(base, tint)  # uint8, saturating
    if outline is not None:
        _draw_outline(out, outline, outline_colour)
    return out


def colorbar(
    width: int = 400,
    height: int = 56,
    colormap: int = cv2.COLORMAP_JET,
    labels: tuple[str, str] = ("no evidence", "strong evidence for PNEUMONIA"),
) -> np.ndarray:
    """A horizontal colour bar with labelled ends for the overlay's legend: uint8 (height, width, 3) RGB.

    The left end is heat 0 and the right end heat 1 (with an absolute scale: ``cam_scale`` or more).
    """
    if width < 64 or height < 24:
        raise ValueError("colorbar needs at least 64x24 pixels")
    out = np.full((height, width, 3), 255, np.uint8)  # white background
    bar_h = height // 2
    ramp = np.round(np.linspace(0, 255, width)).astype(np.uint8)[None, :].repeat(bar_h, axis=0)  # (bar_h, width)
    out[:bar_h] = cv2.applyColorMap(ramp, _rgb_lut(colormap))
    font, scale_px = cv2.FONT_HERSHEY_SIMPLEX, max(0.3, (height - bar_h) / 40.0)
    thick = 1
    left, right = labels
    (rw, th), _ = cv2.getTextSize(right, font, scale_px, thick)
    while rw > width // 2 + width // 4 and scale_px > 0.2:  # shrink long labels to fit
        scale_px *= 0.9
        (rw, th), _ = cv2.getTextSize(right, font, scale_px, thick)
    y = min(height - 3, bar_h + th + 4)
    cv2.putText(out, left, (2, y), font, scale_px, (0, 0, 0), thick, cv2.LINE_AA)
    cv2.putText(out, right, (max(2, width - rw - 2), y), font, scale_px, (0, 0, 0), thick, cv2.LINE_AA)
    return out
