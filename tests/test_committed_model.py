"""The committed model: it loads, its metadata agrees with it, and it gives sane results on the shipped samples."""

from __future__ import annotations

import json

import numpy as np

from pneumo import config
from pneumo.inference import label_for, predict_proba
from pneumo.io import load_image
from pneumo.model import load_model, metadata_path
from pneumo.preprocess import preprocess


def test_model_file_is_light_and_has_metadata():
    path = config.DEFAULT_MODEL_PATH
    assert path.exists(), "models/pneumo_cnn.keras must be committed"
    assert path.stat().st_size < 5 * 2**20
    meta = json.loads(metadata_path(path).read_text())
    loaded = load_model(path)
    model = loaded.model
    assert meta["parameters"] == model.count_params() < 1_000_000
    assert meta["input_size"] == model.input_shape[1] == model.input_shape[2] == config.IMAGE_SIZE
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
    assert meta["training"]["command"].startswith("python -m pneumo.train")
    assert "test" not in meta["metrics"], "the sequestered test split must not be used here"


def test_committed_model_on_samples():
    loaded = load_model()
    samples = json.loads((config.ASSETS_DIR / "samples" / "samples.json").read_text())
    x = np.stack([preprocess(load_image(config.ASSETS_DIR / "samples" / s["file"]).pixels) for s in samples])
    probs = predict_proba(loaded.model, x)
    assert np.isfinite(probs).all() and ((probs >= 0) & (probs <= 1)).all()
    for s, p in zip(samples, probs, strict=True):
        assert label_for(p, loaded.threshold) == s["label"], (s["file"], p)
    # a uniform grey square is not a chest X-ray; whatever it gets, the model must not crash or return NaN
    assert np.isfinite(predict_proba(loaded.model, np.full((224, 224, 1), 128, np.uint8))).all()
