"""The scope gate: is this a frontal chest radiograph of a young child, upright and with normal grey levels?

Two layers, both compute only (no Streamlit, nothing written):

- exact rules on the decoded image: DICOM modality, body part and view position; colour; nearly uniform images; tiny
  images and unusual shapes; plus what decoding noticed (``LoadedImage.warnings``: multi-frame DICOM, header
  contradictions, burned-in annotation);
- a learned gate (a small three-headed Keras CNN, trained by ``python -m pneumo.training.train_scope``): the
  ``orientation`` head says which of 8 transforms (0/90/180/270 degrees x normal/inverted grey levels) an in-scope
  radiograph went through; a confident non-identity transform is undone. The ``mirror`` head then says whether the
  (upright) film is mirrored left-right: it gives a handedness score h, and P(mirrored) = sigmoid(h(x) - h(flipped x)),
  so a film and its mirror image always get complementary answers. Corrections are reported
  (``rotated``/``inverted``/``mirrored``) and the corrected pixels are returned, so the classifier sees the upright
  image. A film with P(mirrored) in the warning band below the flip threshold is analysed as it is, with the
  ``possibly_mirrored`` warning (never a refusal). The ``kind`` head scores the corrected image: in scope, adult,
  not frontal, not chest, not a radiograph; P(in scope) below the stored threshold puts the image out of scope.

:func:`assess` works without a gate model (rules only); :func:`assess_batch` runs the gate once per batch.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from pneumo import config
from pneumo.checks.lungs import LUNG_OUTPUT
from pneumo.io.decode import LoadedImage
from pneumo.io.preprocess import preprocess
from pneumo.nets.lite import forward
from pneumo.nets.modelfile import Network

log = logging.getLogger(__name__)

# Stable warning codes (CLI `warnings` column, JSON, app) -> one plain sentence each.
WARNING_CODES: dict[str, str] = {
    "not_radiograph": "This does not look like a chest radiograph: it looks more like another kind of image (for "
    "example a photograph, a document, a CT or MR slice, or a DICOM of another modality).",
    "not_chest": "This looks like an X-ray of another body part, or only part of a chest, not a whole chest.",
    "not_frontal": "This looks like a side (lateral) chest view; the model only knows frontal views.",
    "adult": "This looks like an adult's chest X-ray; the model was made for children aged 1 to 5.",
    "inverted": "The grey levels looked inverted (bones dark); they were turned back before analysis.",
    "rotated": "The image looked rotated; it was turned upright before analysis.",
    "mirrored": "The film appeared mirrored left-right (heart on the right); it was flipped back before analysis. "
    "This is assumed, not certain: in the rare true dextrocardia (situs inversus) the heart is on the right of a "
    "correctly oriented film. Check the film's side marker (L/R).",
    "possibly_mirrored": "The heart appears to be on the right: the film may be mirrored left-right (or the patient "
    "may have dextrocardia). It was analysed as it is, but the model was trained on correctly oriented films and its "
    "answer may not hold. Check the film's side marker (L/R).",
    "orientation_unclear": "It is unclear which way up this image is, or whether its grey levels are inverted.",
    "low_resolution": "The image is small; results on thumbnails are unreliable.",
    "unusual_shape": "The image's shape is unusual for a chest X-ray (very wide or very tall).",
    "colour": "The image is in colour; chest X-rays are grayscale. It looks like a photograph.",
    "uniform": "The image is nearly uniform; there is nothing to analyse.",
    "lungs_not_found": "The lung segmentation did not find two plausible lung fields; the classifier saw a doubtful "
    "crop of the image.",
    "lung_field_short": "One lung field was outlined much shorter than the other: dense consolidation may lie outside "
    "the outline, where the classifier does not look. Check the film itself.",
    "multi_frame": "This DICOM holds several frames (images); only frame 1 was analysed.",
    "burned_in_annotation": "The DICOM header says text is burned into the image: it may identify the patient, and the "
    "model may react to markers and labels rather than to the lungs.",
    "dicom_bits_inconsistent": "The DICOM header contradicts itself about the pixel bit depth (HighBit does not match "
    "BitsStored, or the values exceed BitsStored); the grey levels shown may be wrong.",
    "dicom_sign_inconsistent": "The DICOM header's sign (PixelRepresentation) contradicts the pixel values: they look "
    "like signed values read as unsigned, or the reverse; the grey levels shown may be wrong.",
}
# Codes that put an image OUTSIDE the intended use (label OUT_OF_SCOPE, no probability unless forced). The others are
# warnings: the image is analysed (after correction for `rotated`/`inverted`/`mirrored`) and the warning is shown with
# the result.
OUT_OF_SCOPE_CODES: frozenset[str] = frozenset(
    {"not_radiograph", "not_chest", "not_frontal", "adult", "orientation_unclear", "colour", "uniform"}
)
# The kind head's classes, in output order.
KINDS: tuple[str, ...] = ("in_scope", "adult", "not_frontal", "not_chest", "not_radiograph")
# The transforms the gate can undo: index = quarter_turns + 4 * inverted + 8 * mirrored, applied to the upright image in
# the order mirror, turn, invert. "mirrored" means flipped left-right (np.fliplr); "rot90" means turned by np.rot90 once
# (90 degrees counter-clockwise); "inverted" means 255 - pixels. The orientation head's classes are the first 8 (a
# mirrored film counts as its unmirrored turn); the mirror head decides the rest.
_UNMIRRORED = (
    "upright",
    "rot90",
    "rot180",
    "rot270",
    "inverted",
    "inverted_rot90",
    "inverted_rot180",
    "inverted_rot270",
)
ORIENTATIONS: tuple[str, ...] = _UNMIRRORED + tuple(
    "mirrored" if o == "upright" else f"mirrored_{o}" for o in _UNMIRRORED
)
N_TURNS = 8  # the orientation head's classes: ORIENTATIONS[:N_TURNS]
# Output layer names of the gate model (a gate without the mirror head still runs: it undoes no mirror).
KIND_OUTPUT = "kind"
ORIENTATION_OUTPUT = "orientation"
MIRROR_OUTPUT = "mirror"


@dataclass(frozen=True)
class ScopeResult:
    """The gate's verdict on one image.

    codes: warning codes (keys of WARNING_CODES), rules first; in_scope: no code of OUT_OF_SCOPE_CODES;
    p_in_scope: the gate's P(in scope) on the corrected image (None without a gate); kind_probs: kind -> probability;
    orientation: the transform detected and undone ("upright" when none); corrected: uint8 (H, W) upright pixels;
    explanation: plain words for users. lung_probability: P(lung) of the corrected image at the gate's side, when
    the gate has a lung head (the pipeline then runs no separate lung network).
    """

    codes: tuple[str, ...]
    in_scope: bool
    p_in_scope: float | None
    kind_probs: dict[str, float]
    orientation: str
    corrected: np.ndarray
    explanation: str
    orientation_probs: dict[str, float] = field(default_factory=dict)
    lung_probability: np.ndarray | None = None  # float32 (S, S) P(lung) of the corrected image, from a gate's lung head


def gate_threshold(gate: Network, key: str, default: float = 0.0) -> float:
    """One of the gate's stored thresholds: 'in_scope', 'orientation', 'upright_min', 'mirror', 'mirror_unclear',
    'mirror_warn'."""
    return float(gate.metadata["thresholds"].get(key, default))


# ---------------------------------------------------------------------------------------------------- transforms
def apply_orientation(pixels: np.ndarray, index: int) -> np.ndarray:
    """Apply transform ``ORIENTATIONS[index]`` to an upright uint8 image (H, W[, C]): mirror, then turn, then invert."""
    out = pixels[:, ::-1] if index >= 8 else pixels  # left-right
    out = np.rot90(out, index % 4, axes=(0, 1))
    if (index // 4) % 2:
        out = 255 - out
    return np.ascontiguousarray(out)


def undo_orientation(pixels: np.ndarray, index: int) -> np.ndarray:
    """Inverse of :func:`apply_orientation`: uint8 (H, W[, C]) transformed -> upright."""
    out = 255 - pixels if (index // 4) % 2 else pixels
    out = np.rot90(out, -(index % 4), axes=(0, 1))
    return np.ascontiguousarray(out[:, ::-1] if index >= 8 else out)


# ---------------------------------------------------------------------------------------------------- rules
def rule_codes(img: LoadedImage) -> list[str]:
    """Codes from exact rules on the decoded image and its DICOM header (no model), after what decoding noticed."""
    info, codes = img.info, list(img.warnings)
    modality = str(info.get("modality", "") or "").upper()
    if modality and modality != "UNKNOWN" and modality not in config.XRAY_MODALITIES:
        codes.append("not_radiograph")
    body = str(info.get("body_part", "") or "").upper()
    if body and body != "UNKNOWN" and not any(part in body for part in config.CHEST_BODY_PARTS):
        codes.append("not_chest")
    view = str(info.get("view_position", "") or "").upper()
    if view in config.NON_FRONTAL_VIEWS:
        codes.append("not_frontal")
    if img.colourfulness > config.MAX_COLOURFULNESS:
        codes.append("colour")
    if float(cv2.meanStdDev(np.ascontiguousarray(img.pixels))[1][0, 0]) < config.UNIFORM_MAX_STD:  # exact, fast
        codes.append("uniform")
    w, h = img.original_size  # the file's size, not the (possibly reduced) decoded one
    if min(w, h) < config.PLAUSIBLE_MIN_SIDE:
        codes.append("low_resolution")
    lo, hi = config.PLAUSIBLE_ASPECT
    if not lo <= w / h <= hi:
        codes.append("unusual_shape")
    return codes


# ---------------------------------------------------------------------------------------------------- gate
def gate_input(pixels: np.ndarray, size: int) -> np.ndarray:
    """uint8 (H, W) -> gate input uint8 (size, size, 1): the classifier's 224 squash, area-resized to ``size``."""
    x = preprocess(pixels, config.IMAGE_SIZE)[:, :, 0]  # (224, 224)
    if size != config.IMAGE_SIZE:
        x = cv2.resize(x, (size, size), interpolation=cv2.INTER_AREA)  # (size, size)
    return np.ascontiguousarray(x[:, :, None])


def has_mirror_head(gate: Network) -> bool:
    """Whether the gate model has the mirror head (gates trained before it do not)."""
    return MIRROR_OUTPUT in gate.model.output


def has_lung_head(gate: Network) -> bool:
    """Whether the gate also finds the lungs (one encoder, a lung head: pneumo's two-network design)."""
    return LUNG_OUTPUT in gate.model.output


def _forward(gate: Network, x: np.ndarray, batch_size: int = 64) -> tuple[np.ndarray | None, ...]:
    """Gate outputs for uint8 (N, S, S, 1): kind probs (N, len(KINDS)), orientation probs (N, 8), P(mirrored) (N,),
    and P(lung) (N, S, S) of x and of x flipped left-right (the lung head's; None without it).

    P(mirrored) = sigmoid(h(x) - h(x flipped left-right)) from the mirror head's handedness score h (one pass over
    the N images and their N mirror images); None for a gate without the mirror head. The mirror images' lung map is
    the map of each film once flipped back (None without the mirror head).
    """
    mirror = has_mirror_head(gate)
    xx = np.concatenate([x, x[:, :, ::-1]]) if mirror else x  # (2N or N, S, S, 1)
    out = forward(gate.model, xx, batch_size)  # compiled once per model: no eager overhead per call
    n = len(x)
    kind, orient = np.asarray(out[KIND_OUTPUT])[:n], np.asarray(out[ORIENTATION_OUTPUT])[:n]
    pm = lung = flipped = None
    if mirror:
        h = np.asarray(out[MIRROR_OUTPUT], np.float64).reshape(-1)  # (2N,)
        pm = 1.0 / (1.0 + np.exp(-(h[:n] - h[n:])))
    if LUNG_OUTPUT in out:
        both = np.asarray(out[LUNG_OUTPUT], np.float32)[..., 0]  # (2N or N, S, S)
        lung, flipped = both[:n], (both[n:] if mirror else None)
    return kind, orient, pm, lung, flipped


@dataclass(frozen=True)
class GateDecision:
    """Vectorised gate verdicts for N gate inputs (used by assess_batch and by training's evaluation)."""

    kind: np.ndarray  # (N, len(KINDS)) kind probabilities on the (corrected) input
    orientation: np.ndarray  # (N, 8) orientation probabilities on the original input (ORIENTATIONS[:8] order)
    applied: np.ndarray  # (N,) int, index into ORIENTATIONS of the transform undone (0 = none)
    unclear: np.ndarray  # (N,) bool, orientation (turn, inversion or mirror) could not be told
    in_scope: np.ndarray  # (N,) bool, P(in scope) >= threshold
    mirrored: np.ndarray | None = None  # (N,) P(mirrored) of the turn-corrected input; None without a mirror head
    mirror_warned: np.ndarray | None = None  # (N,) bool, analysed as it is with `possibly_mirrored`; None: no head
    lungs: np.ndarray | None = None  # (N, S, S) P(lung) of the corrected input (every transform undone); None: no head


def decide(gate: Network, x: np.ndarray) -> GateDecision:
    """Run the gate on uint8 (N, S, S, 1): detect and undo orientation, then score the kind head.

    A turn or inversion is undone when it is the orientation head's argmax with probability >= the orientation
    threshold and the corrected image is in scope (a "correction" that makes the image out of scope was wrong: the
    original's verdict is kept). Then an in-scope image is flipped back left-right when P(mirrored) of the
    turn-corrected image >= the mirror threshold. Orientation is unclear when an image that looks in scope has
    P(upright) < upright_min and nothing was undone, or P(mirrored) between mirror_unclear and the mirror threshold
    (both heads know in-scope images only). An in-scope image neither flipped nor unclear with P(mirrored) >=
    mirror_warn is analysed as it is and warned (``mirror_warned``); a gate without mirror_warn warns of nothing.
    """
    kind, orient, pm, lung, lung_flipped = _forward(gate, x)  # (N, K), (N, 8), (N,), (N, S, S) or None
    best = orient.argmax(axis=1)  # (N,)
    want = (best != 0) & (orient[np.arange(len(x)), best] >= gate_threshold(gate, "orientation"))
    applied = np.zeros(len(x), dtype=np.int64)
    idx = np.flatnonzero(want)
    if idx.size:
        fixed = np.stack([undo_orientation(x[i], int(best[i])) for i in idx])  # (M, S, S, 1)
        kind_fixed, _, pm_fixed, lung_fixed, flipped_fixed = _forward(gate, fixed)
        ok = kind_fixed[:, 0] >= gate_threshold(gate, "in_scope")
        kind[idx[ok]] = kind_fixed[ok]
        applied[idx[ok]] = best[idx[ok]]
        if pm is not None:
            pm[idx[ok]] = pm_fixed[ok]  # the mirror is judged on the upright image
        if lung is not None:  # the lungs are found on the upright image
            lung[idx[ok]] = lung_fixed[ok]
            if lung_flipped is not None:
                lung_flipped[idx[ok]] = flipped_fixed[ok]
    in_scope = kind[:, 0] >= gate_threshold(gate, "in_scope")
    unclear = (
        in_scope & (applied == 0) & (orient[:, 0] < gate_threshold(gate, "upright_min"))
    )  # said of in-scope looking images only
    if pm is not None:
        t_mirror = gate_threshold(gate, "mirror", 0.5)
        flip = in_scope & ~unclear & (pm >= t_mirror)
        applied = applied + len(ORIENTATIONS) // 2 * flip
        if lung is not None and lung_flipped is not None:
            lung[flip] = lung_flipped[flip]  # the map of the film flipped back: no extra pass
        t_unclear = gate_threshold(gate, "mirror_unclear", t_mirror)
        unclear = unclear | (in_scope & ~flip & (pm >= t_unclear))
        t_warn = gate_threshold(gate, "mirror_warn", t_unclear)  # a gate without the rule: no warning band
        warned = in_scope & ~unclear & ~flip & (pm >= t_warn)  # (N,)
        return GateDecision(kind, orient, applied, unclear, in_scope, pm, warned, lung)
    return GateDecision(kind, orient, applied, unclear, in_scope, pm, lungs=lung)


# ---------------------------------------------------------------------------------------------------- assess
def _as_image(item: LoadedImage | np.ndarray) -> LoadedImage:
    if isinstance(item, LoadedImage):
        return item
    arr = np.asarray(item)
    if arr.ndim != 2 or arr.dtype != np.uint8:
        raise ValueError(f"expected uint8 (H, W) pixels, got {arr.dtype} {arr.shape}")
    return LoadedImage(pixels=arr)


def reason_text(codes: Sequence[str]) -> str:
    """Plain words for a list of codes: why the image is out of scope, or what was corrected."""
    if not codes:
        return "The image looks like a frontal chest X-ray within the intended use."
    head = (
        "This image is outside the intended use (frontal chest X-rays of children aged 1 to 5), so no result is given."
        if any(c in OUT_OF_SCOPE_CODES for c in codes)
        else "The image is within the intended use, with remarks."
    )
    return " ".join([head, *(WARNING_CODES[c] for c in codes)])


def _gate_codes(d: GateDecision, i: int) -> list[str]:
    """Codes of gate verdict ``i``: the corrections, then the most likely out-of-scope kind if not in scope."""
    codes: list[str] = []
    a = int(d.applied[i])
    if a % 4:
        codes.append("rotated")
    if (a // 4) % 2:
        codes.append("inverted")
    if a >= 8:
        codes.append("mirrored")
    if d.mirror_warned is not None and d.mirror_warned[i]:
        codes.append("possibly_mirrored")
    if d.unclear[i]:
        codes.append("orientation_unclear")
    if not d.in_scope[i]:
        codes.append(KINDS[1 + int(d.kind[i, 1:].argmax())])
    return codes


def _result(img: LoadedImage, d: GateDecision | None, i: int) -> ScopeResult:
    codes = rule_codes(img)
    pixels, p, kinds, orient, oprobs = img.pixels, None, {}, "upright", {}
    if d is not None:
        codes += [c for c in _gate_codes(d, i) if c not in codes]
        a = int(d.applied[i])
        pixels = undo_orientation(img.pixels, a) if a else img.pixels
        p, orient = float(d.kind[i, 0]), ORIENTATIONS[a]
        kinds = {k: float(v) for k, v in zip(KINDS, d.kind[i], strict=True)}
        oprobs = {k: float(v) for k, v in zip(ORIENTATIONS[:N_TURNS], d.orientation[i], strict=True)}
        if d.mirrored is not None:
            oprobs["mirrored"] = float(d.mirrored[i])  # P(mirrored) once turned upright
    in_scope = not any(c in OUT_OF_SCOPE_CODES for c in codes)
    lung = None if d is None or d.lungs is None else d.lungs[i]
    return ScopeResult(tuple(codes), in_scope, p, kinds, orient, pixels, reason_text(codes), oprobs, lung)


def assess_batch(
    items: Sequence[LoadedImage | np.ndarray], gate: Network | None, squashes: np.ndarray | None = None
) -> list[ScopeResult]:
    """Assess many images with one gate forward pass (plus one for the few that were corrected).

    squashes: the images' 224 squashes uint8 (N, 224, 224) when the caller has them already (the pipeline does).
    """
    imgs = [_as_image(it) for it in items]
    if gate is None or not imgs:
        return [_result(img, None, 0) for img in imgs]
    if squashes is None:
        x = np.stack([gate_input(img.pixels, gate.image_size) for img in imgs])  # (N, S, S, 1) uint8
    else:
        size = (gate.image_size, gate.image_size)
        x = np.stack([cv2.resize(q, size, interpolation=cv2.INTER_AREA) for q in squashes])[..., None]
    d = decide(gate, x)
    return [_result(img, d, i) for i, img in enumerate(imgs)]


def assess(item: LoadedImage | np.ndarray, gate: Network | None) -> ScopeResult:
    """Assess one decoded image (or uint8 (H, W) pixels): rules, and the learned gate when given."""
    return assess_batch([item], gate)[0]
