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
from pneumo.explain import result_overlay
from pneumo.inference import label_for
from pneumo.io import ImageLoadError, load_image
from pneumo.modelfile import LoadedModel
from pneumo.pipeline import ANALYSIS_DECODE, LABEL_OUT_OF_SCOPE, Models, analyze_images
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

    pixels: uint8 (H, W) as analysed (upright: an inverted or turned radiograph is corrected first), None when the
    file could not be read. error: the loader's message when the file is unreadable.
    label: NORMAL / PNEUMONIA at the model's stored threshold, or OUT_OF_SCOPE. probability: P(pneumonia), computed
    for every readable image; the app shows it for an out-of-scope image only on request.
    warnings: stable codes (pneumo.scope.WARNING_CODES); scope_text: why the image is out of scope, in plain words.
    cam224: float32 (224, 224) signed CAM over the 224 squash (> 0 supports PNEUMONIA, < 0 NORMAL, 0 outside the
    lungs); lung_mask: bool (224, 224) or None.
    """

    name: str
    digest: str
    pixels: np.ndarray | None = None
    facts: dict[str, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    error: str = ""
    label: str = ""
    in_scope: bool = True
    scope_text: str = ""
    probability: float | None = None
    cam224: np.ndarray | None = None
    lung_mask: np.ndarray | None = None

    @property
    def has_result(self) -> bool:
        """True when the network ran and a probability exists."""
        return self.probability is not None

    @property
    def doubtful(self) -> bool:
        """True when the image lies outside the intended use: its result is shown only on request."""
        return not self.in_scope

    @property
    def refusal(self) -> str:
        """Kept for older callers: images are no longer refused outright, they are OUT_OF_SCOPE with a reason."""
        return ""

    @property
    def signed_cam(self) -> np.ndarray | None:
        """The signed CAM over the 224 squash (older name of ``cam224``)."""
        return self.cam224

    @property
    def warning_texts(self) -> tuple[str, ...]:
        """The warnings in plain words, one sentence per code."""
        from pneumo.scope import WARNING_CODES

        return tuple(WARNING_CODES.get(c, c) for c in self.warnings)


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


def as_models(models: Models | LoadedModel) -> Models:
    """A Models bundle from either a bundle or a bare classifier (a classifier that reads the whole squash)."""
    return models if isinstance(models, Models) else Models(models)


def analyze_bytes(data: bytes, name: str, models: Models | LoadedModel) -> Analysis:
    """Decode one file and run the one analysis path (pneumo.pipeline) on it once.

    The decode is the CLI's (pneumo.predict), so the app and the CLI give the same answer for the same file.
    Unreadable files give an Analysis with ``error`` set; never raises ImageLoadError.
    """
    models = as_models(models)
    digest = file_digest(data)
    try:
        img = load_image(data, name=name, **ANALYSIS_DECODE)
    except ImageLoadError as exc:
        return Analysis(name=name, digest=digest, error=str(exc))
    res = analyze_images(models, [img], force=True)[0]  # forced: the app shows it on request only
    label = res.label if res.in_scope else LABEL_OUT_OF_SCOPE
    return Analysis(
        name=name,
        digest=digest,
        pixels=res.pixels,
        facts=safe_facts(img.info),
        warnings=res.warnings,
        label=label,
        in_scope=res.in_scope,
        scope_text=res.scope_text,
        probability=res.probability,
        cam224=res.cam224,
        lung_mask=res.lung_mask,
    )


def display_copy(pixels: np.ndarray) -> np.ndarray:
    """The analysed pixels at the size the app shows them: uint8 (h, w[, 3]) with the long side at most
    config.DISPLAY_MAX_SIDE (area-reduced when larger; the same array when not)."""
    import cv2

    h, w = pixels.shape[:2]
    scale = config.DISPLAY_MAX_SIDE / max(h, w)
    if scale >= 1:
        return pixels
    return cv2.resize(pixels, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)


def explained_class(choice: str, probability: float, threshold: float) -> int:
    """Class index to explain: 'PNEUMONIA' -> 1, 'NORMAL' -> 0, anything else -> the label at the threshold."""
    if choice in config.CLASS_NAMES:
        return config.CLASS_NAMES.index(choice)
    return config.CLASS_NAMES.index(label_for(probability, threshold))


def heatmap_overlay(
    result: Analysis,
    target_class: int,
    alpha: float,
    metadata: dict[str, Any],
    image: np.ndarray | None = None,
    outline: bool = True,
) -> np.ndarray:
    """The heatmap overlay of one analysed image (pneumo.explain): uint8 (H, W, 3) RGB at the analysed size, or at
    the size of ``image`` (a resized copy of ``result.pixels``, e.g. the one shown in the browser)."""
    if result.pixels is None or result.cam224 is None:
        raise ValueError("this analysis has no heatmap")
    return result_overlay(result, metadata, target_class, alpha, outline, image)
