"""How results are worded and formatted for people: one function per thing, shared by the app, the report and the CSV.

No Streamlit, no TensorFlow and no file I/O in here: importing this module is cheap, and every page, the report and
the tests format a probability, a threshold or a verdict the same way.

The wording never claims that the model is "confident": it says on which side of the threshold a probability lies and
how far, and adds a sentence whenever the number a person reads could seem to contradict the label (a NORMAL with a
probability above 50 %, a PNEUMONIA below 50 %).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from pneumo import config
from pneumo.checks.scope import WARNING_CODES
from pneumo.pipeline import LABEL_OUT_OF_SCOPE, label_for

DISCLAIMER = (
    "Research demonstration only - not a medical device and not a diagnosis. The model was trained on pediatric "
    "(1-5 years) chest radiographs from a single centre in Guangzhou and has not been validated for clinical use. "
    "Decisions about patients must be made by qualified clinicians."
)

# Distance |logit(p) - logit(t)| below which a result is "near the threshold": a small change of the image or of the
# threshold could flip the label. Above FAR it is "far" from the threshold. Between the two: "clearly".
NEAR_LOGIT = 1.0
FAR_LOGIT = 3.0

# Colours: one per label, one for a result near the threshold (the page, the bar and the report use the same ones).
COLOURS = {"NORMAL": "#1b5e20", "PNEUMONIA": "#b71c1c", "near": "#8a5a00", "neutral": "#37474f"}


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:&])")
# GFM turns bare URLs and e-mail addresses into links after escapes are resolved ("http\://x" still links): a word
# joiner (U+2060, invisible, no line break) inside "http", "www", "ftp", "mailto", "xmpp" and after "@" stops that.
_AUTOLINK = re.compile(r"(?i)(?<=h)(?=ttp)|(?<=w)(?=ww)|(?<=f)(?=tp)|(?<=m)(?=ailto)|(?<=x)(?=mpp)|(?<=@)")
WORD_JOINER = "\u2060"


def literal(text: str) -> str:
    """``text`` (a file name, a DICOM value, a loader's message) made safe to place inside Streamlit markdown: every
    markdown, HTML, LaTeX and emoji-shortcode character backslash-escaped, line breaks turned into spaces, and an
    invisible word joiner (:data:`WORD_JOINER`) where GFM would otherwise turn a bare URL or e-mail into a link."""
    escaped = _MARKDOWN_SPECIAL.sub(r"\\\1", " ".join(str(text).split()))
    return _AUTOLINK.sub(WORD_JOINER, escaped)


def download_stem(name: str) -> str:
    """A download's file-name stem from an uploaded file's name: letters of any script, digits, '-', '_' and '.' only
    (no folder, no control, bidi or markup characters), at most 80 characters; 'image' when nothing is left."""
    stem = str(name).replace("\\", "/").rsplit("/", 1)[-1].rsplit(".", 1)[0]
    return re.sub(r"[^\w.-]+", "_", stem).strip("._")[:80] or "image"


# C0 and C1 control characters and DEL, Unicode line/paragraph separators, bidirectional overrides and isolates (they
# reorder what a terminal shows), and lone surrogates (bytes of a file name that are not UTF-8).
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]")
# First characters that make a spreadsheet read a cell as a formula (ASCII and full-width forms).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20")


def _escape_char(match: re.Match[str]) -> str:
    c = ord(match.group())
    if 0xDC80 <= c <= 0xDCFF:  # a byte that was not UTF-8, kept by Python as a surrogate: shown as that byte
        return f"\\x{c - 0xDC00:02x}"
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def printable(text: str) -> str:
    """``text`` (a file name, a message) with every control character escaped as ``\\xNN`` / ``\\uNNNN``: written to a
    terminal, a CSV or a log it cannot move the cursor, change colours, reorder the line or break it."""
    return _UNPRINTABLE.sub(_escape_char, str(text))


def spreadsheet_safe(text: str) -> str:
    """A text cell for a CSV: control characters escaped (:func:`printable`), and a cell that a spreadsheet would read
    as a formula (starting with = + - @, tab or CR) neutralised with a leading apostrophe. For text columns only:
    numbers are written as they are."""
    text = str(text)
    return ("'" if text.startswith(_FORMULA_START) else "") + printable(text)


def format_probability(probability: float) -> str:
    """A probability as a percentage with one decimal; never '100.0 %' or '0.0 %', which a model cannot know.

    The one formatting function for probabilities: page, results table, report and tests all use it.
    """
    if probability >= 0.9995:
        return "> 99.9%"
    if probability < 0.0005:
        return "< 0.1%"
    return f"{probability:.1%}"


def format_threshold(threshold: float, percent: bool = True) -> str:
    """A threshold in percent like the probabilities ('49%', '43.5%' between the 1 % steps: never rounded away), or
    with two or three decimals (``percent=False``: '0.49', '0.435')."""
    three = abs(round(threshold, 2) - threshold) > 1e-9
    if percent:
        return f"{threshold:.1%}" if three else f"{threshold:.0%}"
    return f"{threshold:.3f}" if three else f"{threshold:.2f}"


def format_interval(value: float, ci: tuple[float, float] | list[float] | None, digits: int = 1) -> str:
    """'97.7% (95% CI 95.7-98.8%)' for a proportion with its interval; just the value without one."""
    if ci is None:
        return f"{value:.{digits}%}"
    return f"{value:.{digits}%} (95% CI {ci[0] * 100:.{digits}f}–{ci[1] * 100:.{digits}f}%)"


def _logit(x: float) -> float:
    x = min(max(float(x), 1e-6), 1 - 1e-6)
    return math.log(x / (1 - x))


@dataclass(frozen=True)
class Verdict:
    """How one probability reads at one threshold: label, position and the sentences that go with it.

    position: 'near' (within NEAR_LOGIT of the threshold), 'clearly' or 'far'.
    headline: e.g. 'P(pneumonia) 23.7% is far below the 97% threshold'.
    caution: a sentence for a label that a person could misread from the number ('' when there is none).
    """

    label: str
    probability: float
    threshold: float
    position: str
    headline: str
    caution: str

    @property
    def colour(self) -> str:
        """The label's colour, or amber when the result is near the threshold."""
        return COLOURS["near"] if self.position == "near" else COLOURS[self.label]

    @property
    def position_text(self) -> str:
        """Two or three words for a metric: 'Near the threshold', 'Far below the threshold', ..."""
        side = "above" if self.label == config.CLASS_NAMES[1] else "below"
        if self.position == "near":
            return f"Near the threshold ({side})"
        return f"{self.position.capitalize()} {side} the threshold"


def verdict(probability: float, threshold: float) -> Verdict:
    """The label and plain words for a probability at a threshold, consistent with both at any threshold."""
    p, t = float(probability), float(threshold)
    label = label_for(p, t)
    d = abs(_logit(p) - _logit(t))
    position = "near" if d < NEAR_LOGIT else "clearly" if d < FAR_LOGIT else "far"
    side = "above" if label == config.CLASS_NAMES[1] else "below"
    cut = format_threshold(t, percent=True)
    shown = format_probability(p)
    # the number leads, not the class: "PNEUMONIA: > 99.9%" would read like a diagnosis with a certainty
    headline = f"P(pneumonia) {shown} is {'' if position == 'near' else position + ' '}{side} the {cut} threshold"
    if position == "near":
        headline = f"P(pneumonia) {shown} is just {side} the {cut} threshold (borderline)"
    caution = ""
    if label == config.CLASS_NAMES[0] and p >= 0.5:
        caution = (
            f"{shown} is above 50%, yet the label is NORMAL: this operating point calls PNEUMONIA only from {cut} on "
            "(a high threshold limits false alarms)."
        )
    elif label == config.CLASS_NAMES[1] and p < 0.5:
        caution = (
            f"{shown} is below 50%, yet the label is PNEUMONIA: the threshold is set low ({cut}) to miss fewer "
            "pneumonias."
        )
    if position == "near":
        caution = (caution + " " if caution else "") + (
            "A slightly different image or threshold could change the label."
        )
    return Verdict(label, p, t, position, headline, caution)


def model_output_line(
    probability: float, threshold: float, stored_threshold: float | None = None, out_of_scope: bool = False
) -> str:
    """The model's output in one plain sentence, as the app and the report both lead with it, e.g. 'Model output:
    P(pneumonia) = 78.0%, at or above the stored threshold 50%: the model's PNEUMONIA side.'

    stored_threshold: the model's own threshold; when ``threshold`` differs, the sentence names both. out_of_scope:
    the image lies outside the intended use: no threshold and no side are spoken of, only that the number means
    nothing. No markdown: safe as plain text and as markdown.
    """
    shown = format_probability(probability)
    shown = shown if shown[0] in "<>" else "= " + shown  # 'P(pneumonia) > 99.9%', never '= > 99.9%'
    if out_of_scope:
        return f"Model output, shown on request and meaningless for this image: P(pneumonia) {shown}."
    label = label_for(float(probability), float(threshold))
    side = "at or above" if label == config.CLASS_NAMES[1] else "below"
    cut = format_threshold(threshold)
    if stored_threshold is None:
        which = f"the threshold {cut}"
    elif abs(float(threshold) - float(stored_threshold)) <= 1e-9:
        which = f"the stored threshold {cut}"
    else:
        which = f"the chosen threshold {cut} (the model's stored threshold is {format_threshold(stored_threshold)})"
    return f"Model output: P(pneumonia) {shown}, {side} {which}: the model's {label} side."


def plain_verdict(probability: float, threshold: float) -> str:
    """One markdown paragraph: the headline and, when needed, the caution (see :func:`verdict`)."""
    v = verdict(probability, threshold)
    text = f"**{v.headline}.**"
    return f"{text} {v.caution}" if v.caution else text


def prevalence(metadata: dict[str, Any]) -> float | None:
    """Share of pneumonia images in the model's training data (from its metadata), or None when not recorded."""
    data = ((metadata.get("training") or {}).get("data")) or {}
    try:
        return int(data["train_pneumonia"]) / int(data["train_images"])
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None


def probability_meaning(
    metadata: dict[str, Any], ece: float | None = None, ece_set: str = "", out_of_scope: bool = False
) -> str:
    """One line on what the probability is and is not (with the training prevalence and, if known, the new-patient
    calibration error). ``out_of_scope``: the image lies outside the intended use, and the line says so."""
    prev = prevalence(metadata)
    where = f"a data set in which {prev:.0%} of images show pneumonia" if prev is not None else "its training data"
    if out_of_scope:
        share = f" ({prev:.0%} of them showing pneumonia)" if prev is not None else ""
        return (
            f"The probability is the model's score for this image, learnt on frontal chest films of young "
            f"children{share}. This image is outside that use: the score means nothing about this patient."
        )
    text = (
        f"The probability is the model's score for this image, learnt on {where}; it is **not** this child's chance "
        "of having pneumonia, which depends on who is X-rayed and why."
    )
    if ece is not None:
        where_measured = f"ECE {ece:.3f}{', ' + ece_set if ece_set else ''}"
        if ece <= config.CALIBRATED_ECE:
            text += (
                f" On new patients of the training hospital its scores were on average within {ece:.1%} of the "
                f"observed frequencies ({where_measured}); elsewhere that is not known."
            )
        else:
            text += f" On new patients it is poorly calibrated ({where_measured})."
    return text


# The validation split chose the threshold (sensitivity floor), and designs were compared on it (an early-stopped
# model's epochs too): its figures at that threshold partly measure the choice itself. Quoted wherever the validation
# operating point is shown.
VALIDATION_CAVEAT = (
    "This split also chose the threshold (sensitivity kept at or above 95%) and the design was compared on it: its "
    "sensitivity at the model's threshold is a target that was met, not a measurement."
)


# ---- intervals and operating points -------------------------------------------------------------------------------
def too_few(n: Any) -> str:
    """'too few images to mean much (n = 15)' for a figure resting on fewer than config.FEW_IMAGES images, else ''."""
    try:
        count = int(n)
    except (TypeError, ValueError):
        return ""
    return f"too few images to mean much (n = {count})" if count < config.FEW_IMAGES else ""


def wilson(successes: int, n: int, z: float = 1.959964) -> tuple[float, float] | None:
    """Wilson 95 % score interval for a proportion successes/n; None when n is 0."""
    if n <= 0:
        return None
    p = successes / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class OperatingPoint:
    """Validation sensitivity and specificity at one threshold, as stored in the model metadata.

    n_pneumonia / n_normal: how many validation images each figure rests on (0 when unknown); the intervals are
    Wilson 95 % intervals from those counts (None when unknown).
    """

    threshold: float
    sensitivity: float
    specificity: float
    n_pneumonia: int = 0
    n_normal: int = 0

    @property
    def sensitivity_ci(self) -> tuple[float, float] | None:
        return wilson(round(self.sensitivity * self.n_pneumonia), self.n_pneumonia)

    @property
    def specificity_ci(self) -> tuple[float, float] | None:
        return wilson(round(self.specificity * self.n_normal), self.n_normal)


def operating_point(metadata: dict[str, Any], threshold: float) -> OperatingPoint | None:
    """The stored operating point nearest to ``threshold`` (within 0.006), or None when the metadata has none."""
    points = metadata.get("operating_points") or []
    if not points:
        return None
    best = min(points, key=lambda p: abs(float(p["threshold"]) - threshold))
    if abs(float(best["threshold"]) - threshold) > 0.006:
        return None
    val = (metadata.get("metrics") or {}).get("validation") or {}
    return OperatingPoint(
        float(best["threshold"]),
        float(best["sensitivity"]),
        float(best["specificity"]),
        int(val.get("n_pneumonia", 0) or 0),
        int(val.get("n_normal", 0) or 0),
    )


# ---- results table -------------------------------------------------------------------------------------------------
# ---- warnings and scope ---------------------------------------------------------------------------------------------
# Which reason leads a refusal: the most specific first (what the image is, before how it looks); "small" and other
# remarks never lead.
REFUSAL_ORDER: tuple[str, ...] = (
    "uniform", "not_radiograph", "colour", "not_chest", "not_frontal", "adult", "orientation_unclear",
)  # fmt: skip


def refusal_sentences(warnings: Any) -> list[str]:
    """Why an image was refused, in at most two sentences: the most specific out-of-scope reason, then at most one
    supporting remark (a warning, not another kind); [] when no code refuses it."""
    codes = [str(w) for w in (warnings or ())]
    reasons = [c for c in REFUSAL_ORDER if c in codes]
    if not reasons:
        return []
    # the remark supports the reason: a remark such as "small", never a second kind that contradicts the first
    # (a CT slice is not also "an X-ray of another body part")
    remarks = [c for c in codes if c not in REFUSAL_ORDER]
    return warning_sentences(reasons[:1] + remarks[:1])


def warning_sentences(warnings: Any) -> list[str]:
    """Plain sentences for a result's warning codes (pneumo.checks.scope.WARNING_CODES); anything else as it is."""
    return [WARNING_CODES.get(str(w), str(w)) for w in (warnings or ())]


def is_out_of_scope(result: Any) -> bool:
    """True when a Result lies outside the intended use: its result is shown only on request and marked as such."""
    return result.label == LABEL_OUT_OF_SCOPE or not result.in_scope
