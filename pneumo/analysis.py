"""Analyse one uploaded file for the app: decode, check plausibility, predict and explain. No Streamlit in here.

:func:`analyze_bytes` does all the heavy work for one image exactly once and returns an immutable :class:`Analysis`:
the decoded pixels, display-safe facts, plausibility warnings, P(pneumonia) and the signed Grad-CAM map. Everything the
user can change afterwards (threshold, explained class, heatmap opacity) is computed from it cheaply by the other
functions here, so moving a slider never runs the network again. Nothing is written to disk or logged.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pneumo import config
from pneumo.gradcam import explain_batch, heatmap_from_cam, overlay_heatmap
from pneumo.inference import label_for
from pneumo.io import ImageLoadError, LoadedImage, load_image, plausibility_warnings
from pneumo.model import LoadedModel
from pneumo.preprocess import preprocess
from pneumo.present import (  # noqa: F401 - the presentation helpers moved to pneumo.present; re-exported here
    OperatingPoint,
    format_probability,
    format_threshold,
    operating_point,
    plain_verdict,
    results_rows,
    rows_to_csv,
)

SAMPLES_DIR = config.ASSETS_DIR / "samples"
# How samples.json's pneumo_split reads in the sample menu.
_SPLIT_WORDS = {
    "validation": "held out from training",
    "training": "seen in training: its result is optimistic",
}


def resolve_model_path() -> Path:
    """The model the app uses: ``$PNEUMO_MODEL`` when set, else the committed ``config.DEFAULT_MODEL_PATH``."""
    override = os.environ.get(config.MODEL_ENV_VAR, "").strip()
    return Path(override) if override else config.DEFAULT_MODEL_PATH


@dataclass(frozen=True)
class Sample:
    """One shipped sample image and what samples.json says about it."""

    file: str
    label: str
    split: str
    path: Path

    @property
    def title(self) -> str:
        """A menu entry such as 'PNEUMONIA · person724_virus_1343 (held out from training)'."""
        stem = self.file.split("_", 1)[-1].rsplit(".", 1)[0]
        return f"{self.label} · {stem} ({_SPLIT_WORDS.get(self.split, self.split)})"


def list_samples(folder: Path = SAMPLES_DIR) -> list[Sample]:
    """The sample images listed in ``samples.json`` that exist in ``folder``, NORMAL first; [] when there are none."""
    index = folder / "samples.json"
    if not index.exists():
        return []
    entries = json.loads(index.read_text())
    out = [
        Sample(str(e["file"]), str(e.get("label", "?")), str(e.get("pneumo_split", "unknown")), folder / e["file"])
        for e in entries
        if (folder / str(e["file"])).is_file()
    ]
    return sorted(out, key=lambda s: (s.label, s.file))


@dataclass(frozen=True)
class Analysis:
    """Everything the app shows about one file; never mutated (its arrays are read-only) so it can be cached.

    pixels: uint8 (H, W) as displayed, None when the file could not be read.
    signed_cam: float32 (h, w) Grad-CAM map, > 0 where evidence supports PNEUMONIA and < 0 where it supports NORMAL.
    error: the loader's message when the file is unreadable. refusal: why a readable image gets no result at all.
    doubtful: the image probably is not a radiograph (colour photo, uniform); its result is hidden unless asked for.
    """

    name: str
    digest: str
    pixels: np.ndarray | None = None
    facts: dict[str, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    error: str = ""
    refusal: str = ""
    doubtful: bool = False
    probability: float | None = None
    signed_cam: np.ndarray | None = None

    @property
    def has_result(self) -> bool:
        """True when the network ran and a probability exists."""
        return self.probability is not None


def file_digest(data: bytes) -> str:
    """SHA-256 of a file's bytes: the cache key of its analysis (same bytes, same result)."""
    return hashlib.sha256(data).hexdigest()


def safe_facts(info: dict[str, Any]) -> dict[str, str]:
    """Display facts from a LoadedImage.info: format and size, plus modality and view position for DICOM only."""
    facts = {"Format": str(info.get("format", "unknown"))}
    size = info.get("original_size")
    if size:
        facts["Size"] = f"{int(size[0])} × {int(size[1])} pixels"
    if info.get("format") == "DICOM":
        facts["Modality"] = str(info.get("modality", "unknown"))
        facts["View position"] = str(info.get("view_position", "unknown"))
    return facts


def refusal_reason(img: LoadedImage) -> str:
    """Why an image must not be analysed at all (a DICOM of another modality, e.g. CT or MR), or ''."""
    modality = str(img.info.get("modality", "") or "")
    if modality and modality != "unknown" and modality not in config.XRAY_MODALITIES:
        return (
            f"This DICOM's modality is {modality}, not a projection radiograph "
            f"({', '.join(sorted(config.XRAY_MODALITIES))}). The model only knows chest X-rays, "
            "so no result is given."
        )
    return ""


def is_doubtful(img: LoadedImage) -> bool:
    """True for a colour photograph or a nearly uniform image: a probability would be meaningless."""
    return img.colourfulness > config.MAX_COLOURFULNESS or float(img.pixels.std()) < 8.0


def analyze_bytes(data: bytes, name: str, loaded: LoadedModel) -> Analysis:
    """Decode one file and, when it makes sense, run the model and Grad-CAM once.

    Unreadable files give an Analysis with ``error`` set; never raises ImageLoadError.
    """
    digest = file_digest(data)
    try:
        img = load_image(data, name=name)
    except ImageLoadError as exc:
        return Analysis(name=name, digest=digest, error=str(exc))
    pixels = img.pixels  # uint8 (H, W)
    pixels.setflags(write=False)
    facts = safe_facts(img.info)
    warnings = tuple(plausibility_warnings(img))
    refusal = refusal_reason(img)
    if refusal:
        return Analysis(name=name, digest=digest, pixels=pixels, facts=facts, warnings=warnings, refusal=refusal)
    x = preprocess(pixels, loaded.image_size)[None]  # (1, S, S, 1) uint8
    probs, cams = explain_batch(loaded.model, x, loaded.gradcam_layer)  # (1,), (1, h, w)
    cam = np.ascontiguousarray(cams[0])  # (h, w) float32
    cam.setflags(write=False)
    return Analysis(
        name=name,
        digest=digest,
        pixels=pixels,
        facts=facts,
        warnings=warnings,
        doubtful=is_doubtful(img),
        probability=float(probs[0]),
        signed_cam=cam,
    )


def explained_class(choice: str, probability: float, threshold: float) -> int:
    """Class index to explain: 'PNEUMONIA' -> 1, 'NORMAL' -> 0, anything else -> the label at the threshold."""
    if choice in config.CLASS_NAMES:
        return config.CLASS_NAMES.index(choice)
    return config.CLASS_NAMES.index(label_for(probability, threshold))


def heatmap_overlay(
    result: Analysis, target_class: int, alpha: float, model_size: int, image: np.ndarray | None = None
) -> np.ndarray:
    """The Grad-CAM overlay of one analysed image: uint8 (H, W, 3) RGB at the full resolution, or at the size of
    ``image`` (a resized copy of ``result.pixels``, e.g. the one shown in the browser: cheaper on every rerun)."""
    if result.pixels is None or result.signed_cam is None:
        raise ValueError("this analysis has no heatmap")
    heat = heatmap_from_cam(result.signed_cam, target_class, model_size)  # (S, S) in [0, 1]
    return overlay_heatmap(result.pixels if image is None else image, heat, alpha)
