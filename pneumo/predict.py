"""Predict pneumonia for chest X-ray files and folders with the committed pneumo models.

Examples:
    python -m pneumo.predict assets/samples/                      # CSV to stdout, committed models
    python -m pneumo.predict --format json scan1.dcm scan2.png
    python -m pneumo.predict --heatmaps out/ folder/               # also one overlay PNG per image
    python -m pneumo.predict --force adult_film.png                # a probability even outside the intended use

Output (CSV; JSON has the same fields): path,probability,label,error,warnings
- probability: P(pneumonia) with 6 decimals; empty for an image outside the intended use (unless --force) or an error.
- label: NORMAL or PNEUMONIA at the model's stored threshold; OUT_OF_SCOPE for an image outside the intended use
  (with --force: NORMAL/PNEUMONIA, and the warnings stay); ERROR for a file that cannot be read (message in error).
- warnings: ';'-separated stable codes (see the README's table, or pneumo.checks.scope.WARNING_CODES).
Exit status: 0 when every file was read (OUT_OF_SCOPE is an answer), 2 when some could not be read or for a usage
error (argparse's), 1 when the models cannot be loaded (the message says what to run). A folder scan names on stderr
every file it skips because of its type, with a count.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image

from pneumo import __version__, config
from pneumo.explain.cam import shown_class
from pneumo.explain.draw import result_overlay
from pneumo.io.decode import load_many
from pneumo.nets.lite import native_stderr_silenced
from pneumo.nets.modelfile import ModelFileError, default_model_path
from pneumo.pipeline import ANALYSIS_DECODE, analyze_stream, load_models, warm_up

log = logging.getLogger("pneumo.predict")

FIELDS = ("path", "probability", "label", "error", "warnings")


@dataclass
class Row:
    path: str
    probability: float | None
    label: str
    error: str = ""
    warnings: str = ""


def collect_files(inputs: list[str]) -> tuple[list[Path], list[Path]]:
    """(files to analyse, files skipped): files given directly are always kept (an unknown type is then reported as
    an ERROR row); in folders, files whose suffix is not an image type are skipped."""
    files: list[Path] = []
    skipped: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            for f in sorted(f for f in p.rglob("*") if f.is_file()):
                (files if f.suffix.lower() in config.IMAGE_SUFFIXES else skipped).append(f)
        else:
            files.append(p)
    return files, skipped


def run(
    files: list[Path],
    model_path: Path,
    heatmap_dir: Path | None = None,
    batch_size: int = 32,
    force: bool = False,
    progress: bool = False,
    workers: int | None = None,
) -> list[Row]:
    """Analyse every file through the one analysis path (pneumo.pipeline), in batches; unreadable files -> ERROR."""
    models = load_models(model_path)  # the TFLite copies; ModelFileError when one is missing or stale
    with native_stderr_silenced():  # one run now, before any worker thread: LiteRT's start-up line stays off stderr
        warm_up(models)
    rows: list[Row] = []
    if heatmap_dir is not None:
        heatmap_dir.mkdir(parents=True, exist_ok=True)

    # decode in a thread pool (the decoders release the GIL) ahead of the analysis, and analyse several batches at
    # once (the networks release it too); the app's decode: same file, same answer
    stream = load_many(files, workers=workers, prefetch=batch_size, **ANALYSIS_DECODE)
    for f, res in analyze_stream(models, stream, batch_size, force=force):
        if isinstance(res, Exception):
            rows.append(Row(str(f), None, "ERROR", str(res)))
        else:
            rows.append(_row(models, f, res, files, heatmap_dir))
        if len(rows) % batch_size == 0:
            _progress(len(rows), len(files), progress)
    _progress(len(rows), len(files), progress)
    return rows


def _row(models, path: Path, res, files: list[Path], heatmap_dir: Path | None) -> Row:
    """One analysed file's row (and its overlay written when asked)."""
    if heatmap_dir is not None and res.has_probability:
        overlay = result_overlay(res, models.classifier.metadata, shown_class(res, None, models.threshold))
        _save_png(overlay, heatmap_dir / _heatmap_name(path, files))
    return Row(str(path), res.probability, res.label, warnings=";".join(res.warnings))


def _progress(done: int, total: int, enabled: bool) -> None:
    if enabled:
        width = 30
        filled = int(width * done / max(total, 1))
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
        if done == total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def _heatmap_name(path: Path, files: list[Path]) -> str:
    """A unique, flat file name for an image's overlay (files of the same name in different folders differ)."""
    stems = [f.stem for f in files]
    if stems.count(path.stem) > 1:
        digest = hashlib.sha256(str(path).encode()).hexdigest()[:8]
        return f"{path.stem}_{digest}_heatmap.png"
    return f"{path.stem}_heatmap.png"


def _save_png(rgb, path: Path) -> None:
    Image.fromarray(rgb).save(path)


def write_rows(rows: list[Row], fmt: str, out) -> None:
    """CSV or JSON with the fields path, probability, label, error, warnings."""
    if fmt == "json":
        json.dump([asdict(r) for r in rows], out, indent=1)
        out.write("\n")
        return
    w = csv.writer(out, lineterminator="\n")
    w.writerow(FIELDS)
    for r in rows:
        w.writerow([r.path, "" if r.probability is None else f"{r.probability:.6f}", r.label, r.error, r.warnings])


def report_skipped(skipped: list[Path], err) -> None:
    """Name every file a folder scan skipped because of its type, with a count, on stderr."""
    if skipped:
        err.write(f"skipped {len(skipped)} file(s) that are not a supported image type:\n")
        for f in skipped:
            err.write(f"  {f}\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="pneumo-predict", description=__doc__.split("\n\n")[0])
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("paths", nargs="+", help="image files (PNG, JPEG, BMP, TIFF, DICOM) or folders (recursive)")
    p.add_argument("--model", type=Path, default=default_model_path(),
                   help=f"a .keras classifier with its .json (default: ${config.MODEL_ENV_VAR} or the committed "
                   "model); its lung model and the scope gate are taken from the same folder")  # fmt: skip
    p.add_argument("--format", choices=("csv", "json"), default="csv")
    p.add_argument("--heatmaps", type=Path, default=None, help="write one heatmap overlay PNG per image here")
    force_help = "give a probability and label even for images outside the intended use (warnings stay)"
    p.add_argument("--force", action="store_true", help=force_help)
    p.add_argument("--batch-size", type=int, default=32,
                   help="images decoded ahead (default 32); the networks run on batches of at most "
                   f"{config.PIPELINE_BATCH}, {config.ANALYSIS_WORKERS} at once")  # fmt: skip
    p.add_argument("--workers", type=int, default=None, help="decoding threads (default: up to 4, one per core)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    files, skipped = collect_files(args.paths)
    report_skipped(skipped, sys.stderr)
    if not files:
        p.error("no image files found in the given paths")
    if not args.model.exists():
        p.error(f"model not found: {args.model}")
    show = not args.quiet and len(files) > args.batch_size and sys.stderr.isatty()
    try:
        rows = run(files, args.model, args.heatmaps, args.batch_size, args.force, show, args.workers)
    except ModelFileError as exc:
        logging.getLogger(__name__).error("%s", exc)
        return 1
    write_rows(rows, args.format, sys.stdout)
    return 2 if any(r.label == "ERROR" for r in rows) else 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
