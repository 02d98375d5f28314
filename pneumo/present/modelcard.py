"""Model-card content read from a model's JSON metadata: metric tables and ROC / confusion / threshold plots.

Every number shown comes from the metadata written by training; nothing here computes a metric itself.
"""

from __future__ import annotations

import io
import re
import textwrap
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from pneumo.present.text import format_interval, format_threshold, too_few, wilson

# The one title of the data set (the model card, the README and the About page use it).
DATASET = (
    "Kermany, Zhang, Goldbaum (2018), Labeled Optical Coherence Tomography (OCT) and Chest X-Ray Images for "
    "Classification, Mendeley Data v2, doi:10.17632/rscbjbr9sj.2, CC BY 4.0 (the chest X-ray part, often called "
    "'Chest X-Ray Images (Pneumonia)')"
)

# Each metrics block of the metadata: a short name and what it was measured on; unknown keys show their own name.
SPLITS = {
    "validation": (
        "Validation split",
        "whole patients held out of the data set's training folder; the same split chose the threshold (the "
        "highest keeping its sensitivity >= 95%) and, for a model trained with early stopping, the epoch, so its "
        "sensitivity there is a target that was met, not a measurement, and its other figures are optimistic",
    ),
    "test": ("Official test folder", "the data set's official test folder, never used for training or any choice"),
    "official_val": (
        "Official 'val' folder",
        "the data set's official 'val' folder: 16 images (8 normal), so one image moves specificity by 12.5 points; "
        "shown because the data set ships it, too few to conclude anything",
    ),
    "train": ("Training images", "images the model was trained on (optimistic)"),
}
_METRIC_NAMES = (
    ("auc", "ROC AUC"),
    ("accuracy", "accuracy"),
    ("sensitivity", "sensitivity"),
    ("specificity", "specificity"),
    ("ece", "ECE"),
    ("threshold", "threshold"),
)


def split_label(split: str) -> str:
    """Short name of a metrics block's key, e.g. 'test' -> 'Official test folder'."""
    return SPLITS.get(split, (split.replace("_", " ").capitalize(), ""))[0]


def split_description(split: str) -> str:
    """What a metrics block was measured on, in plain words."""
    return SPLITS.get(split, ("", f"the '{split}' data recorded in the metadata"))[1]


def metric_rows(metadata: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per metrics block in the metadata (validation first, then test, then the others)."""
    metrics = metadata.get("metrics", {}) or {}
    order = sorted(metrics, key=lambda k: ({"validation": 0, "test": 1, "official_val": 2}.get(k, 3), k))
    rows = []
    for split in order:
        block = metrics[split] or {}
        row: dict[str, Any] = {"data": split_label(split), "images": str(block.get("n", "?"))}
        if "n_normal" in block and "n_pneumonia" in block:
            row["images"] = f"{block.get('n', '?')} ({block['n_normal']} normal, {block['n_pneumonia']} pneumonia)"
        for key, title in _METRIC_NAMES:
            row[title] = block.get(key)
        few = too_few(block.get("n"))
        if few:  # figures on a handful of images (the official 'val' folder's 16) are not presented as figures
            row.update({title: few for key, title in _METRIC_NAMES if key != "threshold" and row[title] is not None})
            rows.append(row)
            continue
        conf = block.get("confusion") or {}
        for key, hit, total in (("sensitivity", "tp", ("tp", "fn")), ("specificity", "tn", ("tn", "fp"))):
            if block.get(key) is not None and conf:
                n = sum(int(conf.get(k, 0)) for k in total)
                row[key] = format_interval(float(block[key]), wilson(int(conf.get(hit, 0)), n)) + f", n={n}"
            elif block.get(key) is not None:
                row[key] = f"{float(block[key]):.1%}"
        rows.append(row)
    return rows


# What each metrics block's figures were drawn on, in a figure's title (the counts come from the metadata).
_FIGURE_DATA = {
    "validation": "validation patients carved from the training folder",
    "test": "the official test folder",
    "official_val": "the official 'val' folder",
}


def data_caption(metadata: dict[str, Any], split: str = "validation", n: int | None = None) -> str:
    """What a figure of ``split`` was drawn on and how many images, read from the metadata, e.g. 'validation patients
    carved from the training folder, n = 784 (202 normal / 582 pneumonia)'. ``n``: the figure's own count when it is
    drawn from another record (the class counts are given only when it is the metrics block's n)."""
    block = (metadata.get("metrics") or {}).get(split) or {}
    what = _FIGURE_DATA.get(split, split_label(split))
    count = block.get("n") if n is None else n
    if count is None:
        return f"{what}, n not recorded"
    text = f"{what}, n = {count:,}" if isinstance(count, int) else f"{what}, n = {count}"
    if "n_normal" in block and "n_pneumonia" in block and str(block.get("n")) == str(count):
        text += f" ({block['n_normal']:,} normal / {block['n_pneumonia']:,} pneumonia)"
    return text


def _confusion(block: dict[str, Any]) -> np.ndarray | None:
    """2x2 int array [[tn, fp], [fn, tp]] (rows = true NORMAL, PNEUMONIA) from a metrics block, or None."""
    c = block.get("confusion")
    if not c:
        return None
    return np.array([[c["tn"], c["fp"]], [c["fn"], c["tp"]]], dtype=int)


def evaluation_figure(metadata: dict[str, Any], split: str = "validation") -> Figure | None:
    """ROC curve, confusion matrix and sensitivity/specificity versus threshold for one split; None without data."""
    roc = (metadata.get("roc") or {}).get(split)
    block = (metadata.get("metrics") or {}).get(split, {})
    conf = _confusion(block)
    points = metadata.get("operating_points") if split == "validation" else None
    have = {"roc": roc is not None, "confusion": conf is not None, "points": bool(points)}
    panels = [p for p in ("roc", "confusion", "points") if have[p]]
    if not panels:
        return None
    fig = Figure(figsize=(3.4 * len(panels), 3.6), layout="constrained")  # narrow: larger text at page width
    fig.suptitle(data_caption(metadata, split).capitalize(), fontsize=10)  # the data and its n, on every panel's row
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    threshold = float(metadata.get("threshold", 0.5))
    for ax, panel in zip(axes, panels, strict=True):
        if panel == "roc":
            ax.plot(roc["fpr"], roc["tpr"], color="#1565c0", lw=2, label=f"AUC {block.get('auc', float('nan')):.3f}")
            ax.plot([0, 1], [0, 1], ls="--", color="#9e9e9e", lw=1, label="chance")
            if "sensitivity" in block and "specificity" in block:
                ax.plot(1 - block["specificity"], block["sensitivity"], "o", color="#c62828",
                        label=f"threshold {format_threshold(threshold)}")  # fmt: skip
            ax.set_xlabel("1 - specificity (false-positive rate)")
            ax.set_ylabel("sensitivity (true-positive rate)")
            ax.set_title("ROC curve")
            ax.set_aspect("equal")
            ax.legend(loc="lower right", fontsize=9)
        elif panel == "confusion":
            ax.imshow(conf, cmap="Blues", vmin=0)
            for (i, j), v in np.ndenumerate(conf):
                ax.text(j, i, str(v), ha="center", va="center", fontsize=14,
                        color="white" if v > conf.max() / 2 else "black")  # fmt: skip
            ax.set_xticks([0, 1], ["NORMAL", "PNEUMONIA"])
            ax.set_yticks([0, 1], ["NORMAL", "PNEUMONIA"])
            ax.set_xlabel("predicted")
            ax.set_ylabel("true")
            ax.set_title(f"Confusion at threshold {format_threshold(float(block.get('threshold', threshold)))}")
        else:
            t = [p["threshold"] for p in points]
            ax.plot(t, [p["sensitivity"] for p in points], color="#c62828", lw=2, label="sensitivity")
            ax.plot(t, [p["specificity"] for p in points], color="#2e7d32", lw=2, label="specificity")
            ax.axvline(threshold, color="#424242", ls="--", lw=1, label=f"default {format_threshold(threshold)}")
            ax.set_xlabel("threshold")
            ax.xaxis.set_major_formatter(PercentFormatter(xmax=1))  # in percent, like the app's slider
            ax.set_ylim(-0.02, 1.02)
            ax.set_title("Operating points")
            ax.legend(loc="lower center", fontsize=9)
    return fig


def training_figure(metadata: dict[str, Any]) -> Figure | None:
    """Loss and AUC by epoch for each ensemble member, from the metadata's histories: one colour per member, dotted
    for the training split, solid for validation; two short legends instead of one entry per line. None when the
    metadata has no history."""
    training = metadata.get("training") or {}
    histories = training.get("member_histories") or ([training["history"]] if training.get("history") else [])
    histories = [h for h in histories if isinstance(h, dict) and h.get("loss") and h.get("val_loss")]
    if not histories:
        return None
    fig = Figure(figsize=(8.2, 3.6), layout="constrained")
    fig.suptitle(textwrap.fill(training_caption(metadata), 110), fontsize=9.5)
    axes = fig.subplots(1, 2)
    colours = ["#1565c0", "#ef6c00", "#2e7d32", "#6a1b9a", "#c62828"]
    for i, h in enumerate(histories):
        c = colours[i % len(colours)]
        for ax, key in zip(axes, ("loss", "auc"), strict=True):
            ep = np.arange(1, len(h[key]) + 1)
            ax.plot(ep, h[key], ":", color=c, lw=1.4)
            ax.plot(ep, h[f"val_{key}"], "-", color=c, lw=1.6, label=f"member {i + 1}" if len(histories) > 1 else "")
    for ax, title in zip(axes, ("Loss", "AUC"), strict=True):
        ax.set_xlabel("epoch", fontsize=10)
        ax.set_title(title, fontsize=11)
        ax.tick_params(labelsize=9)
        ax.grid(alpha=0.25)
    if len(histories) > 1:
        axes[0].legend(fontsize=9, loc="upper right", title="colour", title_fontsize=9)
    styles = [axes[1].plot([], [], ":", color="#37474f")[0], axes[1].plot([], [], "-", color="#37474f")[0]]
    axes[1].legend(styles, ["training images", "validation split"], fontsize=9, loc="lower right")
    return fig


def training_caption(metadata: dict[str, Any]) -> str:
    """The data of the training curves and their n, from the metadata: 'Dotted: the training images (n = 4,432);
    solid: validation patients carved from the training folder, n = 784 (202 normal / 582 pneumonia)'."""
    folder = ((metadata.get("training") or {}).get("data") or {}).get("train_images")
    held = (metadata.get("validation_split") or {}).get("images", ((metadata.get("metrics") or {}).get("validation")
                                                                   or {}).get("n"))  # fmt: skip
    train = "the training images"
    if isinstance(folder, int) and isinstance(held, int) and held < folder:  # the folder less the carved patients
        train = f"the training folder less the validation split, n = {folder - held:,}"
    return f"Dotted: {train}; solid: {data_caption(metadata, 'validation')}"


def figure_png(fig: Figure, dpi: int = 110) -> bytes:
    """PNG bytes of a figure."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


_DATA_ARG = re.compile(r"(--data\s+)(?!<)(\S+)")
# a path outside the repository (absolute, or climbing out of it): the machine's, not the reader's
_OUTSIDE_PATH = re.compile(r"(?<=\s)(?:/|\.\./)\S*?([^/\s]+)/?(?=\s|$)")


def portable_command(command: str) -> str:
    """A training command as a reader can run it: the data path as ``<data folder>``, other paths outside the
    repository as ``<name>`` (``../data/lung_masks`` -> ``<lung_masks>``), one option per line."""
    command = command or "python -m pneumo.training.train --data <data folder> --out models/"
    command = _OUTSIDE_PATH.sub(r"<\1>", _DATA_ARG.sub(r"\1<data folder>", command))
    return re.sub(r"\s+(?=--)", " \\\n  ", command)  # a backslash continuation before each option


def portable_settings(training: dict[str, Any]) -> dict[str, Any]:
    """Training settings and facts for display, without machine-specific paths (the decoded-image cache)."""
    out = {k: training.get(k) for k in ("preset", "settings", "epochs_run", "best_epoch", "seconds", "machine")}
    histories = training.get("member_histories") or []
    if histories:  # epochs_run/best_epoch describe the first member only: say so, and give every member's
        out["epochs_run (member 1)"], out["best_epoch (member 1)"] = out.pop("epochs_run"), out.pop("best_epoch")
        out["epochs_run per member"] = [len(h.get("val_auc") or h.get("loss") or []) for h in histories]
        out["best_epoch per member (highest validation AUC)"] = [
            1 + max(range(len(h["val_auc"])), key=h["val_auc"].__getitem__) if h.get("val_auc") else None
            for h in histories
        ]
    if isinstance(out.get("settings"), dict):  # paths outside the repository as <name>, like the command
        out["settings"] = {
            k: _OUTSIDE_PATH.sub(r"<\1>", f" {v}").strip() if isinstance(v, str) else v
            for k, v in out["settings"].items()
            if k != "cache_dir"
        }
    return out


def display_rows(rows: list[dict[str, Any]]) -> list[dict[str, str]]:
    """metric_rows() as display strings: AUC and ECE with three decimals, accuracy in percent, '–' for missing."""

    def fmt(key: str, value: Any) -> str:
        if value is None:
            return "–"
        if isinstance(value, str):
            return value
        if key in ("ROC AUC", "ECE"):
            return f"{value:.3f}"
        if key == "threshold":
            return format_threshold(float(value))
        return f"{value:.1%}"

    return [{k: fmt(k, v) for k, v in row.items()} for row in rows]


# ---- anatomy: lung segmentation, robustness tests, heatmap in lungs, calibration ----------------------------------
def _fmt(value: Any, spec: str = ".3f") -> str:
    return "–" if value is None else format(value, spec)


def lung_rows(lung_metadata: dict[str, Any]) -> list[dict[str, str]]:
    """Segmentation quality per validation subset: n, Dice (mean, median, 5th percentile), IoU, plausible masks, from
    a U-Net's metadata or a gate's with a lung head."""
    m = lung_metadata.get("metrics") or {}
    shared = "lungs_validation" in m  # a gate with a lung head keeps its own figures beside the lung head's
    subsets = [("all validation images", m.get("lungs_validation" if shared else "validation") or {})]
    by_class = m.get("lungs_validation_by_class" if shared else "validation_by_class") or {}
    subsets += [(f"{k} images", v) for k, v in by_class.items()]
    return [
        {"images": name, "n": str(b.get("n", "–")), "Dice (mean)": _fmt(b.get("dice_mean")),
         "Dice (median)": _fmt(b.get("dice_median")), "Dice (5th percentile)": _fmt(b.get("dice_p05")),
         "IoU (mean)": _fmt(b.get("iou_mean")), "two plausible lungs": _fmt(b.get("plausible_share"), ".1%")}
        for name, b in subsets if b
    ]  # fmt: skip


ROBUSTNESS_TESTS = (
    ("base", "as given"),
    ("border16", "outer 16 px set to the image mean"),
    ("outside_lungs", "everything outside the (dilated) lung mask set to the mean"),
)


def robustness_rows(metadata: dict[str, Any]) -> list[dict[str, str]]:
    """The robustness tests at the stored threshold: one row per perturbation of the validation images."""
    rob = metadata.get("robustness") or {}
    rows = []
    for key, what in ROBUSTNESS_TESTS:
        b = rob.get(key)
        if b:
            rows.append({"validation images": what, "n": str(b.get("n", "–")), "AUC": _fmt(b.get("auc")),
                         "sensitivity": _fmt(b.get("sensitivity"), ".1%"),
                         "specificity": _fmt(b.get("specificity"), ".1%"),
                         "mean |change in P|": "–" if key == "base" else _fmt(b.get("mean_abs_dp"))})  # fmt: skip
    return rows


def heatmap_sentence(metadata: dict[str, Any]) -> str:
    """Where the heatmap evidence lies, in one sentence with its data and n ('' when not measured)."""
    h = (metadata.get("robustness") or {}).get("heatmap_in_lungs")
    if not h:
        return ""
    pos, neg = h.get("pneumonia_images_pneumonia_mass_inside"), h.get("normal_images_normal_mass_inside")
    text = (
        f"On {h['n_pneumonia']} validation pneumonia images, {_fmt(pos, '.0%')} of the PNEUMONIA heatmap mass lies "
        f"inside the lung fields; on {h['n_normal']} validation normal images, {_fmt(neg, '.0%')} of the NORMAL "
        f"heatmap mass does ({h.get('masks', 'reference lung masks')})."
    )
    grown = h.get("pneumonia_images_pneumonia_mass_inside_grown")
    if grown is not None:
        text += (
            f" Within the lung fields grown by {h.get('grown_by_px', '?')} px: {_fmt(grown, '.1%')} and "
            f"{_fmt(h.get('normal_images_normal_mass_inside_grown'), '.1%')}."
        )
    if metadata.get("channels") == 2:
        text += (
            " This classifier averages its last features over the lung mask only (masked average pooling), so "
            "evidence outside the mask counts for nothing and the map is drawn inside the mask only; what lies "
            "outside the reference fields is where the model's mask and the hand-drawn one disagree."
        )
    elif grown is not None:
        text += (
            " The map has one value per 10 x 10 cell of the lung box (about 15 px at 224), so evidence at the lung "
            "borders (hila, heart borders, apices) spills across them."
        )
    return text


def deletion_sentence(metadata: dict[str, Any]) -> str:
    """What the deletion test says of each class's map, at the largest share of lung cells greyed ('' when not
    measured): how much further the top cells move P away from the class than random cells do."""
    d = (metadata.get("robustness") or {}).get("deletion") or {}
    parts = []
    for name, sign in (("PNEUMONIA", 1.0), ("NORMAL", -1.0)):
        rows = (d.get(name) or {}).get("rows") or []
        if not rows:
            continue
        last = rows[-1]
        gap = sign * (last["mean_p_random"] - last["mean_p_top"])  # > 0: the top cells matter more than random ones
        verdict = (
            "faithful by this test"
            if gap >= 0.05
            else "no better than random cells: read it as where the lungs look clear, not as why the answer is " + name
            if name == "NORMAL"
            else "no better than random cells: read it with more caution"
        )
        parts.append(
            f"{name} map: greying its top {last['fraction']:.0%} of lung cells moves P {gap:+.3f} further from "
            f"{name} than greying random cells ({verdict})"
        )
    return ("; ".join(parts) + ".") if parts else ""


def deletion_rows(metadata: dict[str, Any]) -> list[dict[str, str]]:
    """The deletion test of the heatmap (robustness record 'deletion'): per class and share of the lung cells
    greyed, the mean P(pneumonia) when the cells with the most evidence go first vs as many random lung cells."""
    d = (metadata.get("robustness") or {}).get("deletion") or {}
    rows = []
    for name in ("PNEUMONIA", "NORMAL"):
        block = d.get(name)
        if not block:
            continue
        for r in block.get("rows", []):
            rows.append({"validation images": f"{name} (n = {block['n']})",
                         "lung cells greyed": _fmt(r["fraction"], ".0%"),
                         "mean P before": _fmt(block.get("mean_p")),
                         "most evidence first": _fmt(r.get("mean_p_top")),
                         "random cells": _fmt(r.get("mean_p_random"))})  # fmt: skip
    return rows


def reliability_figure(metadata: dict[str, Any]) -> Figure | None:
    """The reliability diagram of the validation probabilities (from the robustness record), or None."""
    cal = (metadata.get("robustness") or {}).get("calibration")
    if not cal or not cal.get("bins"):
        return None
    bins = cal["bins"]
    fig = Figure(figsize=(4.2, 3.4))
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([0, 1], [0, 1], "k:", lw=0.8, label="perfect calibration")
    x = [b["mean_p"] for b in bins]
    y = [b["observed"] for b in bins]
    ax.plot(x, y, "o-", color="#c62828", label="validation")
    for b in bins:
        ax.annotate(str(b["n"]), (b["mean_p"], b["observed"]), fontsize=7.5, xytext=(3, -9), textcoords="offset points")
    n = sum(int(b["n"]) for b in bins)  # the images the diagram was drawn from
    ax.set(xlabel="mean predicted P(pneumonia) in bin", ylabel="observed share with pneumonia", xlim=(0, 1),
           ylim=(0, 1))  # fmt: skip
    ax.set_title(textwrap.fill(f"Reliability (ECE {cal['ece']:.3f}): {data_caption(metadata, 'validation', n)}", 64))
    ax.title.set_fontsize(8)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig


# ---- the scope gate ---------------------------------------------------------------------------------------------
def scope_rows(gate_metadata: dict[str, Any]) -> list[dict[str, str]]:
    """The gate's measured rates, one row per kind of image: what it is, n, and the share flagged or caught."""
    m = gate_metadata.get("metrics") or {}
    rows = []
    in_scope = (
        ("in_scope_validation", "children's films, validation patients (flagged: should be low)"),
        ("in_scope_validation_degraded_64px", "the same, shrunk to 64 px and back"),
        ("in_scope_validation_augmented", "the same, mildly rotated/zoomed/contrast-changed"),
    )
    for key, what in in_scope:
        b = m.get(key)
        if b:
            share = _fmt(b.get("flagged_out_of_scope"), ".1%")
            rows.append({"images": what, "n": str(b["n"]), "out of scope": share})
    for group, prefix in (("scope_held_out", "held out: "), ("synthetic_held_out", "generated: ")):
        for name, b in (m.get(group) or {}).items():
            rows.append({"images": prefix + name.replace("_", " "), "n": str(b["n"]),
                         "out of scope": _fmt(b.get("caught"), ".1%")})  # fmt: skip
    return rows


def orientation_sentence(gate_metadata: dict[str, Any]) -> str:
    """How often turned, inverted or mirrored validation films were put upright (or flagged), in words."""
    o = (gate_metadata.get("metrics") or {}).get("orientation_validation") or {}
    turned = {k: v for k, v in o.items() if k != "upright"}
    if not turned:
        return ""
    upright = [v["corrected_upright"] for v in turned.values()]
    either = [v["flagged_or_corrected_upright"] for v in turned.values()]
    n = next(iter(turned.values()))["n"]
    what = (
        "Turned (90°, 180°, 270°), grey-level-inverted or left-right mirrored"
        if "mirrored" in o
        else ("Turned (90°, 180°, 270°) or grey-level-inverted")
    )
    text = (
        f"{what} copies of the {n} validation films, each of the "
        f"{len(turned)} transforms: {min(upright):.1%}–{max(upright):.1%} were put back exactly upright before "
        f"analysis, and {min(either):.1%}–{max(either):.1%} were either put upright or flagged."
    )
    if "mirrored" in o:  # the plain left-right flip, the one a scanner or a viewer can make
        m = o["mirrored"]
        warned = (((gate_metadata.get("metrics") or {}).get("mirror_validation") or {}).get("mirrored") or {}).get(
            "flipped_or_warned"
        )
        text += f" Mirrored only (heart on the right): {m['corrected_upright']:.1%} flipped back, " + (
            f"{warned:.1%} flipped back or analysed with the possibly-mirrored warning."
            if warned is not None
            else f"{m['flagged_or_corrected_upright']:.1%} flipped back or flagged."
        )
    return text
