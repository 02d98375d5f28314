"""The committed models: they load, their metadata agrees with them, and the whole analysis path gives sane results
on the shipped samples (turned and inverted copies too)."""

from __future__ import annotations

import json

import numpy as np

from pneumo import config
from pneumo.checks import lungs
from pneumo.io.decode import LoadedImage, load_image
from pneumo.nets.modelfile import metadata_path
from pneumo.pipeline import analyze_images, load_models
from pneumo.training.networks import load_model


def test_model_file_is_light_and_has_metadata():
    path = config.DEFAULT_MODEL_PATH
    assert path.exists(), "models/pneumo_cnn.keras must be committed"
    assert path.stat().st_size < 5 * 2**20
    meta = json.loads(metadata_path(path).read_text())
    loaded = load_model(path)
    model = loaded.model
    assert meta["parameters"] == model.count_params() < 1_000_000
    assert meta["input_size"] == model.input_shape[1] == model.input_shape[2]
    assert meta["input_mode"] == "lungs" and (path.parent / meta["lung_model"]["file"]).is_file()
    assert meta["class_names"] == list(config.CLASS_NAMES)
    assert meta["gradcam_layer"] == config.GRADCAM_LAYER and model.get_layer(meta["gradcam_layer"]) is not None
    assert 0.0 < meta["threshold"] < 1.0
    val = meta["metrics"]["validation"]
    assert val["threshold"] == meta["threshold"]
    c = val["confusion"]
    assert c["tp"] + c["fn"] == val["n_pneumonia"] and c["tn"] + c["fp"] == val["n_normal"]
    assert abs(val["sensitivity"] - c["tp"] / val["n_pneumonia"]) < 1e-3
    assert abs(val["specificity"] - c["tn"] / val["n_normal"]) < 1e-3
    # the stored operating point at the threshold agrees with the stored metrics
    op = next(p for p in meta["operating_points"] if abs(p["threshold"] - meta["threshold"]) < 1e-9)
    assert abs(op["sensitivity"] - val["sensitivity"]) < 1e-3 and abs(op["specificity"] - val["specificity"]) < 1e-3
    assert len(meta["training"]["data"]["fingerprint_sha256"]) == 64
    assert meta["training"]["command"].startswith("python -m pneumo.training.train")
    assert "test" not in meta["metrics"], "the sequestered test split must not be used here"


def test_committed_models_on_samples():
    models = load_models()
    assert models.lungs is not None and models.gate is not None
    samples = json.loads((config.ASSETS_DIR / "samples" / "samples.json").read_text())
    images = [load_image(config.ASSETS_DIR / "samples" / s["file"]) for s in samples]
    results = analyze_images(models, images)
    for s, r in zip(samples, results, strict=True):
        assert r.in_scope and r.label == s["label"], (s["file"], r.label, r.probability, r.warnings)
        assert lungs.plausible(r.lung_mask), s["file"]
    # turned and inverted copies are put upright and get (nearly) the upright answer
    turned = [LoadedImage(np.rot90(images[0].pixels)), LoadedImage(255 - images[-1].pixels)]
    t_rot, t_inv = analyze_images(models, turned)
    assert "rotated" in t_rot.warnings and abs(t_rot.probability - results[0].probability) < 0.05
    assert "inverted" in t_inv.warnings and abs(t_inv.probability - results[-1].probability) < 0.05
    # a uniform grey square is no chest X-ray: out of scope, and no crash or NaN when forced
    (grey,) = analyze_images(models, [LoadedImage(np.full((300, 300), 128, np.uint8))], force=True)
    assert "uniform" in grey.warnings and np.isfinite(grey.probability)


def test_committed_lung_and_gate_metadata():
    lung = json.loads(config.LUNG_MODEL_PATH.with_suffix(".json").read_text())
    assert lung["metrics"]["validation"]["dice_mean"] >= 0.95 and lung["parameters"] < 1_000_000
    assert (
        load_model(config.DEFAULT_MODEL_PATH).metadata["lung_model"]["sha256"]
        == __import__("hashlib").sha256(config.LUNG_MODEL_PATH.read_bytes()).hexdigest()
    ), "the classifier was trained behind exactly this lung model"
    gate = json.loads(config.SCOPE_MODEL_PATH.with_suffix(".json").read_text())
    assert gate["metrics"]["in_scope_validation"]["flagged_out_of_scope"] <= 0.01
