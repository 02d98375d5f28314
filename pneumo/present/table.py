"""One result schema for every table pneumo writes: the app's CSV download, the CLI's CSV, JSON and JSON Lines, and
the batch job's rows. Documented once, in the README ("Result table").

Columns (in this order):

- ``path``: the file as given (the CLI: its path; the app: the uploaded file's name), control characters escaped.
- ``probability``: P(pneumonia); CSV: 6 decimals, JSON: a number rounded to 6 decimals; empty / null for an
  unreadable file and for an image outside the intended use (unless the CLI's ``--force``).
- ``label``: ``NORMAL`` or ``PNEUMONIA`` at ``threshold``; ``OUT_OF_SCOPE`` (outside the intended use) or ``ERROR``.
- ``threshold``: the decision threshold the label was taken at (the model's stored one, or the app's slider).
- ``error``: why a file could not be read (empty otherwise).
- ``warnings``: stable codes (pneumo.checks.scope.WARNING_CODES); CSV: ``;``-separated, JSON: a list.
- ``note``: the same in plain words (for an image outside the intended use: its main reason and at most one remark).
- ``heatmap`` (CLI with ``--heatmaps`` only): the overlay file written for the row, empty when none was drawn.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pneumo.pipeline import LABEL_ERROR, LABEL_OUT_OF_SCOPE, label_for
from pneumo.present.text import (
    format_probability,
    printable,
    refusal_sentences,
    spreadsheet_safe,
    verdict,
    warning_sentences,
)

COLUMNS: tuple[str, ...] = ("path", "probability", "label", "threshold", "error", "warnings", "note")
HEATMAP_COLUMN = "heatmap"  # the extra column of the CLI with --heatmaps
PROBABILITY_DECIMALS = 6  # finer than any difference the networks' float32 output can carry
THRESHOLD_DECIMALS = 4  # the slider moves in whole percent; stored thresholds have 2 decimals


@dataclass(frozen=True)
class Row:
    """One file's line of the result table (texts already escaped with :func:`printable`)."""

    path: str
    probability: float | None
    label: str
    threshold: float
    error: str = ""
    warnings: tuple[str, ...] = ()
    note: str = ""
    heatmap: str = ""

    def csv_cells(self, columns: Sequence[str] = COLUMNS) -> list[str]:
        """The row's CSV cells: numbers as numbers, text cells spreadsheet-safe."""
        cells = []
        for c in columns:
            value = getattr(self, c)
            if c == "probability":
                cells.append("" if value is None else f"{value:.{PROBABILITY_DECIMALS}f}")
            elif c == "threshold":
                cells.append(f"{value:.{THRESHOLD_DECIMALS}f}")
            elif c == "warnings":
                cells.append(spreadsheet_safe(";".join(value)))
            else:
                cells.append(spreadsheet_safe(value))
        return cells

    def record(self, columns: Sequence[str] = COLUMNS) -> dict[str, Any]:
        """The row as a JSON object: probability and threshold as rounded numbers, warnings as a list."""
        out: dict[str, Any] = {}
        for c in columns:
            value = getattr(self, c)
            if c == "probability":
                value = None if value is None else round(float(value), PROBABILITY_DECIMALS)
            elif c == "threshold":
                value = round(float(value), THRESHOLD_DECIMALS)
            elif c == "warnings":
                value = list(value)
            out[c] = value
        return out


def error_row(path: str, error: str, threshold: float) -> Row:
    """The row of a file that could not be read."""
    return Row(
        printable(path), None, LABEL_ERROR, threshold, error=printable(error), note="The file could not be read."
    )


def result_row(result: Any, threshold: float, path: str | None = None) -> Row:
    """The row of one pipeline Result at ``threshold`` (``path``: how to name the file; default: its name).

    An image outside the intended use gets OUT_OF_SCOPE and no probability, unless the analysis was forced (the
    CLI's --force gives it a NORMAL/PNEUMONIA label, and its warnings stay)."""
    name = result.name if path is None else path
    if result.error:
        return error_row(name, result.error, threshold)
    codes = tuple(printable(w) for w in (result.warnings or ()))
    if result.label == LABEL_OUT_OF_SCOPE or result.probability is None:
        note = " ".join(refusal_sentences(codes)) or "Outside the intended use."
        return Row(printable(name), None, LABEL_OUT_OF_SCOPE, threshold, warnings=codes, note=note)
    p = float(result.probability)
    note = " ".join(warning_sentences(codes))
    return Row(printable(name), p, label_for(p, threshold), threshold, warnings=codes, note=note)


def csv_line(cells: Iterable[str]) -> str:
    """One CSV line (the csv module's quoting, ``\\n`` endings)."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(list(cells))
    return buf.getvalue()


def to_csv(rows: Iterable[Row], columns: Sequence[str] = COLUMNS) -> bytes:
    """A whole table as UTF-8 CSV bytes, header first."""
    return (csv_line(columns) + "".join(csv_line(r.csv_cells(columns)) for r in rows)).encode("utf-8")


def display_rows(results: Iterable[Any], threshold: float) -> list[dict[str, Any]]:
    """The app's results table: each file's schema row (:func:`result_row`) plus what the page shows with it:
    ``file``, ``probability``, ``shown`` (the probability exactly as the detail formats it), ``label``, ``position``,
    ``note`` (the error for an unreadable file) and ``n_warnings``."""
    out = []
    for r in results:
        row = result_row(r, threshold)
        p = row.probability
        out.append(
            {
                "file": row.path,
                "probability": p,
                "shown": "–" if p is None else format_probability(p),
                "label": row.label,
                "position": "" if p is None else verdict(p, threshold).position_text,
                "note": row.error or row.note,
                "n_warnings": len(row.warnings),
            }
        )
    return out
