"""A one-page PNG or PDF report for one analysed image, drawn with matplotlib (no pyplot: safe in app threads)."""

from __future__ import annotations

import io
import textwrap
from datetime import datetime, timezone
from typing import Any

import cv2
import numpy as np
from matplotlib.figure import Figure

from pneumo import __version__, config
from pneumo.analysis import (
    Analysis,
    format_threshold,
    heatmap_overlay,
    operating_point,
    plain_verdict,
)
from pneumo.inference import label_for

DISCLAIMER = (
    "Research demonstration only - not a medical device and not a diagnosis. The model was trained on pediatric "
    "(1-5 years) chest radiographs from a single centre in Guangzhou and has not been validated for clinical use. "
    "Decisions about patients must be made by qualified clinicians."
)
# Longest side of the images embedded in a report (pixels): sharp on A4, small files.
REPORT_IMAGE_SIDE = 1200
_A4_INCHES = (8.27, 11.69)


def _shrink(image: np.ndarray, side: int = REPORT_IMAGE_SIDE) -> np.ndarray:
    """Downscale uint8 (H, W) or (H, W, 3) so that its longest side is at most ``side``."""
    h, w = image.shape[:2]
    scale = side / max(h, w)
    if scale >= 1:
        return image
    return cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def _plain(markdown: str) -> str:
    return markdown.replace("**", "")


def report_lines(
    result: Analysis, threshold: float, metadata: dict[str, Any], target_class: int, when: datetime
) -> list[str]:
    """The text of the report, one paragraph per item (also used by the tests)."""
    if result.probability is None:
        raise ValueError("a report needs an analysed image with a probability")
    p = result.probability
    default_t = float(metadata.get("threshold", config.DEFAULT_THRESHOLD))
    which = "the model's default"
    if abs(threshold - default_t) > 1e-9:
        which = f"chosen by the user; the model's default is {format_threshold(default_t)}"
    lines = [
        f"File: {result.name}",
        f"Result: {label_for(p, threshold)} at threshold {format_threshold(threshold)} ({which}).",
        _plain(plain_verdict(p, threshold)),
    ]
    op = operating_point(metadata, threshold)
    val = metadata.get("metrics", {}).get("validation", {})
    if op is not None:
        n = f"{val['n']} images" if "n" in val else "images"
        lines.append(
            f"At this threshold on the model's validation split ({n}): sensitivity {op.sensitivity:.1%}, "
            f"specificity {op.specificity:.1%}."
        )
    cls = config.CLASS_NAMES[target_class]
    lines.append(f"Heatmap: Grad-CAM evidence for {cls}, scaled to its own maximum (it shows where, not how much).")
    lines.append("Image: " + ", ".join(f"{k} {v}" for k, v in result.facts.items()) + ".")
    lines += [f"Warning: {w}" for w in result.warnings]
    lines.append(
        f"Model: {metadata.get('name', 'unknown')}, trained {str(metadata.get('created', 'unknown'))[:10]}, "
        f"{metadata.get('parameters', '?')} parameters, input {metadata.get('input_size', '?')} px. "
        f"pneumo {__version__}. Report created {when:%Y-%m-%d %H:%M} UTC."
    )
    return lines


def build_report(
    result: Analysis,
    threshold: float,
    metadata: dict[str, Any],
    target_class: int = 1,
    alpha: float = 0.45,
    fmt: str = "png",
    when: datetime | None = None,
) -> bytes:
    """Render the report of one analysed image as PNG or PDF bytes (A4 portrait)."""
    if fmt not in ("png", "pdf"):
        raise ValueError("fmt must be 'png' or 'pdf'")
    when = when or datetime.now(timezone.utc)
    lines = report_lines(result, threshold, metadata, target_class, when)
    size = int(metadata.get("input_size", config.IMAGE_SIZE))
    overlay = heatmap_overlay(result, target_class, alpha, size)  # (H, W, 3) uint8

    fig = Figure(figsize=_A4_INCHES)
    fig.text(0.06, 0.965, "pneumo - chest X-ray analysis", fontsize=17, weight="bold", va="top")
    fig.text(0.06, 0.935, "Research demonstration, not a diagnosis", fontsize=11, color="#b00020", va="top")
    h, w = result.pixels.shape
    img_h = min(0.4, 0.42 * (h / w) * (_A4_INCHES[0] / _A4_INCHES[1]))  # keep the aspect of the radiograph
    for i, (im, title) in enumerate(
        ((result.pixels, "Original"), (overlay, f"Grad-CAM: {config.CLASS_NAMES[target_class]}"))
    ):
        ax = fig.add_axes((0.06 + i * 0.46, 0.9 - img_h, 0.42, img_h))
        ax.imshow(_shrink(im), cmap="gray" if im.ndim == 2 else None, vmin=0, vmax=255, interpolation="antialiased")
        ax.set_title(title, fontsize=10)
        ax.set_axis_off()
    y = 0.9 - img_h - 0.04
    for line in lines:
        wrapped = textwrap.fill(line, 95)
        weight = "bold" if line.startswith("Result:") else "normal"
        fig.text(
            0.06,
            y,
            wrapped,
            fontsize=9.5,
            va="top",
            weight=weight,
            color="#8a4b00" if line.startswith("Warning") else "black",
        )
        y -= 0.022 * (wrapped.count("\n") + 1) + 0.008
    fig.text(
        0.06, 0.04, textwrap.fill(DISCLAIMER, 100), fontsize=8.5, va="bottom", style="italic",
        bbox={"boxstyle": "round,pad=0.6", "facecolor": "#fff4e5", "edgecolor": "#e0a040"},
    )  # fmt: skip
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=110 if fmt == "png" else 150, metadata={"Title": f"pneumo report: {result.name}"})
    return buf.getvalue()
