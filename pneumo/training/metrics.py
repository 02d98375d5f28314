"""Classification metrics and the threshold rule, shared by training, the model card and the tests."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from pneumo.checks import lungs
from pneumo.nets.modelfile import Network

# The grid on which operating points are tabulated for the app's threshold control.
THRESHOLD_GRID = np.round(np.arange(0.01, 1.0, 0.01), 2)

THRESHOLD_RULE = (
    "Sensitivity floor: the highest threshold on the grid 0.01..0.99 (step 0.01) at which sensitivity on the "
    "patient-level validation split is still >= {min_sensitivity:.2f}; this maximises specificity subject to that "
    "sensitivity. Youden's J is not used because the validation split carved from train is much easier than unseen "
    "patients: on it almost any threshold is optimal, and the low thresholds Youden picks cost specificity on new "
    "normals."
)


def confusion(y_true: np.ndarray, prob: np.ndarray, threshold: float) -> dict[str, int]:
    """Counts at ``prob >= threshold`` -> PNEUMONIA (positive)."""
    y = np.asarray(y_true).astype(bool)
    pred = np.asarray(prob) >= threshold
    return {
        "tp": int(np.sum(pred & y)),
        "fn": int(np.sum(~pred & y)),
        "tn": int(np.sum(~pred & ~y)),
        "fp": int(np.sum(pred & ~y)),
    }


def expected_calibration_error(y_true: np.ndarray, prob: np.ndarray, n_bins: int = 10) -> float:
    """ECE with equal-width bins over P(pneumonia): sum_b |B|/N * |mean(y in B) - mean(p in B)|."""
    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(prob, dtype=np.float64)
    bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        m = bins == b
        if m.any():
            ece += m.mean() * abs(y[m].mean() - p[m].mean())
    return float(ece)


def metrics_at(y_true: np.ndarray, prob: np.ndarray, threshold: float) -> dict[str, float | int | dict]:
    """AUC, accuracy, sensitivity, specificity, ECE and the confusion matrix at a threshold."""
    y = np.asarray(y_true).astype(int)
    c = confusion(y, prob, threshold)
    pos, neg = c["tp"] + c["fn"], c["tn"] + c["fp"]
    out: dict[str, float | int | dict] = {
        "n": int(len(y)),
        "n_normal": int(neg),
        "n_pneumonia": int(pos),
        "threshold": float(threshold),
        "accuracy": (c["tp"] + c["tn"]) / max(len(y), 1),
        "sensitivity": c["tp"] / pos if pos else float("nan"),
        "specificity": c["tn"] / neg if neg else float("nan"),
        "auc": float(roc_auc_score(y, prob)) if pos and neg else float("nan"),
        "ece": expected_calibration_error(y, prob),
        "confusion": c,
    }
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in out.items()}


def operating_points(y_true: np.ndarray, prob: np.ndarray) -> list[dict[str, float]]:
    """Sensitivity and specificity at each threshold of :data:`THRESHOLD_GRID`."""
    y = np.asarray(y_true).astype(bool)
    p = np.asarray(prob)
    pts = []
    for t in THRESHOLD_GRID:
        pred = p >= t
        sens = float(np.mean(pred[y])) if y.any() else float("nan")
        spec = float(np.mean(~pred[~y])) if (~y).any() else float("nan")
        pts.append({"threshold": float(t), "sensitivity": round(sens, 4), "specificity": round(spec, 4)})
    return pts


def choose_threshold(y_true: np.ndarray, prob: np.ndarray, min_sensitivity: float = 0.95) -> float:
    """The sensitivity-floor threshold (see :data:`THRESHOLD_RULE`); the lowest grid value if none reaches it."""
    pts = operating_points(y_true, prob)
    ok = [p["threshold"] for p in pts if p["sensitivity"] >= min_sensitivity]
    return float(max(ok)) if ok else float(THRESHOLD_GRID[0])


def roc_points(y_true: np.ndarray, prob: np.ndarray, max_points: int = 200) -> dict[str, list[float]]:
    """A downsampled ROC curve (fpr, tpr) for plotting from metadata."""
    fpr, tpr, _ = roc_curve(np.asarray(y_true).astype(int), prob)
    if len(fpr) > max_points:
        idx = np.unique(np.linspace(0, len(fpr) - 1, max_points).round().astype(int))
        fpr, tpr = fpr[idx], tpr[idx]
    return {"fpr": [round(float(v), 4) for v in fpr], "tpr": [round(float(v), 4) for v in tpr]}


def lung_figures(net: Network, x224: np.ndarray, m224: np.ndarray, threshold: float = 0.5) -> dict:
    """Dice/IoU at 224 (raw threshold and post-processed) of a lung network (a U-Net, or a gate with a lung head) on
    squashes uint8 (N, 224, 224) against reference masks bool (N, 224, 224); per-image lists kept out."""
    if len(x224) == 0:
        return {"n": 0}
    prob = lungs.lung_probability(net, x224)  # (N, 224, 224)
    raw = [lungs.dice(p >= threshold, m) for p, m in zip(prob, m224, strict=False)]
    post = lungs.masks_from(prob, threshold)  # (N, 224, 224) bool
    d = np.array([lungs.dice(a, m) for a, m in zip(post, m224, strict=False)])
    j = np.array([lungs.iou(a, m) for a, m in zip(post, m224, strict=False)])
    plaus = np.array([lungs.plausible(a) for a in post])
    return {
        "n": int(len(m224)),
        "dice_raw_mean": round(float(np.mean(raw)), 4),
        "dice_mean": round(float(d.mean()), 4),
        "dice_median": round(float(np.median(d)), 4),
        "dice_p05": round(float(np.percentile(d, 5)), 4),
        "iou_mean": round(float(j.mean()), 4),
        "plausible_share": round(float(plaus.mean()), 4),
    }
