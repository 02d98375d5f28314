"""Real training runs: the trainers' command lines (python -m pneumo.training.*) with the smoke preset on a synthetic
folder, and their shared setting flags."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pneumo.io.decode import LoadedImage
from tests.conftest import ROOT, synthetic_xray


def _synthetic_dataset(root: Path, n: int = 8) -> None:
    """The public layout with a few synthetic images per class, several per patient, full-res and odd sizes."""
    for split, count in (("train", n), ("val", 2), ("test", 3)):
        for label, cls in enumerate(("NORMAL", "PNEUMONIA")):
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(count):
                img = synthetic_xray(width=200 + 7 * i, height=180, seed=100 * label + i, opacity=bool(label))
                name = f"person{i // 2}_bacteria_{i}.jpeg" if label else f"IM-{i // 2:04d}-000{i % 2}.jpeg"
                Image.fromarray(img).convert("RGB").save(d / name)


@pytest.mark.slow
def test_training_smoke_run_writes_loadable_model(tmp_path):
    data_dir, out = tmp_path / "data", tmp_path / "out"
    _synthetic_dataset(data_dir)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    common = ["--data", str(data_dir), "--out", str(out), "--preset", "smoke"]
    cmd = [sys.executable, "-m", "pneumo.training.train", *common]
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "validation AUC" in res.stderr

    meta = json.loads((out / "pneumo_cnn.json").read_text())
    for key in (
        "input_size",
        "class_names",
        "gradcam_layer",
        "threshold",
        "threshold_rule",
        "parameters",
        "metrics",
        "operating_points",
        "roc",
        "training",
        "versions",
        "created",
    ):
        assert key in meta, key
    val = meta["metrics"]["validation"]
    for key in ("auc", "accuracy", "sensitivity", "specificity", "ece", "confusion"):
        assert key in val
    # the official val and the test split are evaluated and recorded, with their sizes
    assert meta["metrics"]["official_val"]["n"] == 4
    assert meta["metrics"]["test"]["n"] == 6
    assert len(meta["training"]["data"]["fingerprint_sha256"]) == 64
    assert meta["training"]["command"].startswith("python -m pneumo.training.train")
    assert (out / "pneumo_cnn_training.png").stat().st_size > 1000

    from pneumo.io.preprocess import preprocess
    from pneumo.nets.lite import load_network
    from pneumo.pipeline import predict_proba
    from pneumo.training.networks import load_keras_network, load_keras_with_metadata

    keras_model, _ = load_keras_with_metadata(out / "pneumo_cnn.keras")
    assert keras_model.count_params() == meta["parameters"]
    trained = load_keras_network(out / "pneumo_cnn.keras")  # what training runs (TensorFlow)
    app = load_network(out / "pneumo_cnn.keras")  # the TFLite copy the run exported, as the app runs it
    assert trained.image_size == app.image_size == 32 and app.threshold == meta["threshold"]
    x = np.stack([preprocess(synthetic_xray(seed=s, opacity=s == 1), 32) for s in range(2)])
    p = predict_proba(app.model, x)
    assert p.shape == (2,) and np.all((p >= 0.0) & (p <= 1.0))
    np.testing.assert_allclose(p, predict_proba(trained.model, x), atol=1e-5)


def test_cli_settings_override():
    from pneumo.training.train import parse_args

    args, s = parse_args(["--data", "x", "--preset", "smoke", "--epochs", "3", "--learning-rate", "0.01"])
    assert s.epochs == 3 and s.learning_rate == 0.01 and s.image_size == 32
    _, full = parse_args(["--data", "x"])
    assert full.image_size == 160 and full.input_mode == "lungs" and full.max_per_class == 0


@pytest.mark.slow
def test_seed_baseline_smoke_run(tmp_path):
    """python -m pneumo.training.baseline scores the seed notebook's approach on the same patient split."""
    data_dir, out = tmp_path / "data", tmp_path / "baseline.json"
    _synthetic_dataset(data_dir, n=10)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    cmd = [
        sys.executable,
        "-m",
        "pneumo.training.baseline",
        "--data",
        str(data_dir),
        "--out",
        str(out),
        "--epochs",
        "1",
        "--members",
        "2",
        "--size",
        "32",
        "--cache-dir",
        "",
    ]
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    result = json.loads(out.read_text())
    val = result["validation"]
    assert val["n"] == val["n_normal"] + val["n_pneumonia"] > 0 and val["threshold"] == 0.5
    assert 0.0 <= val["accuracy"] <= 1.0 and "2 x notebook CNN at 32x32" in result["approach"]


def _synthetic_masks(data_root: Path, mask_root: Path) -> None:
    """Two-ellipse lung masks for every synthetic training image, in the lung-mask folder layout."""
    from tests.checks.test_lungs import two_lungs

    for img in (data_root / "train").rglob("*.jpeg"):
        out = mask_root / img.relative_to(data_root).with_suffix(".png")
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(two_lungs(180, 200).astype(np.uint8) * 255).save(out)


@pytest.mark.slow
def test_lung_model_then_lung_classifier_smoke_runs(tmp_path):
    """The documented chain: train the U-Net, then a classifier that reads only the lungs, with the robustness run."""
    data_dir, masks, out = tmp_path / "data", tmp_path / "masks", tmp_path / "out"
    _synthetic_dataset(data_dir)
    _synthetic_masks(data_dir, masks)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    common = ["--data", str(data_dir), "--out", str(out), "--preset", "smoke"]
    cmd = [sys.executable, "-m", "pneumo.training.train_lungs", "--masks", str(masks), *common]
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    lung_meta = json.loads((out / "pneumo_lungs.json").read_text())
    assert lung_meta["metrics"]["validation"]["n"] > 0
    assert 0.0 <= lung_meta["metrics"]["validation"]["dice_mean"] <= 1.0
    assert lung_meta["parameters"] < 1_000_000

    lung_file = str(out / "pneumo_lungs.keras")
    extra = ["--lung-model", lung_file, "--robustness-masks", str(masks), "--margin-jitter", "0.5"]
    cmd = [sys.executable, "-m", "pneumo.training.train", *common, *extra]
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    meta = json.loads((out / "pneumo_cnn.json").read_text())
    assert meta["input_mode"] == "lungs"
    assert meta["channels"] == 2 and meta["pooling"].startswith("lung mask")  # masked average pooling by default
    assert meta["training"]["settings"]["margin_jitter"] == 0.5
    assert meta["validation_split"]["chose"].startswith("the threshold only")  # fixed epochs, no early stopping
    assert meta["lung_model"]["file"] == "pneumo_lungs.keras" and len(meta["lung_model"]["sha256"]) == 64
    assert set(meta["cam_scale"]) == {"NORMAL", "PNEUMONIA"}
    rob = meta["robustness"]
    for key in ("base", "border16", "outside_lungs", "heatmap_in_lungs", "calibration", "deletion"):
        assert key in rob, key
    # lungs only: greying outside the dilated reference mask moves little (the masks here are the model's input)
    assert 0.0 <= rob["outside_lungs"]["mean_abs_dp"] <= 1.0

    from pneumo.nets.lite import LiteNet, ProbabilityView, attached, describe
    from pneumo.pipeline import classify_224, load_models
    from pneumo.training.networks import load_keras_network

    # both trainings exported the TFLite copies the app runs: the default loader finds and runs them
    models = load_models(out / "pneumo_cnn.keras", with_gate=False)
    assert models.lungs is not None and models.classifier.input_mode == "lungs"
    assert describe(models) == "classifier TFLite, lungs TFLite"
    assert isinstance(attached(models.classifier.model, ("cam", meta["gradcam_layer"])), LiteNet)
    assert isinstance(attached(models.classifier.model, "forward"), ProbabilityView)
    x = np.stack([synthetic_xray(224, 224, seed=s, opacity=s == 1) for s in range(2)])
    res = classify_224(models, x)
    assert res.prob.shape == (2,) and res.cam224.shape == (2, 224, 224) and res.masks.shape == (2, 224, 224)
    # and they give the Keras networks' answers
    ref = classify_224(load_models(out / "pneumo_cnn.keras", with_gate=False, loader=load_keras_network), x)
    np.testing.assert_allclose(res.prob, ref.prob, atol=1e-4)
    assert np.mean(res.masks != ref.masks) < 1e-3  # a rare pixel at exactly the threshold may round the other way


@pytest.mark.slow
def test_gate_with_lung_head_then_classifier_smoke_runs(tmp_path):
    """The committed design's chain, two networks: the gate learns the lungs from the masks as a second head, the
    classifier reads the lungs that head finds, and the app's loader runs the gate once for both."""
    from pneumo.nets.lite import describe
    from pneumo.pipeline import analyze_images, load_models
    from pneumo.training.networks import load_keras_network
    from tests.checks.test_scope import _write_folders

    data_dir, masks, out = tmp_path / "data", tmp_path / "masks", tmp_path / "out"
    _synthetic_dataset(data_dir)
    _synthetic_masks(data_dir, masks)
    _, sc = _write_folders(tmp_path / "scope_root")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    common = ["--data", str(data_dir), "--out", str(out), "--preset", "smoke"]
    cmd = [sys.executable, "-m", "pneumo.training.train_scope", "--scope", str(sc), "--masks", str(masks), *common]
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    gate_meta = json.loads((out / "pneumo_scope.json").read_text())
    assert "lung_probability" in gate_meta["tflite"]["outputs"] and gate_meta["lung_threshold"] == 0.5
    lv = gate_meta["metrics"]["lungs_validation"]
    assert lv["n"] > 0 and 0.0 <= lv["dice_mean"] <= 1.0 and "Dice" in lv["data"]

    cmd = [sys.executable, "-m", "pneumo.training.train", *common, "--lung-model", str(out / "pneumo_scope.keras")]
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    meta = json.loads((out / "pneumo_cnn.json").read_text())
    assert meta["lung_model"]["file"] == "pneumo_scope.keras"

    models = load_models(out / "pneumo_cnn.keras")  # TFLite, with the gate: one network for the gate and lungs
    assert models.shared_lungs and describe(models) == "classifier TFLite, gate and lungs TFLite"
    x = [LoadedImage(synthetic_xray(224, 224, seed=s, opacity=s == 1)) for s in range(2)]
    res_lite = analyze_images(models, x, force=True)
    ref = analyze_images(load_models(out / "pneumo_cnn.keras", loader=load_keras_network), x, force=True)
    np.testing.assert_allclose([r.probability for r in res_lite], [r.probability for r in ref], atol=1e-4)
    same = np.mean([np.mean(a.lung_mask != b.lung_mask) for a, b in zip(res_lite, ref, strict=True)])
    assert same < 1e-3


def test_every_training_script_takes_setting_flags():
    """The three scripts share pneumo.training.settings: int/float/str fields become flags over the chosen preset."""
    from pneumo.training import train_lungs, train_scope

    _, s = train_lungs.parse_args(["--data", "x", "--masks", "m", "--preset", "smoke", "--epochs", "2"])
    assert s.epochs == 2 and s.image_size == 32 and s.widths == (4, 8, 8)
    _, g = train_scope.parse_args(["--data", "x", "--scope", "y", "--learning-rate", "0.5"])
    assert g.learning_rate == 0.5
    _, c = train_lungs.parse_args(["--data", "x", "--masks", "m"])
    assert c.epochs == train_lungs.Settings().epochs  # no flag: the preset's value
