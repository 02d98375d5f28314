"""The CNN and Grad-CAM on a tiny random model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pneumo import config
from pneumo.gradcam import compute_heatmap, explain_batch, heatmap_from_cam, overlay_heatmap
from pneumo.inference import confidence_text, label_for, predict_proba
from pneumo.model import build_model, load_model, metadata_path
from pneumo.preprocess import preprocess
from tests.conftest import TINY_SIZE, synthetic_xray


def test_default_model_is_light_and_named():
    model = build_model()
    assert model.count_params() < 1_000_000
    assert model.input_shape == (None, config.IMAGE_SIZE, config.IMAGE_SIZE, 1)
    assert model.output_shape == (None, 1)
    names = [layer.name for layer in model.layers]
    assert config.GRADCAM_LAYER in names and "logit" in names
    assert "gap" in names and not any("flatten" in n for n in names)
    # the Grad-CAM layer is the last spatial feature map: 224 / 32 = 7
    assert model.get_layer(config.GRADCAM_LAYER).output.shape[1:3] == (7, 7)


def test_rescaling_and_standardisation_inside_model(tiny_model):
    """The model takes raw 0..255 pixels; a linear exposure change barely moves the output."""
    x = preprocess(synthetic_xray(seed=1), TINY_SIZE).astype(np.float32)
    p1 = predict_proba(tiny_model.model, x)[0]
    p2 = predict_proba(tiny_model.model, np.clip(x * 0.8 + 20, 0, 255))[0]
    assert 0.0 <= p1 <= 1.0
    assert abs(p1 - p2) < 0.02


def test_load_model_reads_metadata(tiny_model_path):
    loaded = load_model(tiny_model_path)
    meta = json.loads(metadata_path(tiny_model_path).read_text())
    assert loaded.threshold == meta["threshold"]
    assert loaded.image_size == meta["input_size"] == loaded.model.input_shape[1]
    assert loaded.class_names == ("NORMAL", "PNEUMONIA")


def test_load_model_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "nope.keras")


def test_predict_proba_batches_agree(tiny_model):
    xs = np.stack([preprocess(synthetic_xray(seed=s, opacity=s % 2 == 0), TINY_SIZE) for s in range(5)])
    all_at_once = predict_proba(tiny_model.model, xs, batch_size=32)
    one_by_one = np.array([predict_proba(tiny_model.model, x)[0] for x in xs])
    assert all_at_once.shape == (5,)
    np.testing.assert_allclose(all_at_once, one_by_one, atol=1e-5)


def test_gradcam_shape_range_and_classes(tiny_model):
    x = preprocess(synthetic_xray(seed=3, opacity=True), TINY_SIZE)
    pos = compute_heatmap(tiny_model.model, x, target_class=1)
    neg = compute_heatmap(tiny_model.model, x, target_class=0)
    for h in (pos, neg):
        assert h.shape == (TINY_SIZE, TINY_SIZE) and h.dtype == np.float32
        assert np.isfinite(h).all() and h.min() >= 0.0 and h.max() <= 1.0
    assert not np.allclose(pos, neg), "the two classes must be explained differently"
    # PNEUMONIA is explained by +logit and NORMAL by -logit: where one is hot the other is cold
    assert float(np.mean(pos * neg)) < float(np.mean(pos * pos) + np.mean(neg * neg)) / 2


def test_gradcam_probability_matches_model(tiny_model):
    xs = np.stack([preprocess(synthetic_xray(seed=s), TINY_SIZE) for s in range(3)])
    probs, cams = explain_batch(tiny_model.model, xs)
    np.testing.assert_allclose(probs, predict_proba(tiny_model.model, xs), atol=1e-5)
    assert cams.shape[0] == 3 and cams.ndim == 3


def test_gradcam_does_not_mutate_model(tiny_model):
    n_layers = len(tiny_model.model.layers)
    weights = [w.copy() for w in tiny_model.model.get_weights()]
    compute_heatmap(tiny_model.model, preprocess(synthetic_xray(), TINY_SIZE))
    assert len(tiny_model.model.layers) == n_layers
    for a, b in zip(weights, tiny_model.model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_gradcam_zero_gradient_is_safe():
    """Vanishing gradients (an all-zero or NaN cam) give an all-zero heatmap, not NaN."""
    for cam in (np.zeros((7, 7), np.float32), np.full((7, 7), np.nan, np.float32)):
        for cls in (0, 1):
            h = heatmap_from_cam(cam, cls, 32)
            assert h.shape == (32, 32) and np.isfinite(h).all() and h.max() == 0.0


def test_gradcam_zero_weights_model():
    """A model whose logit ignores the features has zero gradients: heatmap is zeros, no NaN."""
    model = build_model(TINY_SIZE, stem_width=4, widths=(8, 8, 8, 8))
    dense = model.get_layer("logit")
    dense.set_weights([np.zeros_like(w) for w in dense.get_weights()])
    h = compute_heatmap(model, preprocess(synthetic_xray(), TINY_SIZE))
    assert np.isfinite(h).all() and h.max() == 0.0


def test_overlay_at_original_size():
    img = synthetic_xray(width=301, height=257)
    heat = np.zeros((32, 32), np.float32)
    heat[10:20, 10:20] = 1.0
    out = overlay_heatmap(img, heat, alpha=0.5)
    assert out.shape == (257, 301, 3) and out.dtype == np.uint8
    # alpha 0 shows the plain radiograph; a cold heatmap leaves pixels (almost) untouched
    np.testing.assert_array_equal(overlay_heatmap(img, heat, alpha=0.0), np.repeat(img[:, :, None], 3, axis=2))
    assert np.abs(out[0, 0].astype(int) - int(img[0, 0])).max() <= 1
    # the hot region is coloured: channels differ there
    centre = out[128, 150].astype(int)
    assert centre.max() - centre.min() > 30
    with pytest.raises(ValueError):
        overlay_heatmap(img, heat, alpha=1.5)


def test_labels_and_confidence_words():
    assert label_for(0.7, 0.5) == "PNEUMONIA" and label_for(0.3, 0.5) == "NORMAL"
    assert label_for(0.5, 0.5) == "PNEUMONIA"
    assert confidence_text(0.52, 0.5).startswith("borderline")
    assert confidence_text(0.99, 0.5) == "confident"
    assert confidence_text(0.2, 0.5) == "moderately confident"
