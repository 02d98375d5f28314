"""A one-page report of one analysed image: a real A4 PDF (fpdf2) and a print-resolution PNG (matplotlib).

Both formats draw the same content (:func:`report_content`) on exactly one page: the disclaimer first, then what the
model computed ("Model output: P(pneumonia) = 99.7%, at or above the stored threshold 49%: the model's PNEUMONIA
side", the app's wording: :func:`pneumo.present.text.model_output_line`; out of scope, the refusal leads and no
threshold is spoken of), the image and its Grad-CAM overlay with a labelled colour bar (and a lung outline when the
analysis carries one), the warnings, the independent figures on new patients, the optimistic validation figures with
counts and intervals, and the intended use. The file name is printed only when asked for (clinical file names often
hold names or record numbers) and never goes into the document's metadata; a typed image reference may stand instead.
No pyplot (safe in the app's threads), no file I/O: bytes in memory only.
"""

from __future__ import annotations

import io
import textwrap
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from fpdf import FPDF
from matplotlib.figure import Figure

from pneumo import __version__, config
from pneumo.explain.cam import faint_note, scale_words
from pneumo.explain.draw import heat_lut, result_overlay
from pneumo.io.decode import shrink_to_side
from pneumo.pipeline import Result
from pneumo.present import evaluation as ev
from pneumo.present.text import (
    COLOURS,
    DISCLAIMER,
    VALIDATION_CAVEAT,
    format_interval,
    format_threshold,
    is_out_of_scope,
    model_output_line,
    operating_point,
    probability_meaning,
    refusal_sentences,
    verdict,
    warning_sentences,
)

INTENDED_USE = (
    "Intended use: teaching and research only, on frontal (AP) chest radiographs of children aged 1-5. Not for "
    "diagnosis, triage or screening; not for adults, lateral views or other modalities."
)
# Longest side of the images embedded in a report (pixels): about 300 dpi at the printed width, small files.
REPORT_IMAGE_SIDE = 1200
_A4_MM = (210.0, 297.0)
_A4_INCHES = (8.27, 11.69)
_FONT_DIR = Path(__import__("matplotlib").get_data_path()) / "fonts" / "ttf"  # DejaVu: every Unicode a name needs


def _lower_first(sentence: str) -> str:
    """'This model has ...' -> 'this model has ...' after a colon (a name or 'On new patients' stays as it is)."""
    return sentence[:1].lower() + sentence[1:] if sentence.startswith("This ") else sentence


def _hex_rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


@dataclass(frozen=True)
class ReportContent:
    """Every text of a report, in the order it is drawn (also what the tests read)."""

    file_line: str
    label: str
    label_colour: str
    probability_line: str
    headline: str
    caution: str
    meaning: str
    out_of_scope: str
    warnings: tuple[str, ...]
    heatmap_line: str
    independent: str
    external: str
    validation: str
    facts: str
    model_line: str
    image_titles: tuple[str, str]
    colourbar_label: str
    heat_class: int = 1  # the class whose evidence the heatmap shows: its colour scale (heat_lut) draws the bar
    extra: tuple[str, ...] = field(default_factory=tuple)

    def lines(self) -> list[str]:
        """The report's paragraphs as plain text, in drawing order."""
        items = [
            self.file_line,
            DISCLAIMER,
            self.out_of_scope,
            self.probability_line,
            self.label and f"Label at this threshold: {self.label}",
            self.headline,
            self.caution,
            *(f"Warning: {w}" for w in self.warnings),
            self.meaning,
            self.heatmap_line,
            self.independent,
            self.validation,
            self.facts,
            INTENDED_USE,
            self.external,
            self.model_line,
        ]
        return [i for i in items if i]


def image_line(name: str, reference: str = "", show_name: bool = False) -> str:
    """Which image the report is about: the user's typed reference and, only when asked for, the file name."""
    parts = []
    if reference.strip():
        parts.append(f"Image reference: {' '.join(reference.split())[: config.REPORT_REFERENCE_CHARS]}")
    if show_name:
        parts.append(f"File: {name}")
    return " · ".join(parts) or "Image reference: none given (the file name is printed only on request)"


def report_content(
    result: Result, threshold: float, metadata: dict[str, Any], target_class: int, when: datetime,
    evaluation: dict[str, Any] | None = None, reference: str = "", show_name: bool = False,
) -> ReportContent:  # fmt: skip
    """What a report says about one analysed image at one threshold."""
    if result.probability is None:
        raise ValueError("a report needs an analysed image with a probability")
    p = float(result.probability)
    v = verdict(p, threshold)
    default_t = float(metadata.get("threshold", config.DEFAULT_THRESHOLD))
    block = ev.primary(evaluation)
    external = ""
    if evaluation and "external_nih" in (evaluation.get("sets") or {}):
        nih = evaluation["sets"]["external_nih"]
        forced = nih.get("all_images_forced") or nih  # every image scored: what ignoring a refusal gives
        refused = f"the scope gate refused {ev.refused_text(nih)}; " if nih.get("n_out_of_scope") else ""
        external = (
            f"Outside the intended use it fails: on {forced.get('n', 0):,} radiographs of adults from other "
            f"hospitals (NIH ChestX-ray14) {refused}scored all the same, its AUC was "
            f"{forced.get('auc', float('nan')):.2f}, no better than chance."
        )
    op = operating_point(metadata, threshold)
    val = (metadata.get("metrics") or {}).get("validation") or {}
    validation = ""
    if op is not None:
        validation = (
            "Validation split (optimistic: drawn from the same pool as the training images; "
            f"{val.get('n', '?')} images, {op.n_pneumonia} pneumonia, {op.n_normal} normal) "
            f"at threshold {format_threshold(op.threshold)}: "
            f"sensitivity {format_interval(op.sensitivity, op.sensitivity_ci)}, "
            f"specificity {format_interval(op.specificity, op.specificity_ci)}. {VALIDATION_CAVEAT}"
        )
    scope = ""
    if is_out_of_scope(result):
        why = " ".join(refusal_sentences(result.warnings))  # the lead reason and at most one remark
        scope = (
            "OUTSIDE INTENDED USE: this image does not look like a frontal chest radiograph of a young child. "
            f"{why} The result was shown on request only and means nothing clinically."
        )
    cls = config.CLASS_NAMES[target_class]
    # the refusal leads out of scope; then no label and no threshold for an image the model was not made for
    output = model_output_line(p, threshold, default_t, out_of_scope=bool(scope))
    return ReportContent(
        file_line=image_line(result.name, reference, show_name),
        label="" if scope else v.label,
        label_colour=COLOURS["near"] if scope else v.colour,
        probability_line=output,
        headline="" if scope else v.headline + ".",
        caution="" if scope else v.caution,
        meaning=probability_meaning(
            metadata,
            ece=block.get("ece") if block else None,
            ece_set="official test split" if block else "",
            out_of_scope=is_out_of_scope(result),
        ).replace("**", ""),
        out_of_scope=scope,
        # out of scope, the reasons are in the scope box already: not repeated as warnings
        warnings=() if scope else tuple(warning_sentences(result.warnings)),
        heatmap_line=" ".join(
            x
            for x in (
                f"Heatmap: {scale_words(metadata, target_class)}.",
                faint_note(result, metadata, target_class),
                "Drawn only inside the lung outline (the model's lung fields, which include the lung behind the heart, "
                "so the outline takes in the heart shadow: heat there may come from the lung or the heart): where the "
                "model found evidence, not how much disease there is.",
            )
            if x
        ),
        independent="Independent figures: " + _lower_first(ev.headline(evaluation, markdown=False)),
        external=external,
        validation=validation,
        facts="Image: " + ", ".join(f"{k} {x}" for k, x in result.facts.items()) + ".",
        model_line=(
            f"Model: {metadata.get('name', 'unknown')}, trained {str(metadata.get('created', 'unknown'))[:10]}, "
            f"{metadata.get('parameters', '?')} parameters, input {metadata.get('input_size', '?')} px. "
            f"pneumo {__version__}. Report created {when:%Y-%m-%d %H:%M} UTC."
        ),
        image_titles=("Radiograph as analysed", f"Heatmap: evidence for {cls}"),
        colourbar_label=f"0 = no evidence; 1 = a typical {cls} peak or more",
        heat_class=target_class,
    )


def report_lines(
    result: Result, threshold: float, metadata: dict[str, Any], target_class: int, when: datetime,
    evaluation: dict[str, Any] | None = None, reference: str = "", show_name: bool = False,
) -> list[str]:  # fmt: skip
    """The text of the report, one paragraph per item (also used by the tests)."""
    return report_content(result, threshold, metadata, target_class, when, evaluation, reference, show_name).lines()


def _images(
    result: Result, target_class: int, alpha: float, metadata: dict[str, Any], outline: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """(radiograph, overlay) at report resolution, with the lung outline drawn on both when the analysis has one."""
    shown = shrink_to_side(result.pixels, REPORT_IMAGE_SIDE)
    overlay = result_overlay(result, metadata, target_class, alpha, outline, shown)  # (h, w, 3)
    base = result_overlay(result, metadata, target_class, 0.0, outline, shown)  # the radiograph
    return base, overlay


_BAR_IN = (3.4, 0.75)  # the PDF's colour bar (inches): at its printed width of ~85 mm its text is 7.5-8 pt


def colourbar_png(label: str, target_class: int = 1, dpi: int = 200, width_in: float = _BAR_IN[0]) -> bytes:
    """A horizontal colour bar of the overlay's colour scale for ``target_class`` (:func:`heat_lut`, 0..1), labelled,
    as PNG bytes."""
    fig = Figure(figsize=(width_in, _BAR_IN[1]))
    ax = fig.add_axes((0.04, 0.6, 0.92, 0.26))
    ax.imshow(heat_lut(target_class).reshape(1, 256, 3), aspect="auto", extent=(0, 1, 0, 1), interpolation="nearest")
    ax.set_yticks([])
    ax.set_xticks([0, 0.5, 1], ["0", "0.5", "1"], fontsize=7.5)
    ax.tick_params(length=2, pad=1)
    fig.text(0.5, 0.02, label, ha="center", va="bottom", fontsize=8, parse_math=False, usetex=False)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def _jpeg(image: np.ndarray) -> bytes:
    """JPEG bytes (quality 92) of a uint8 RGB image: embedded as is in the PDF, a fraction of a PNG's size."""
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
    if not ok:
        raise ValueError("could not encode image")
    return data.tobytes()


# Image heights tried in turn (PDF mm; the PNG uses the same share of the page) until the page holds everything:
# a long warning list or an out-of-scope box shrinks the images, never pushes the disclaimer onto a second page.
_IMAGE_HEIGHTS_MM = (92.0, 78.0, 64.0, 52.0, 40.0, 30.0)
_A4_HEIGHT_MM = 297.0


def _pdf(
    content: ReportContent, shape: tuple[int, int], jpegs: tuple[bytes, bytes], bar: bytes, title: str,
    img_max: float = 92.0,
) -> FPDF:  # fmt: skip
    """The A4 PDF, laid out top to bottom with fpdf2: the radiograph and overlay (JPEG bytes of an (h, w) image) at
    most ``img_max`` mm high, the colour bar (PNG bytes) under the overlay."""
    pdf = FPDF(orientation="P", unit="mm", format="A4")
    pdf.set_auto_page_break(auto=True, margin=14)
    pdf.set_margins(14, 12, 14)
    pdf.add_font("DejaVu", "", str(_FONT_DIR / "DejaVuSans.ttf"))
    pdf.add_font("DejaVu", "B", str(_FONT_DIR / "DejaVuSans-Bold.ttf"))
    pdf.add_font("DejaVu", "I", str(_FONT_DIR / "DejaVuSans-Oblique.ttf"))
    pdf.set_title(title)
    pdf.set_subject(content.probability_line)  # machine-readable: the label's basis is in the file's metadata
    pdf.set_author(f"pneumo {__version__}")
    pdf.set_creator("pneumo (research demo, not a medical device)")
    pdf.add_page()
    width = _A4_MM[0] - 28

    def para(text: str, size: float = 9.5, style: str = "", colour: str = "#1f2933", h: float = 4.6) -> None:
        if not text:
            return
        pdf.set_font("DejaVu", style, size)
        pdf.set_text_color(*_hex_rgb(colour))
        # ragged right (no stretched gaps); markdown=False: '**' or '--' in a file name or DICOM value stays as it is
        pdf.multi_cell(width, h, text, align="L", new_x="LMARGIN", new_y="NEXT", markdown=False)
        pdf.ln(1.2)

    def boxed(text: str, fill: str, edge: str, style: str = "", size: float = 9.5) -> None:
        if not text:
            return
        pdf.set_fill_color(*_hex_rgb(fill))
        pdf.set_draw_color(*_hex_rgb(edge))
        pdf.set_font("DejaVu", style, size)
        pdf.set_text_color(*_hex_rgb("#1f2933"))
        pdf.multi_cell(width, 4.8, text, border=1, fill=True, padding=2, align="L", new_x="LMARGIN", new_y="NEXT",
                       markdown=False)  # fmt: skip
        pdf.ln(2)

    pdf.set_font("DejaVu", "B", 15)
    pdf.cell(width * 0.62, 7, "pneumo · chest X-ray analysis")
    pdf.set_font("DejaVu", "B", 9)
    pdf.set_text_color(*_hex_rgb("#b00020"))
    pdf.cell(width * 0.38, 7, "Research demo - not a diagnosis", align="R", new_x="LMARGIN", new_y="NEXT")
    para(content.file_line, 9, colour="#52606d")
    boxed(DISCLAIMER, "#fff4e5", "#e0a040", style="I", size=8.5)
    boxed(content.out_of_scope, "#fdecea", "#b00020", style="B", size=10.5)
    # what the model computed, then the label at this threshold: text sizes of a measurement, not of a diagnosis
    para(content.probability_line, 11.5, "B")
    if content.label:  # ordinary weight and ink: a label at a threshold, not a finding
        para(f"Label at this threshold: {content.label}", 10.5)
    para(content.headline + (" " + content.caution if content.caution else ""), 10)
    if content.warnings:  # one box for all of them
        boxed("Warning: " + " ".join(content.warnings), "#fff4e5", "#e0a040", style="B")
    # images side by side, colour bar under the overlay
    gap = 6.0
    img_w = (width - gap) / 2
    h, w = shape
    img_h = min(img_w * h / w, img_max)
    img_w_fit = img_h * w / h
    y = pdf.get_y() + 1
    pdf.set_font("DejaVu", "", 8.5)
    pdf.set_text_color(*_hex_rgb("#52606d"))
    for i, (jpeg, cap) in enumerate(zip(jpegs, content.image_titles, strict=True)):
        x = 14 + i * (img_w + gap)
        pdf.set_xy(x, y)
        pdf.cell(img_w, 4, cap, markdown=False)
        pdf.image(io.BytesIO(jpeg), x=x, y=y + 5, w=img_w_fit, h=img_h)
    pdf.image(io.BytesIO(bar), x=14 + img_w + gap, y=y + 6 + img_h, w=img_w_fit)
    pdf.set_y(y + 6 + img_h + img_w_fit * _BAR_IN[1] / _BAR_IN[0] + 2)
    para(content.heatmap_line, 8.5, colour="#52606d", h=4)
    para(content.meaning, 9.5, "I")
    boxed(content.independent, "#e8f1fb", "#1565c0")
    para(content.validation, 9)
    para(content.facts, 9)
    boxed(INTENDED_USE + (" " + content.external if content.external else ""), "#fdecea", "#b00020", "B", 9)
    para(content.model_line, 8, colour="#52606d", h=4)
    return pdf


_TEXT_WIDTH_PT = 0.84 * _A4_INCHES[0] * 72  # the PNG page's text column (7 % margins, less a box's padding)


def _png_report(
    content: ReportContent,
    base: np.ndarray,
    overlay: np.ndarray,
    title: str,
    dpi: int,
    img_max: float = 92.0,
    must_fit: bool = True,
) -> bytes | None:
    """The same page as a PNG at print resolution, drawn with matplotlib; None when ``must_fit`` and it does not fit
    the page with images ``img_max`` mm high."""
    fig = Figure(figsize=_A4_INCHES)
    ink = "#1f2933"
    y = 0.968

    def text(s: str, size: float = 9.5, weight: str = "normal", colour: str = ink, width: int = 100,
             box: tuple[str, str] | None = None, style: str = "normal", gap: float = 0.006) -> None:  # fmt: skip
        nonlocal y
        if not s:
            return
        # characters per line: at most what fits between the margins (DejaVu Sans: ~0.5 em a character, bold ~0.6)
        fits = int(_TEXT_WIDTH_PT / (size * (0.63 if weight == "bold" else 0.53)))
        wrapped = textwrap.fill(s, min(width, fits))
        bbox = {"boxstyle": "round,pad=0.5", "facecolor": box[0], "edgecolor": box[1]} if box else None
        pad = 0.008 if box else 0.0
        # parse_math=False: a '$' in a file name or DICOM value is text, never mathtext
        fig.text(0.07, y - pad, wrapped, fontsize=size, weight=weight, color=colour, va="top", style=style, bbox=bbox,
                 parse_math=False, usetex=False)  # fmt: skip
        y -= (size / 72 * 1.32 / _A4_INCHES[1]) * (wrapped.count("\n") + 1) + gap + 2 * pad

    fig.text(0.07, y, "pneumo · chest X-ray analysis", fontsize=15, weight="bold", va="top", color=ink,
             parse_math=False)  # fmt: skip
    fig.text(0.93, y, "Research demo - not a diagnosis", fontsize=9, weight="bold", va="top", ha="right",
             color="#b00020", parse_math=False)  # fmt: skip
    y -= 0.03
    text(content.file_line, 9, colour="#52606d")
    text(DISCLAIMER, 8.5, style="italic", box=("#fff4e5", "#e0a040"), width=110)
    text(content.out_of_scope, 10.5, "bold", box=("#fdecea", "#b00020"), width=88)
    text(content.probability_line, 11.5, "bold", width=88)
    if content.label:  # ordinary weight and ink: a label at a threshold, not a finding
        text(f"Label at this threshold: {content.label}", 10.5)
    text(content.headline + (" " + content.caution if content.caution else ""), 10, width=95)
    if content.warnings:  # one box for all of them
        text("Warning: " + " ".join(content.warnings), 9.5, "bold", box=("#fff4e5", "#e0a040"), width=95)
    h, w = base.shape[:2]
    img_h = min(0.43 * (h / w) * (_A4_INCHES[0] / _A4_INCHES[1]), img_max / _A4_HEIGHT_MM)
    for i, (im, cap) in enumerate(((base, content.image_titles[0]), (overlay, content.image_titles[1]))):
        ax = fig.add_axes((0.07 + i * 0.44, y - 0.018 - img_h, 0.42, img_h))
        ax.imshow(im, interpolation="antialiased")
        ax.set_title(cap, fontsize=8.5, color="#52606d", parse_math=False, usetex=False)
        ax.set_axis_off()
    y -= 0.018 + img_h + 0.012
    cax = fig.add_axes((0.51 + 0.03, y - 0.008, 0.36, 0.008))
    cax.imshow(heat_lut(content.heat_class).reshape(1, 256, 3), aspect="auto", extent=(0, 1, 0, 1),
               interpolation="nearest")  # fmt: skip
    cax.set_yticks([])
    cax.set_xticks([0, 0.5, 1], ["0", "0.5", "1"], fontsize=6.5)
    cax.set_xlabel(content.colourbar_label, fontsize=6.5, parse_math=False, usetex=False)
    y -= 0.045
    text(content.heatmap_line, 8.5, colour="#52606d", width=110)
    text(content.meaning, 9.5, style="italic", width=100)
    text(content.independent, 9.5, box=("#e8f1fb", "#1565c0"), width=96)
    text(content.validation, 9, width=104)
    text(content.facts, 9, width=104)
    text(INTENDED_USE + (" " + content.external if content.external else ""), 9, "bold",
         box=("#fdecea", "#b00020"), width=100)  # fmt: skip
    text(content.model_line, 8, colour="#52606d", width=118)
    if must_fit and y < 0.035:  # the last box's bottom would pass the bottom margin
        return None
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Title": title})
    return buf.getvalue()


def build_report(
    result: Result,
    threshold: float,
    metadata: dict[str, Any],
    target_class: int = 1,
    alpha: float = 0.45,
    fmt: str = "png",
    when: datetime | None = None,
    evaluation: dict[str, Any] | None = None,
    outline: bool = True,
    reference: str = "",
    show_name: bool = False,
) -> bytes:
    """Render the report of one analysed image as PDF bytes (fpdf2) or PNG bytes (A4 at config.REPORT_PNG_DPI).

    ``outline``: draw the lung outline, as the page's toggle says. ``reference``: the user's own image reference;
    ``show_name``: also print the file name (off by default). The document's metadata never holds the name."""
    if fmt not in ("png", "pdf"):
        raise ValueError("fmt must be 'png' or 'pdf'")
    when = when or datetime.now(UTC)
    content = report_content(result, threshold, metadata, target_class, when, evaluation, reference, show_name)
    base, overlay = _images(result, target_class, alpha, metadata, outline)
    title = "pneumo report (research demo, not a diagnosis)"  # no file name: it may hold a patient's name
    if fmt == "pdf":  # encoded once, laid out at each size tried
        jpegs, bar = (_jpeg(base), _jpeg(overlay)), colourbar_png(content.colourbar_label, content.heat_class)
    for img_max in _IMAGE_HEIGHTS_MM:  # the largest images with which everything fits on one page
        if fmt == "pdf":
            pdf = _pdf(content, base.shape[:2], jpegs, bar, title, img_max)
            if pdf.page_no() == 1 or img_max == _IMAGE_HEIGHTS_MM[-1]:
                return bytes(pdf.output())
        else:
            last = img_max == _IMAGE_HEIGHTS_MM[-1]
            png = _png_report(content, base, overlay, title, config.REPORT_PNG_DPI, img_max, must_fit=not last)
            if png is not None:
                return png
    raise AssertionError("unreachable: the smallest images always give a page")
