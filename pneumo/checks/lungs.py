"""Lung fields: the lung mask's post-processing and the lung-only classifier input made from a mask.

Everything works on the 224 squash that :func:`pneumo.io.preprocess` makes, so a full-resolution upload and
its 224 px copy give the same mask and the same classifier input. No files, no Streamlit: arrays in, arrays out.

The path for one image (shapes at the defaults):
    x224 uint8 (224, 224) --resize--> (96, 96) --the gate's lung head--> P(lung) (96, 96) --resize--> (224, 224)
    --threshold, two largest components, holes filled--> mask224 bool (224, 224)
    --dilate, bounding box, grey outside--> lung input uint8 (160, 160) for the classifier
    (+ the mask in the same box, uint8 (160, 160), for a classifier that pools over the lungs only).
"""

from __future__ import annotations

import functools
import logging

import cv2
import numpy as np

from pneumo import config
from pneumo.nets.lite import forward
from pneumo.nets.modelfile import Network

log = logging.getLogger(__name__)

# The output name of a lung head: the U-Net's one output, or the lung head of a scope gate that also finds the lungs
# (pneumo.checks.scope); such a gate's metadata gives its P(lung) threshold as "lung_threshold".
LUNG_OUTPUT = "lung_probability"


# ---------------------------------------------------------------------------------------------------------------
# masks
def postprocess(prob: np.ndarray, threshold: float = 0.5, components: int = 2) -> np.ndarray:
    """P(lung) float (H, W) -> bool (H, W): threshold, keep the ``components`` largest blobs, fill their holes.

    Small blobs (< 10 % of the largest) are dropped even when among the two largest: one lung plus a speck is one lung.
    """
    binary = (np.asarray(prob) >= threshold).astype(np.uint8)  # (H, W) 0/1
    n, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    if n <= 1:
        return np.zeros(binary.shape, dtype=bool)
    areas = stats[1:, cv2.CC_STAT_AREA]  # component 0 is the background
    order = np.argsort(areas)[::-1][:components]
    keep = [int(k) + 1 for k in order if areas[k] >= 0.1 * areas[order[0]]]
    mask = np.isin(labels, keep).astype(np.uint8)
    # fill holes: flood the background from the border; what the flood cannot reach is a hole
    padded = np.pad(mask, 1)
    flood = padded.copy()
    cv2.floodFill(flood, None, (0, 0), 1)
    holes = (flood == 0)[1:-1, 1:-1]
    return (mask.astype(bool)) | holes


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap of two boolean masks; 1.0 when both are empty."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    s = int(a.sum()) + int(b.sum())
    return 1.0 if s == 0 else 2.0 * float(np.logical_and(a, b).sum()) / s


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks; 1.0 when both are empty."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    u = int(np.logical_or(a, b).sum())
    return 1.0 if u == 0 else float(np.logical_and(a, b).sum()) / u


def mask_facts(mask: np.ndarray) -> dict[str, float]:
    """Plausibility of a lung mask (H, W): area fraction, number of blobs, the share of the area left of centre, and
    the height ratio of the two tallest blobs (see :func:`height_ratio`), from one labelling."""
    mask = np.asarray(mask, bool)
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    area = float(mask.mean())
    left = float(mask[:, : mask.shape[1] // 2].sum()) / max(int(mask.sum()), 1)
    return {"area": area, "components": float(n - 1), "left_share": left, "height_ratio": _height_ratio(n, stats)}


def _height_ratio(n: int, stats: np.ndarray) -> float:
    if n < 3:
        return 0.0
    short, tall = sorted(stats[1:, cv2.CC_STAT_HEIGHT])[-2:]
    return float(short) / float(tall)


def height_ratio(mask: np.ndarray) -> float:
    """Height of the shorter of the two largest blobs over the taller one's (0 when there are fewer than two)."""
    n, _, stats, _ = cv2.connectedComponentsWithStats(np.asarray(mask, np.uint8), connectivity=8)
    return _height_ratio(n, stats)


def plausible(mask: np.ndarray, facts: dict[str, float] | None = None) -> bool:
    """True when a mask looks like two lung fields: enough area, two blobs, neither side nearly empty (``facts``:
    its :func:`mask_facts`, when already at hand)."""
    f = facts if facts is not None else mask_facts(mask)
    return (
        config.LUNG_AREA_RANGE[0] <= f["area"] <= config.LUNG_AREA_RANGE[1]
        and f["components"] == 2
        and 0.2 <= f["left_share"] <= 0.8
    )


# ---------------------------------------------------------------------------------------------------------------
# the classifier input
def lung_box(mask: np.ndarray, margin: int = config.LUNG_MARGIN_PX) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) of the mask's bounding box grown by ``margin`` pixels, clipped to the image."""
    h, w = mask.shape
    bx, by, bw, bh = cv2.boundingRect(np.asarray(mask, np.uint8))  # of the non-zero pixels; 10x np.nonzero's speed
    if bw == 0:
        return 0, h, 0, w
    y0, y1 = max(by - margin, 0), min(by + bh + margin, h)
    x0, x1 = max(bx - margin, 0), min(bx + bw + margin, w)
    return y0, y1, x0, x1


def dilate(mask: np.ndarray, px: int = config.LUNG_MARGIN_PX) -> np.ndarray:
    """Grow a bool mask (H, W) by ``px`` pixels (elliptic kernel)."""
    if px <= 0:
        return np.asarray(mask, bool)
    return cv2.dilate(np.asarray(mask, np.uint8), _disc(px)).astype(bool)


@functools.lru_cache(maxsize=8)
def _disc(px: int) -> np.ndarray:
    """The elliptic structuring element of radius ``px`` (made once)."""
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * px + 1, 2 * px + 1))


def _squash(crop: np.ndarray, size: int) -> np.ndarray:
    """A crop (h, w) resized to (size, size): area filtering when shrinking, linear when enlarging."""
    interp = cv2.INTER_AREA if min(crop.shape) >= size else cv2.INTER_LINEAR
    return cv2.resize(crop, (size, size), interpolation=interp)


def lung_input(
    x224: np.ndarray,
    mask224: np.ndarray,
    size: int,
    margin: tuple[int, int] | None = None,
    with_mask: bool = False,
) -> np.ndarray:
    """The classifier's view: uint8 (224, 224) image and bool mask -> uint8 (size, size), lungs only.

    Pixels outside the dilated mask are set to the mean inside it, then the dilated mask's bounding box is squashed
    to ``size`` x ``size``. Borders, markers, neck and abdomen cannot reach the classifier.
    ``with_mask``: uint8 (size, size, 2), the view and, as channel 1, the mask itself (not grown) cut from the same
    box and area-resized, 255 = lung (a pixel on the outline gets its lung share; an empty mask: all 255, as the view
    then shows the whole image): the input of a classifier that pools over the lungs only.
    ``margin`` (training only): (px, grey) greys everything outside the mask grown by px instead (px <= the margin),
    with the grey value given, in the same frame: the edge of the visible lungs moves as it does when the lung
    mask differs from the truth.
    """
    x224 = np.asarray(x224).reshape(x224.shape[0], x224.shape[1])
    mask224 = np.asarray(mask224, bool)
    grown = dilate(mask224)
    empty = not grown.any()
    if empty:
        grown = np.ones_like(grown)
    fill = np.uint8(round(float(x224[grown].mean())))
    view = np.where(grown, x224, fill).astype(np.uint8)  # (224, 224)
    if margin is not None and not empty:
        view[~dilate(mask224, margin[0])] = np.uint8(margin[1])
    y0, y1, x0, x1 = lung_box(grown, 0)
    out = _squash(view[y0:y1, x0:x1], size)  # (size, size)
    if not with_mask:
        return out
    if empty:
        lung = np.full((size, size), 255, np.uint8)
    else:
        share = _squash(mask224[y0:y1, x0:x1].astype(np.float32) * 255.0, size)  # (size, size) 0..255
        lung = np.clip(share + 0.5, 0, 255).astype(np.uint8)
    return np.stack([out, lung], axis=-1)  # (size, size, 2)


def mask_input(mask224: np.ndarray, size: int) -> np.ndarray:
    """The lung mask in the frame of :func:`lung_input`: bool (224, 224) -> uint8 (size, size), 255 = lung (its
    channel 1 with ``with_mask``)."""
    return lung_input(np.zeros(np.shape(mask224), np.uint8), mask224, size, with_mask=True)[..., 1]


def paste_back(
    heat: np.ndarray, mask224: np.ndarray, shape: tuple[int, int] = (224, 224), inside_only: bool = False
) -> np.ndarray:
    """A map over the lung crop (h, w) -> the same map over the whole 224 squash (224, 224), 0 outside the crop.

    inside_only: also 0 outside the lung mask itself (a classifier that pools over the lungs only: its evidence
    outside them counts for nothing, so none is drawn there).
    """
    mask224 = np.asarray(mask224, bool)
    grown = dilate(mask224)
    if not grown.any():
        grown = np.ones_like(grown)
    y0, y1, x0, x1 = lung_box(grown, 0)
    out = np.zeros(shape, dtype=np.float32)
    out[y0:y1, x0:x1] = cv2.resize(np.asarray(heat, np.float32), (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
    if inside_only and mask224.any():
        out[~mask224] = 0.0
    return out


# ---------------------------------------------------------------------------------------------------------------
# loading and running
def lung_threshold(net: Network) -> float:
    """The P(lung) threshold of a lung network: a U-Net's ``threshold``; a gate with a lung head's
    ``lung_threshold``."""
    return float(net.metadata.get("lung_threshold", net.threshold))


def lung_probability(net: Network, x224: np.ndarray) -> np.ndarray:
    """P(lung) at 224 for a batch of 224 squashes: uint8 (B, 224, 224[, 1]) -> float32 (B, 224, 224)."""
    size = net.image_size
    x224 = np.asarray(x224).reshape(len(x224), x224.shape[1], x224.shape[2])
    small = np.stack([cv2.resize(im, (size, size), interpolation=cv2.INTER_AREA) for im in x224])  # (B, s, s)
    out = forward(net.model, small[..., None].astype(np.float32))  # (B, s, s, 1), or a gate's dict of heads
    return upsample(out[LUNG_OUTPUT] if isinstance(out, dict) else out, x224.shape[1:3])


def upsample(prob: np.ndarray, shape: tuple[int, int] = (224, 224)) -> np.ndarray:
    """P(lung) at the network's side float (B, s, s[, 1]) -> float32 (B, H, W) by linear interpolation."""
    prob = np.asarray(prob, np.float32).reshape(len(prob), prob.shape[1], prob.shape[2])
    h, w = shape
    return np.stack([cv2.resize(p, (w, h), interpolation=cv2.INTER_LINEAR) for p in prob])


def masks_from(prob224: np.ndarray, threshold: float) -> np.ndarray:
    """P(lung) float (B, 224, 224) -> post-processed bool masks (B, 224, 224) (:func:`postprocess`)."""
    return np.stack([postprocess(p, threshold) for p in prob224]).reshape(np.shape(prob224))


def segment(net: Network, x224: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Masks for a batch: uint8 (B, 224, 224[, 1]) -> (bool masks (B, 224, 224), P(lung) float32 (B, 224, 224))."""
    prob = lung_probability(net, x224)
    return masks_from(prob, lung_threshold(net)), prob
