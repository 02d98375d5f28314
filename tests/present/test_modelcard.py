"""Model-card figures for anatomy: segmentation quality, robustness tests, heatmap in lungs, reliability diagram."""

from __future__ import annotations

import pytest

from pneumo.present import modelcard

ROB = {
    "threshold": 0.9,
    "base": {"n": 100, "auc": 0.99, "sensitivity": 0.95, "specificity": 0.97, "ece": 0.02},
    "border16": {"n": 100, "auc": 0.985, "sensitivity": 0.95, "specificity": 0.96, "mean_abs_dp": 0.004},
    "outside_lungs": {"n": 100, "auc": 0.99, "sensitivity": 0.95, "specificity": 0.97, "mean_abs_dp": 0.0},
    "heatmap_in_lungs": {
        "pneumonia_images_pneumonia_mass_inside": 0.93,
        "normal_images_normal_mass_inside": 0.9,
        "n_pneumonia": 70,
        "n_normal": 30,
        "masks": "reference lung masks (undilated)",
    },  # fmt: skip
    "calibration": {
        "ece": 0.02,
        "bins": [
            {"bin": [0, 0.1], "n": 30, "mean_p": 0.03, "observed": 0.0},
            {"bin": [0.9, 1.0], "n": 70, "mean_p": 0.97, "observed": 1.0},
        ],
    },  # fmt: skip
}


def test_robustness_rows_quote_every_test_with_n():
    rows = modelcard.robustness_rows({"robustness": ROB})
    assert [r["validation images"] for r in rows] == [w for _, w in modelcard.ROBUSTNESS_TESTS]
    assert rows[1]["specificity"] == "96.0%" and rows[1]["mean |change in P|"] == "0.004" and rows[1]["n"] == "100"
    assert rows[0]["mean |change in P|"] == "–"
    assert modelcard.robustness_rows({}) == []


def test_heatmap_sentence_says_data_and_n():
    s = modelcard.heatmap_sentence({"robustness": ROB})
    assert "70 validation pneumonia images, 93%" in s and "30 validation normal images, 90%" in s
    assert modelcard.heatmap_sentence({}) == ""


def test_heatmap_sentence_says_a_lung_pooled_map_lies_inside_the_mask_by_construction():
    pooled = modelcard.heatmap_sentence({"robustness": ROB, "channels": 2})
    plain = modelcard.heatmap_sentence({"robustness": ROB, "channels": 1})
    assert "lung mask only" in pooled and "lung mask only" not in plain


def test_deletion_rows_compare_top_cells_with_random_ones_per_class_with_n():
    rob = {"deletion": {"fractions": [0.1, 0.2],
                        "PNEUMONIA": {"n": 70, "mean_p": 0.95, "rows": [
                            {"fraction": 0.1, "mean_p_top": 0.61, "mean_p_random": 0.93},
                            {"fraction": 0.2, "mean_p_top": 0.42, "mean_p_random": 0.9}]},
                        "NORMAL": {"n": 30, "mean_p": 0.05, "rows": [
                            {"fraction": 0.1, "mean_p_top": 0.3, "mean_p_random": 0.08}]}}}  # fmt: skip
    rows = modelcard.deletion_rows({"robustness": rob})
    assert [r["validation images"] for r in rows] == ["PNEUMONIA (n = 70)"] * 2 + ["NORMAL (n = 30)"]
    assert rows[1] == {"validation images": "PNEUMONIA (n = 70)", "lung cells greyed": "20%", "mean P before": "0.950",
                       "most evidence first": "0.420", "random cells": "0.900"}  # fmt: skip
    assert modelcard.deletion_rows({}) == []
    s = modelcard.deletion_sentence({"robustness": rob})
    assert "PNEUMONIA map: greying its top 20% of lung cells moves P +0.480 further" in s and "faithful" in s
    assert "NORMAL map: greying its top 10% of lung cells moves P +0.220 further" in s
    rob["deletion"]["NORMAL"]["rows"][0]["mean_p_top"] = 0.07  # top cells no worse than random: not faithful
    assert "where the lungs look clear" in modelcard.deletion_sentence({"robustness": rob})
    assert modelcard.deletion_sentence({}) == ""


def test_lung_rows_per_class():
    meta = {"metrics": {"validation": {"n": 10, "dice_mean": 0.95, "dice_median": 0.96, "dice_p05": 0.9,
                                       "iou_mean": 0.91, "plausible_share": 1.0},
                        "validation_by_class": {"NORMAL": {"n": 4, "dice_mean": 0.96}}}}  # fmt: skip
    rows = modelcard.lung_rows(meta)
    assert [r["images"] for r in rows] == ["all validation images", "NORMAL images"]
    assert rows[0]["Dice (mean)"] == "0.950" and rows[0]["two plausible lungs"] == "100.0%"
    assert rows[1]["Dice (median)"] == "–"


def test_lung_rows_of_a_gate_with_a_lung_head():
    """A gate that finds the lungs keeps the lung head's figures beside its own: the rows are the lung head's."""
    meta = {"metrics": {"in_scope_validation": {"n": 784, "flagged_out_of_scope": 0.009},
                        "lungs_validation": {"n": 780, "dice_mean": 0.947, "plausible_share": 0.996},
                        "lungs_validation_by_class": {"PNEUMONIA": {"n": 578, "dice_mean": 0.941}}}}  # fmt: skip
    rows = modelcard.lung_rows(meta)
    assert [(r["images"], r["n"], r["Dice (mean)"]) for r in rows] == [
        ("all validation images", "780", "0.947"), ("PNEUMONIA images", "578", "0.941")]  # fmt: skip


def test_reliability_figure_draws_the_bins():
    fig = modelcard.reliability_figure({"robustness": ROB})
    assert fig is not None and "validation patients" in fig.axes[0].get_title() and "n = 100" in fig.axes[0].get_title()
    assert len(modelcard.figure_png(fig)) > 1000
    assert modelcard.reliability_figure({}) is None


def _o(upright: float, either: float) -> dict:
    return {"n": 784, "corrected_upright": upright, "flagged_or_corrected_upright": either}


def test_scope_rows_and_orientation_sentence_from_gate_metadata():
    meta = {"metrics": {
        "in_scope_validation": {"n": 784, "flagged_out_of_scope": 0.0089},
        "scope_held_out": {"adult_frontal_cxr": {"n": 157, "caught": 0.9809}},
        "synthetic_held_out": {"text": {"n": 66, "caught": 1.0}},
        "orientation_validation": {"upright": _o(0.99, 1.0), "rot90": _o(0.9911, 0.9987), "inverted": _o(0.9923, 1.0)},
    }}  # fmt: skip
    rows = modelcard.scope_rows(meta)
    assert rows[0]["out of scope"] == "0.9%" and rows[0]["n"] == "784"
    assert {"images": "held out: adult frontal cxr", "n": "157", "out of scope": "98.1%"} in rows
    assert rows[-1]["images"] == "generated: text"
    s = modelcard.orientation_sentence(meta)
    assert "784 validation films" in s and "2 transforms" in s and "99.1%–99.2%" in s
    assert modelcard.orientation_sentence({}) == "" and "mirrored" not in s
    meta["metrics"]["orientation_validation"]["mirrored"] = _o(0.9745, 0.9987)
    s = modelcard.orientation_sentence(meta)
    assert "left-right mirrored" in s and "3 transforms" in s and "97.5% flipped back, 99.9% flipped back or" in s
    meta["metrics"]["mirror_validation"] = {"mirrored": {"n": 784, "flipped_or_warned": 0.98}}  # with the warning band
    s = modelcard.orientation_sentence(meta)
    assert "97.5% flipped back, 98.0% flipped back or analysed with the possibly-mirrored warning" in s


def test_committed_gate_metadata_feeds_the_card():
    import json

    from pneumo import config

    meta = json.loads(config.SCOPE_MODEL_PATH.with_suffix(".json").read_text())
    rows = modelcard.scope_rows(meta)
    assert len(rows) >= 10 and all(r["n"].isdigit() for r in rows)
    assert modelcard.orientation_sentence(meta)


def test_portable_command_hides_machine_paths_and_wraps_options():
    cmd = (
        "python -m pneumo.training.train --data ../shared/data/chest_xray --out models/"
        " --lung-model models/pneumo_lungs.keras --robustness-masks /home/someone/data/lung_masks/ --members 3"
    )
    out = modelcard.portable_command(cmd)
    assert "../" not in out and "/home/" not in out  # nothing of the training machine
    assert "--data <data folder>" in out and "--robustness-masks <lung_masks>" in out
    assert "--lung-model models/pneumo_lungs.keras" in out  # paths inside the repository stay
    assert out.splitlines()[0] == "python -m pneumo.training.train \\" and all(
        line.startswith("  --") for line in out.splitlines()[1:]
    )  # one option per line: nothing to scroll sideways
    assert modelcard.portable_command("").count("<data folder>") == 1  # the default is not rewritten twice
    settings = modelcard.portable_settings(
        {
            "settings": {
                "robustness_masks": "../shared/data/lung_masks",
                "lung_model": "models/x.keras",
                "cache_dir": "/c",
            }
        }
    )["settings"]
    assert settings == {"robustness_masks": "<lung_masks>", "lung_model": "models/x.keras"}  # the settings shown too


def test_training_figure_draws_each_member_from_the_metadata():
    hist = {"loss": [0.6, 0.4, 0.3], "val_loss": [0.5, 0.45, 0.4], "auc": [0.8, 0.9, 0.95], "val_auc": [0.85, 0.9, 0.9]}
    fig = modelcard.training_figure({"training": {"member_histories": [hist, hist]}})
    loss, auc = fig.axes
    assert len(loss.lines) == 4 and len(auc.lines) >= 4  # train and validation per member
    assert [t.get_text() for t in loss.get_legend().get_texts()] == ["member 1", "member 2"]
    assert list(auc.lines[1].get_ydata()) == hist["val_auc"]
    assert modelcard.training_figure({"training": {"history": hist}}) is not None  # a single network
    assert modelcard.training_figure({}) is None and modelcard.training_figure({"training": {"history": {}}}) is None


def test_training_settings_give_every_members_epochs():
    """An ensemble's settings say each member's epochs (the curves run to the longest), not only the first's."""
    from pneumo.present.modelcard import portable_settings

    histories = [{"val_auc": [0.8, 0.9, 0.85]}, {"val_auc": [0.7, 0.8, 0.9, 0.95, 0.94]}]
    out = portable_settings({"epochs_run": 3, "best_epoch": 2, "member_histories": histories, "settings": {}})
    assert out["epochs_run per member"] == [3, 5] and out["best_epoch per member (highest validation AUC)"] == [2, 4]
    assert out["epochs_run (member 1)"] == 3 and "epochs_run" not in out
    single = portable_settings({"epochs_run": 3, "best_epoch": 2, "settings": {}})
    assert single["epochs_run"] == 3 and "epochs_run per member" not in single


# ---- every validation plot names its data and n, read from the metadata ------------------------------------------
def _meta(n: int, n_normal: int, n_pneumonia: int) -> dict:
    hist = {"loss": [0.6, 0.4], "val_loss": [0.5, 0.45], "auc": [0.8, 0.9], "val_auc": [0.85, 0.9]}
    return {
        "threshold": 0.5,
        "metrics": {"validation": {"n": n, "n_normal": n_normal, "n_pneumonia": n_pneumonia, "auc": 0.9,
                                   "sensitivity": 0.9, "specificity": 0.8, "threshold": 0.5,
                                   "confusion": {"tn": 8, "fp": 2, "fn": 1, "tp": 9}}},  # fmt: skip
        "roc": {"validation": {"fpr": [0, 0.2, 1], "tpr": [0, 0.9, 1]}},
        "operating_points": [{"threshold": 0.5, "sensitivity": 0.9, "specificity": 0.8}],
        "validation_split": {"images": n},
        "training": {"history": hist, "data": {"train_images": 5000}},
        "robustness": {"calibration": {"ece": 0.02, "bins": [{"mean_p": 0.1, "observed": 0.1, "n": n - 3},
                                                              {"mean_p": 0.9, "observed": 0.9, "n": 3}]}},
    }  # fmt: skip


@pytest.mark.parametrize("counts", [(784, 202, 582), (123, 45, 78)])
def test_every_validation_plot_states_its_data_and_n(counts):
    n, normal, pneumonia = counts
    meta = _meta(*counts)
    want = f"n = {n} ({normal} normal / {pneumonia} pneumonia)"
    assert modelcard.data_caption(meta) == f"validation patients carved from the training folder, {want}"
    roc_and_confusion = modelcard.evaluation_figure(meta).get_suptitle()
    assert (
        roc_and_confusion.startswith("Validation patients carved from the training folder")
        and want in roc_and_confusion
    )
    training = modelcard.training_figure(meta).get_suptitle().replace("\n", " ")
    assert want in training and f"n = {5000 - n:,}" in training  # training folder less the validation patients
    reliability = modelcard.reliability_figure(meta).axes[0].get_title().replace("\n", " ")
    assert "validation patients carved from the training folder, n = " + str(n) in reliability
    assert (
        modelcard.data_caption({"metrics": {}}) == "validation patients carved from the training folder, n not recorded"
    )


def test_metric_rows_on_a_handful_of_images_say_so():
    meta = {"metrics": {"validation": {"n": 784, "auc": 0.99, "sensitivity": 0.95}, "official_val": {
        "n": 16, "n_normal": 8, "n_pneumonia": 8, "auc": 0.9, "sensitivity": 1.0, "threshold": 0.5}}}  # fmt: skip
    rows = {r["data"]: r for r in modelcard.display_rows(modelcard.metric_rows(meta))}
    assert rows["Validation split"]["ROC AUC"] == "0.990"
    small = rows["Official 'val' folder"]
    assert small["ROC AUC"] == small["sensitivity"] == "too few images to mean much (n = 16)"
    assert small["threshold"] == "50%" and small["ECE"] == "–"
