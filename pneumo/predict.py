"""Predict pneumonia for chest X-ray files and folders with a trained pneumo model.

Examples:
    python -m pneumo.predict assets/samples/                      # csv to stdout, committed model
    python -m pneumo.predict --format json scan1.dcm scan2.png
    python -m pneumo.predict --heatmaps out/ --model models/pneumo_cnn.keras folder/

CSV columns: path,probability,label,error. probability = P(pneumonia) with 6 decimals; label is NORMAL/PNEUMONIA at
the model's stored threshold, or ERROR (with the message) for a file that cannot be read. Exit status: 0 when every
file was read, 2 when some were not (the others are still predicted), 1 for a usage error.
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

import numpy as np

log = logging.getLogger("pneumo.predict")


@dataclass
class Row:
    path: str
    probability: float | None
    label: str
    error: str = ""


def collect_files(inputs: list[str]) -> list[Path]:
    """Files given directly (kept even with an unknown suffix, to be reported) plus image files found in folders."""
    from pneumo import config

    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in config.IMAGE_SUFFIXES)
        else:
            files.append(p)
    return files


def _progress(done: int, total: int, enabled: bool) -> None:
    if enabled:
        width = 30
        filled = int(width * done / max(total, 1))
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
        if done == total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def run(
    files: list[Path], model_path: Path, heatmap_dir: Path | None = None, batch_size: int = 32, progress: bool = False
) -> list[Row]:
    """Predict every file, in batches; unreadable files become ERROR rows."""
    from pneumo.gradcam import explain_batch, heatmap_from_cam, overlay_heatmap
    from pneumo.inference import label_for, predict_proba
    from pneumo.io import ImageLoadError, load_image
    from pneumo.model import load_model
    from pneumo.preprocess import preprocess

    loaded = load_model(model_path)
    size, threshold = loaded.image_size, loaded.threshold
    rows: list[Row] = []
    if heatmap_dir is not None:
        heatmap_dir.mkdir(parents=True, exist_ok=True)
    for start in range(0, len(files), batch_size):
        chunk = files[start : start + batch_size]
        images, inputs, slots = [], [], []
        for f in chunk:
            try:
                img = load_image(f)
            except ImageLoadError as exc:
                rows.append(Row(str(f), None, "ERROR", str(exc)))
                continue
            slots.append(len(rows))
            rows.append(Row(str(f), None, ""))
            images.append(img.pixels)
            inputs.append(preprocess(img.pixels, size))
        if inputs:
            x = np.stack(inputs)  # (B, S, S, 1) uint8
            if heatmap_dir is None:
                probs = predict_proba(loaded.model, x, batch_size)
            else:
                probs, cams = explain_batch(loaded.model, x, loaded.gradcam_layer)
            for j, slot in enumerate(slots):
                p = float(probs[j])
                rows[slot].probability = p
                rows[slot].label = label_for(p, threshold)
                if heatmap_dir is not None:
                    cls = 1 if rows[slot].label == "PNEUMONIA" else 0
                    overlay = overlay_heatmap(images[j], heatmap_from_cam(cams[j], cls, size))
                    _save_png(overlay, heatmap_dir / _heatmap_name(Path(rows[slot].path), files))
        _progress(min(start + batch_size, len(files)), len(files), progress)
    return rows


def _heatmap_name(path: Path, files: list[Path]) -> str:
    """A unique, flat file name for an image's overlay (files of the same name in different folders differ)."""
    stems = [f.stem for f in files]
    if stems.count(path.stem) > 1:
        digest = hashlib.sha256(str(path).encode()).hexdigest()[:8]
        return f"{path.stem}_{digest}_gradcam.png"
    return f"{path.stem}_gradcam.png"


def _save_png(rgb: np.ndarray, path: Path) -> None:
    from PIL import Image

    Image.fromarray(rgb).save(path)


def write_rows(rows: list[Row], fmt: str, out) -> None:
    if fmt == "json":
        json.dump([asdict(r) for r in rows], out, indent=1)
        out.write("\n")
        return
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["path", "probability", "label", "error"])
    for r in rows:
        w.writerow([r.path, "" if r.probability is None else f"{r.probability:.6f}", r.label, r.error])


def main(argv: list[str] | None = None) -> int:
    from pneumo import config

    p = argparse.ArgumentParser(prog="python -m pneumo.predict", description=__doc__.split("\n\n")[0])
    p.add_argument("paths", nargs="+", help="image files (PNG, JPEG, BMP, TIFF, DICOM) or folders (recursive)")
    default_model = Path(os.environ.get(config.MODEL_ENV_VAR, "").strip() or config.DEFAULT_MODEL_PATH)
    p.add_argument(
        "--model",
        type=Path,
        default=default_model,
        help=f"a .keras model with its .json (default: ${config.MODEL_ENV_VAR} or the committed model)",
    )
    p.add_argument("--format", choices=("csv", "json"), default="csv")
    p.add_argument("--heatmaps", type=Path, default=None, help="write one Grad-CAM overlay PNG per image here")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    files = collect_files(args.paths)
    if not files:
        p.error("no image files found in the given paths")
    if not args.model.exists():
        p.error(f"model not found: {args.model}")
    show = not args.quiet and len(files) > args.batch_size and sys.stderr.isatty()
    rows = run(files, args.model, args.heatmaps, args.batch_size, progress=show)
    write_rows(rows, args.format, sys.stdout)
    return 2 if any(r.label == "ERROR" for r in rows) else 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
