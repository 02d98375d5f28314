"""Measurements anyone can run on the validation split, since the test split stays sequestered.

Examples:
    # the committed model: print the measurements and store them in its metadata (models/pneumo_cnn.json)
    python -m pneumo.training.robustness --model models/pneumo_cnn.keras --data DATA/chest_xray \
        --masks DATA/lung_masks --write
    # any folder with the train/{NORMAL,PNEUMONIA} layout (the tests use a tiny synthetic one)
    python -m pneumo.training.robustness --model /tmp/m/tiny.keras --data /tmp/synth

What is measured, all through the one analysis path (pneumo.pipeline.classify_224) on the validation patients:
- border: the outer 16 px of each 224 copy set to the image mean: AUC and specificity must barely move.
- outside the lungs: everything outside the dilated reference lung mask set to the mean: |change in P| per image.
- heatmap in lungs: the share of PNEUMONIA CAM mass inside the reference lung mask on pneumonia images, and of
  NORMAL CAM mass on normal images.
- calibration: ECE (10 bins) and the reliability table.
- deletion (heatmap faithfulness): in the classifier's own input, the lung cells of the explained feature map with the
  most evidence for an image's class are greyed first, and P is measured again; the same number of lung cells chosen
  at random is the control. A faithful map makes P fall (or, for NORMAL, rise) much faster for its top cells.
The reference masks are the data set's lung masks where given (``--masks``), else the model's own.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

from pneumo import __version__, config
from pneumo.checks import lungs
from pneumo.nets.lite import forward_cam
from pneumo.pipeline import Models, classifier_inputs, classify_224, load_models
from pneumo.training import data, metrics
from pneumo.training.data import load_masks

log = logging.getLogger("pneumo.robustness")

BORDER_PX = 16  # the maintainers' border test: the outer 16 px of the 224 copy
DELETION_FRACTIONS = (0.05, 0.1, 0.2, 0.4)  # shares of an image's lung cells greyed in the deletion test


def grey_border(x224: np.ndarray, px: int = BORDER_PX) -> np.ndarray:
    """uint8 (N, 224, 224) -> copy with the outer ``px`` pixels set to each image's mean."""
    out = np.array(x224, copy=True)
    for im in out:
        m = np.uint8(round(float(im.mean())))
        im[:px], im[-px:], im[:, :px], im[:, -px:] = m, m, m, m
    return out


def grey_outside(x224: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """uint8 (N, 224, 224) -> copy with everything outside each dilated mask (N, 224, 224) set to the image mean."""
    out = np.array(x224, copy=True)
    for im, m in zip(out, masks, strict=False):
        grown = lungs.dilate(m)
        im[~grown] = np.uint8(round(float(im.mean())))
    return out


def mass_inside(cam224: np.ndarray, masks: np.ndarray, sign: int) -> np.ndarray:
    """Per image, the share of the positive (sign=1) or negative (sign=-1) CAM mass inside the mask; NaN if none."""
    part = np.maximum(sign * cam224, 0.0)  # (N, 224, 224)
    total = part.reshape(len(part), -1).sum(axis=1)
    inside = (part * masks).reshape(len(part), -1).sum(axis=1)
    return np.where(total > 0, inside / np.maximum(total, 1e-12), np.nan)


def _nanmean(values: np.ndarray) -> float | None:
    """The mean over images that have any mass of that sign (None when none has)."""
    finite = values[np.isfinite(values)]
    return round(float(finite.mean()), 4) if len(finite) else None


def _summary(y: np.ndarray, p: np.ndarray, threshold: float) -> dict:
    m = metrics.metrics_at(y, p, threshold)
    return {k: m[k] for k in ("n", "auc", "sensitivity", "specificity", "ece") if k in m}


def measure(models: Models, x224: np.ndarray, y: np.ndarray, ref_masks: np.ndarray | None) -> dict:
    """All measurements on squashes uint8 (N, 224, 224) with labels (N,); ref_masks bool (N, 224, 224) or None."""
    t = models.threshold
    base = classify_224(models, x224)
    masks = ref_masks if ref_masks is not None else base.masks
    border = classify_224(models, grey_border(x224)).prob
    out: dict = {"threshold": t, "n": int(len(y)), "base": _summary(y, base.prob, t)}
    b = _summary(y, border, t)
    out["border16"] = {**b, "delta_auc": round(b["auc"] - out["base"]["auc"], 4),
                       "delta_specificity": round(b["specificity"] - out["base"]["specificity"], 4),
                       "mean_abs_dp": round(float(np.mean(np.abs(border - base.prob))), 4)}  # fmt: skip
    if masks is not None:
        outside = classify_224(models, grey_outside(x224, masks)).prob
        dp = np.abs(outside - base.prob)
        o = _summary(y, outside, t)
        out["outside_lungs"] = {**o, "mean_abs_dp": round(float(dp.mean()), 4),
                                "p95_abs_dp": round(float(np.percentile(dp, 95)), 4),
                                "max_abs_dp": round(float(dp.max()), 4),
                                "label_flips": int(np.sum((outside >= t) != (base.prob >= t)))}  # fmt: skip
        pos, neg = mass_inside(base.cam224, masks, 1), mass_inside(base.cam224, masks, -1)
        grown = np.stack([lungs.dilate(m) for m in masks])  # what the classifier sees: the mask grown by the margin
        pos_g, neg_g = mass_inside(base.cam224, grown, 1), mass_inside(base.cam224, grown, -1)
        out["heatmap_in_lungs"] = {
            "pneumonia_images_pneumonia_mass_inside": _nanmean(pos[y == 1]),
            "normal_images_normal_mass_inside": _nanmean(neg[y == 0]),
            "pneumonia_images_pneumonia_mass_inside_grown": _nanmean(pos_g[y == 1]),
            "normal_images_normal_mass_inside_grown": _nanmean(neg_g[y == 0]),
            "grown_by_px": config.LUNG_MARGIN_PX,
            "n_pneumonia": int((y == 1).sum()),
            "n_normal": int((y == 0).sum()),
            "masks": "reference lung masks (undilated)" if ref_masks is not None else "the model's own lung masks",
        }
    out["calibration"] = {"ece": metrics.expected_calibration_error(y, base.prob), "bins": reliability(y, base.prob)}
    out["deletion"] = deletion(models, x224, y)
    return out


def _cell_grid(x: np.ndarray, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Lung share per feature cell (B, h, w) and the grey each image is filled with (B,), from inputs (B, S, S, C)."""
    b, size = len(x), x.shape[1]
    if x.shape[-1] > 1:
        mask = x[..., 1].astype(np.float32) / 255.0  # (B, S, S) lung share per pixel
    else:
        mask = np.ones(x.shape[:3], np.float32)
    share = mask.reshape(b, h, size // h, w, size // w).mean(axis=(2, 4))  # (B, h, w)
    lungs_px = mask > 0.5
    fill = np.array(
        [float(im[m].mean()) if m.any() else float(im.mean()) for im, m in zip(x[..., 0], lungs_px, strict=True)]
    )
    return share, fill


def grey_cells(x: np.ndarray, cells: np.ndarray, fill: np.ndarray) -> np.ndarray:
    """Inputs (B, S, S, C) with the image channel of the chosen feature cells (bool (B, h, w)) set to each fill."""
    out = np.array(x, np.float32, copy=True)
    b, size, h = len(x), x.shape[1], cells.shape[1]
    up = np.repeat(np.repeat(cells, size // h, axis=1), size // cells.shape[2], axis=2)  # (B, S, S)
    for i in range(b):
        out[i, ..., 0][up[i]] = fill[i]
    return out


def deletion(models: Models, x224: np.ndarray, y: np.ndarray, seed: int = 0) -> dict:
    """The deletion test of the heatmap on squashes (N, 224, 224) with labels (N,): mean P(pneumonia) after greying
    the top cells of the map for the image's class vs as many random lung cells, per fraction of the lung cells."""
    net, layer = models.classifier.model, models.classifier.gradcam_layer
    rng = np.random.default_rng(seed)
    rows = {f: {"top": [], "random": []} for f in DELETION_FRACTIONS}
    base_p = []
    for i in range(0, len(x224), 32):
        x, _ = classifier_inputs(models, x224[i : i + 32])  # (b, S, S, C)
        p, cam = forward_cam(net, x, layer)  # (b,), (b, h, w)
        share, fill = _cell_grid(x, cam.shape[1], cam.shape[2])
        sign = np.where(y[i : i + 32] == 1, 1.0, -1.0)[:, None, None]  # evidence for the image's own class
        score = np.where(share > 0, sign * cam * share, -np.inf)  # (b, h, w): each lung cell's part of the logit
        order = np.argsort(-score.reshape(len(x), -1), axis=1)  # most evidence first
        n_lung = (share > 0).reshape(len(x), -1).sum(axis=1)  # (b,)
        base_p.append(p)
        for f in DELETION_FRACTIONS:
            top = np.zeros(share.shape, bool).reshape(len(x), -1)
            rand = np.zeros_like(top)
            for j in range(len(x)):
                k = max(1, int(round(f * n_lung[j])))
                top[j, order[j, :k]] = True
                lung_idx = np.flatnonzero(share[j].reshape(-1) > 0)
                rand[j, rng.choice(lung_idx, size=min(k, len(lung_idx)), replace=False)] = True
            for key, cells in (("top", top), ("random", rand)):
                pk, _ = forward_cam(net, grey_cells(x, cells.reshape(share.shape), fill), layer)
                rows[f][key].append(pk)
    base = np.concatenate(base_p)
    out: dict = {"fractions": list(DELETION_FRACTIONS), "grey": "the mean of the image inside its lung mask"}
    for k, name in ((1, "PNEUMONIA"), (0, "NORMAL")):
        sel = y == k
        if not sel.any():
            continue
        per = []
        for f in DELETION_FRACTIONS:
            top, rand = np.concatenate(rows[f]["top"])[sel], np.concatenate(rows[f]["random"])[sel]
            per.append({"fraction": f, "mean_p_top": round(float(top.mean()), 4),
                        "mean_p_random": round(float(rand.mean()), 4)})  # fmt: skip
        out[name] = {"n": int(sel.sum()), "mean_p": round(float(base[sel].mean()), 4), "rows": per}
    return out


def reliability(y: np.ndarray, p: np.ndarray, n_bins: int = 10) -> list[dict]:
    """The reliability table: per probability bin, its count, mean predicted probability and observed frequency."""
    edges = np.linspace(0, 1, n_bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1]), 0, n_bins - 1)
    rows = []
    for b in range(n_bins):
        sel = idx == b
        if sel.any():
            mean_p, observed = round(float(p[sel].mean()), 4), round(float(y[sel].mean()), 4)
            edge = [round(float(edges[b]), 2), round(float(edges[b + 1]), 2)]
            rows.append({"bin": edge, "n": int(sel.sum()), "mean_p": mean_p, "observed": observed})
    return rows


def validation_set(
    data_root: Path, mask_root: Path | None, meta: dict
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The classifier's validation split (same fraction and seed as its training): squashes, labels, masks or None."""
    split = (meta.get("training") or {}).get("settings") or {}
    paths, labels = data.list_split(data_root / "train")
    _, va = data.patient_split(paths, labels, split.get("val_fraction", 0.15), split.get("seed", 1337))
    vpaths = [paths[i] for i in va]
    x224 = data.load_arrays(vpaths, 224, Path(".cache"))[..., 0]
    masks = None
    if mask_root is not None:
        masks = load_masks(vpaths, data_root, mask_root)
        keep = masks.reshape(len(masks), -1).any(axis=1)  # images without a reference mask are left out
        x224, masks, va = x224[keep], masks[keep], va[keep]
    return x224, labels[va], masks


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    p = argparse.ArgumentParser(prog="python -m pneumo.training.robustness", description=__doc__.split("\n\n")[0])
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("--model", type=Path, default=config.DEFAULT_MODEL_PATH)
    p.add_argument("--data", type=Path, required=True, help="folder with train/{NORMAL,PNEUMONIA}")
    p.add_argument("--masks", type=Path, default=None, help="reference lung masks train/{NORMAL,PNEUMONIA}/<stem>.png")
    p.add_argument("--write", action="store_true", help="store the result in the model's metadata as 'robustness'")
    args = p.parse_args(argv)
    models = load_models(args.model, with_gate=False)
    x224, y, masks = validation_set(args.data, args.masks, models.classifier.metadata)
    log.info("validation: %d images (%d pneumonia)", len(y), int(y.sum()))
    result = measure(models, x224, y, masks)
    result["data"] = f"validation split carved from train by patient, {len(y)} images" + (
        " with a reference lung mask" if masks is not None else ""
    )
    sys.stdout.write(json.dumps(result, indent=1) + "\n")
    if args.write:
        meta_file = args.model.with_suffix(".json")
        meta = json.loads(meta_file.read_text())
        meta["robustness"] = result
        meta_file.write_text(json.dumps(meta, indent=1) + "\n")
        log.info("wrote robustness into %s", meta_file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
