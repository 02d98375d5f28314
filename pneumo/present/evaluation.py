"""Independent evaluations: the maintainers' scores of a model on sequestered sets, matched to the model by hash.

An evaluation is a JSON file named ``<sha256 of the .keras file>.json`` (format: the maintainers' README in the shared
evaluations folder). The repository ships the ones that belong to its committed models in ``models/evaluations/``,
so a cloud deploy has them too. A model file whose hash has no evaluation, e.g. a freshly retrained one, is "not yet
independently evaluated": the figures of an older model are never shown for it.

    python -m pneumo.present.evaluation --sync EVALUATIONS   # copy in the evaluations of the committed models (by hash)
    python -m pneumo.present.evaluation --check                        # every shipped file belongs to a committed model
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import logging
import shutil
import sys
from pathlib import Path
from typing import Any

from pneumo import __version__, config
from pneumo.present.text import format_interval, format_threshold, too_few

log = logging.getLogger(__name__)

# Each set of the maintainers' evaluations: a short name, what it is, and whether it matches the intended use.
SETS: dict[str, tuple[str, str, bool]] = {
    "official_test": (
        "New patients (official test split)",
        "the public data set's official test split: pediatric, same hospital, patients never seen in training",
        True,
    ),
    "external_nih": (
        "Adults, other hospitals (NIH ChestX-ray14)",
        "mostly adults from other hospitals, labels mined from reports: outside the intended use",
        False,
    ),
    "external_adult_normals": (
        "Normal adults (PA views)",
        "normal adult posterior-anterior radiographs from a teaching collection: outside the intended use",
        False,
    ),
}


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@functools.lru_cache(maxsize=8)
def _cached(path: str, mtime_ns: int, size: int, folder: str) -> tuple[str, str | None]:
    digest = file_sha256(Path(path))
    file = Path(folder) / f"{digest}.json"
    return digest, (file.read_text() if file.is_file() else None)


def load_evaluation(model_path: Path, folder: Path | None = None) -> dict[str, Any] | None:
    """The shipped independent evaluation of the model file at ``model_path``, or None when it has none.

    Matched by the SHA-256 of the model file only (never by name): a replaced model file has no evaluation.
    """
    folder = Path(folder or config.EVALUATIONS_DIR)
    path = Path(model_path)
    if not path.is_file():
        return None
    st = path.stat()
    digest, text = _cached(str(path.resolve()), st.st_mtime_ns, st.st_size, str(folder.resolve()))
    if text is None:
        return None
    data = json.loads(text)
    if data.get("model_sha256") != digest:
        log.warning("evaluation file for %s names another model (%s); ignored", digest, data.get("model_sha256"))
        return None
    return data


def set_label(key: str) -> str:
    """Short name of an evaluation set, e.g. 'official_test' -> 'New patients (official test split)'."""
    return SETS.get(key, (key.replace("_", " ").capitalize(), "", False))[0]


def set_description(key: str, block: dict[str, Any] | None = None) -> str:
    """What an evaluation set is, in plain words (the file's own description for an unknown set)."""
    if key in SETS:
        return SETS[key][1]
    return str((block or {}).get("description", "no description"))


def in_scope(key: str) -> bool:
    """True for a set that matches the intended use (pediatric frontal radiographs of the training hospital)."""
    return SETS.get(key, ("", "", False))[2]


def primary(evaluation: dict[str, Any] | None) -> dict[str, Any] | None:
    """The in-scope set quoted on every page (``config.PRIMARY_EVALUATION_SET``), or None."""
    if not evaluation:
        return None
    return (evaluation.get("sets") or {}).get(config.PRIMARY_EVALUATION_SET)


def _counts(block: dict[str, Any]) -> str:
    n = block.get("n", "?")
    if "n_normal" in block and "n_pneumonia" in block:
        return f"{n} images ({block['n_normal']} normal, {block['n_pneumonia']} pneumonia)"
    return f"{n} images"


def headline(evaluation: dict[str, Any] | None, markdown: bool = True) -> str:
    """One sentence with the independent figures on new patients, or the 'not yet evaluated' sentence."""
    block = primary(evaluation)
    if block is None:
        return (
            "This model has **not yet been independently evaluated**: no figures on new patients exist for it, "
            "only the optimistic validation figures."
        ).replace("**", "" if not markdown else "**")
    b = "**" if markdown else ""
    return (
        f"On new patients (official test split, {_counts(block)}, scored independently by the "
        f"maintainers): {b}sensitivity {format_interval(block['sensitivity'], block.get('sensitivity_ci95'))}{b}, "
        f"{b}specificity {format_interval(block['specificity'], block.get('specificity_ci95'))}{b} at this model's "
        f"threshold {format_threshold(float(block.get('threshold', 0)))}.{refused_sentence(block)}"
    )


def refused_text(block: dict[str, Any]) -> str:
    """'14 of 624 (2.2%)': the images of a set that the scope gate refused; '0 of N' or '–' when not recorded."""
    total = block.get("n_total")
    if total is None:
        return "–"
    refused = int(block.get("n_out_of_scope", 0))
    return f"{refused} of {total} ({refused / max(int(total), 1):.1%})"


def refused_sentence(block: dict[str, Any]) -> str:
    """' The scope gate refused 14 of 624 (2.2%) of these images; they are not in the figures.' ('' if none)."""
    if not block.get("n_out_of_scope"):
        return ""
    refused, total = int(block["n_out_of_scope"]), int(block.get("n_total", 0))
    return (
        f" The scope gate refused {refused} of the set's {total} images ({refused / max(total, 1):.1%}); they are not "
        "in these figures."
    )


# The title of the separate table of the sets outside the intended use (the model card shows it apart, folded).
OUTSIDE_TITLE = "Outside the intended use (adults): shown only to say the model must not be used there"


def outside_keys(evaluation: dict[str, Any] | None) -> list[str]:
    """The evaluated sets outside the intended use, in the order of SETS (unknown sets count as outside)."""
    sets = (evaluation or {}).get("sets") or {}
    return [k for k in sorted(sets, key=lambda k: list(SETS).index(k) if k in SETS else 99) if not in_scope(k)]


def table_rows(evaluation: dict[str, Any] | None, intended_use: bool = True) -> list[dict[str, str]]:
    """One row of display strings per evaluated set: the sets of the intended use (``intended_use``), or those outside
    it with, for each, the figures of every image forced through the refusal (a separate table: see OUTSIDE_TITLE).

    A figure resting on fewer than config.FEW_IMAGES images is shown as 'too few images to mean much (n = ...)'."""
    if not evaluation:
        return []
    sets = evaluation.get("sets") or {}
    keys = [k for k in sets if k not in outside_keys(evaluation)] if intended_use else outside_keys(evaluation)
    keys.sort(key=lambda k: list(SETS).index(k) if k in SETS else 99)
    rows = []
    for key in keys:
        label = set_label(key) + ("" if intended_use else ": the images the gate let through")
        rows.append(_table_row(label, sets[key], refused_text(sets[key])))
        forced = sets[key].get("all_images_forced")
        if forced and not intended_use:  # what a user who ignores the refusal gets
            rows.append(_table_row(f"{set_label(key)}: every image forced through", forced, "none (--force)"))
    return rows


def _table_row(label: str, blk: dict[str, Any], refused: str) -> dict[str, str]:
    """One row of display strings for one block of figures; a figure on too few images says so instead."""
    auc, auc_ci = blk.get("auc"), blk.get("auc_ci95")
    auc_text = "–" if auc is None else f"{auc:.3f}" + (f" ({auc_ci[0]:.3f}–{auc_ci[1]:.3f})" if auc_ci else "")
    sens = "–" if "sensitivity" not in blk else format_interval(blk["sensitivity"], blk.get("sensitivity_ci95"))
    spec = "–" if "specificity" not in blk else format_interval(blk["specificity"], blk.get("specificity_ci95"))
    ece = "–" if blk.get("ece") is None else f"{blk['ece']:.3f}"
    n = blk.get("n")
    # each figure by the images it rests on: sensitivity on the pneumonia images, specificity on the normal ones
    auc_text = (auc is not None and too_few(n)) or auc_text
    ece = (blk.get("ece") is not None and too_few(n)) or ece
    sens = ("sensitivity" in blk and too_few(blk.get("n_pneumonia", n))) or sens
    spec = ("specificity" in blk and too_few(blk.get("n_normal", n))) or spec
    return {
        "set": label,
        "images": _counts(blk),
        "refused by the gate": refused,
        "AUC": auc_text,
        "sensitivity": sens,
        "specificity": spec,
        "ECE": ece,
    }


# ---- keeping the shipped files in step with the committed models -------------------------------------------------
def committed_models(models_dir: Path | None = None) -> dict[str, Path]:
    """{sha256: path} of every .keras file in the models folder."""
    folder = Path(models_dir or config.MODELS_DIR)
    return {file_sha256(p): p for p in sorted(folder.glob("*.keras"))}


def sync(source: Path, models_dir: Path | None = None, dest: Path | None = None) -> list[Path]:
    """Copy ``<sha>.json`` from ``source`` for every committed model that has one; move shipped evaluations that
    belong to no committed model into ``previous/`` (context for the model that replaced it). Returns the files now
    shipped."""
    models = committed_models(models_dir)
    dest = Path(dest or (Path(models_dir) / "evaluations" if models_dir else config.EVALUATIONS_DIR))
    dest.mkdir(parents=True, exist_ok=True)
    shipped = []
    for digest, model in models.items():
        src = Path(source) / f"{digest}.json"
        if src.is_file():
            if json.loads(src.read_text()).get("model_sha256") != digest:
                raise ValueError(f"{src} names another model")
            shutil.copyfile(src, dest / src.name)
            shipped.append(dest / src.name)
            log.info("%s: evaluation %s shipped", model.name, digest[:12])
        else:
            log.info("%s: not yet independently evaluated (%s)", model.name, digest[:12])
    for stale in dest.glob("*.json"):
        if stale.stem not in models:  # a replaced model: keep its figures as context for its successor
            (dest / PREVIOUS_DIR_NAME).mkdir(exist_ok=True)
            stale.replace(dest / PREVIOUS_DIR_NAME / stale.name)
            log.info("moved %s to %s/: it belongs to no committed model", stale.name, PREVIOUS_DIR_NAME)
    return shipped


def check(models_dir: Path | None = None, dest: Path | None = None) -> list[str]:
    """Problems with the shipped evaluations: files whose name or content names no committed model ([] when fine)."""
    models = committed_models(models_dir)
    dest = Path(dest or config.EVALUATIONS_DIR)
    problems = []
    for file in sorted(dest.glob("*.json")):
        if file.stem not in models:
            problems.append(f"{file.name}: no committed model has this hash")
        elif json.loads(file.read_text()).get("model_sha256") != file.stem:
            problems.append(f"{file.name}: its model_sha256 differs from its name")
    return problems


def main(argv: list[str] | None = None) -> int:
    """Command line: --sync FOLDER copies matching evaluations; --check verifies the shipped ones."""
    parser = argparse.ArgumentParser(prog="python -m pneumo.present.evaluation", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--sync", type=Path, metavar="FOLDER", help="folder with <sha256>.json evaluations")
    parser.add_argument("--check", action="store_true", help="check that every shipped evaluation matches a model")
    parser.add_argument("--models", type=Path, default=config.MODELS_DIR, help="models folder (default: models/)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    dest = Path(args.models) / "evaluations"
    if args.sync:
        sync(args.sync, args.models, dest)
    problems = check(args.models, dest)
    for p in problems:
        log.error(p)
    return 1 if problems else 0


# ---- the model this one replaced --------------------------------------------------------------------------------
PREVIOUS_DIR_NAME = "previous"  # models/evaluations/previous/<sha256>.json: evaluations of replaced models


def load_previous(metadata: dict[str, Any], folder: Path | None = None) -> dict[str, Any] | None:
    """The independent evaluation of the model this one replaced (metadata ``previous_model.sha256``), or None.

    It belongs to ANOTHER model: show it only as context, labelled so, never as this model's figures.
    """
    prev = (metadata or {}).get("previous_model") or {}
    digest = str(prev.get("sha256", ""))
    if not digest:
        return None
    file = Path(folder or config.EVALUATIONS_DIR) / PREVIOUS_DIR_NAME / f"{digest}.json"
    if not file.is_file():
        return None
    data = json.loads(file.read_text())
    return data if data.get("model_sha256") == digest else None


def gate_sentence(evaluation: dict[str, Any] | None, gate_metadata: dict[str, Any] | None) -> str:
    """A sentence when the scope gate in use was made after the evaluation (its refusals were another gate's)."""
    made = str((gate_metadata or {}).get("created", ""))[:10]  # ISO dates compare as text
    scored = str((evaluation or {}).get("evaluated", ""))[:10]
    if not made or not scored or made <= scored:
        return ""
    return (
        f"The scope gate in use now was made on {made}, after this evaluation ({scored}): the refusals counted here "
        "are those of the earlier gate; how often this gate refuses these images has not been measured."
    )


def previous_sentence(metadata: dict[str, Any], evaluation: dict[str, Any] | None) -> str:
    """One sentence quoting the replaced model's official-test figures, labelled as another model's ('' if none)."""
    block = primary(evaluation)
    if block is None:
        return ""
    what = ((metadata or {}).get("previous_model") or {}).get("description", "the previous model")
    ci = block.get("auc_ci95")
    auc = f"{block['auc']:.3f}" + (f" (95% CI {ci[0]:.3f}–{ci[1]:.3f})" if ci else "")
    sens = format_interval(block["sensitivity"], block.get("sensitivity_ci95"))
    spec = format_interval(block["specificity"], block.get("specificity_ci95"))
    return (
        f"For context only: {what} (another model file, sha256 {evaluation['model_sha256'][:12]}…) scored on the "
        f"official test split ({block['n']} images) AUC {auc}, sensitivity {sens}, specificity {spec} at its "
        f"threshold {format_threshold(float(block.get('threshold', 0)))}, ECE {block.get('ece', float('nan')):.3f}. "
        "These are not this model's figures."
    )


if __name__ == "__main__":
    raise SystemExit(main())
