"""The one analysis path: lungs-mode classifier, explanation on one absolute scale, robustness measurements."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from pneumo import config, explain, pipeline
from pneumo.checks import lungs
from pneumo.io.decode import LoadedImage, load_image
from pneumo.pipeline import analyze_images, classify_224, load_models
from pneumo.training import robustness
from tests.checks.test_lungs import two_lungs
from tests.conftest import synthetic_xray


@pytest.fixture(scope="module")
def models(tiny_lung_model_path):
    return load_models(tiny_lung_model_path)


def test_lungs_mode_classifier_loads_its_lung_model(models):
    assert models.classifier.input_mode == "lungs"
    assert models.lungs is not None and models.lungs.image_size == 32
    assert models.gate is None  # no gate beside the tiny model: rules only


def test_classify_224_shapes_and_cam_zero_outside_the_lung_box(models):
    x = np.stack([synthetic_xray(224, 224, seed=s, opacity=bool(s % 2)) for s in range(3)])
    out = classify_224(models, x)
    assert out.prob.shape == (3,) and np.all((out.prob >= 0) & (out.prob <= 1))
    assert out.cam224.shape == (3, 224, 224) and out.masks.shape == (3, 224, 224)
    for cam, m in zip(out.cam224, out.masks, strict=True):
        grown = lungs.dilate(m) if m.any() else np.ones_like(m)
        y0, y1, x0, x1 = lungs.lung_box(grown, 0)
        outside = np.ones_like(m)
        outside[y0:y1, x0:x1] = False
        assert np.all(cam[outside] == 0)
    # batching does not change answers
    one = classify_224(models, x[1:2])
    np.testing.assert_allclose(one.prob[0], out.prob[1], atol=1e-6)


def test_full_resolution_and_224_copy_agree(models, tmp_path):
    """The data set's 224 copies are the INTER_AREA squash of the originals: both give the same answer."""
    full = synthetic_xray(1100, 900, seed=7, opacity=True)
    Image.fromarray(full).save(tmp_path / "full.png")
    Image.fromarray(cv2.resize(full, (224, 224), interpolation=cv2.INTER_AREA)).save(tmp_path / "copy.png")
    imgs = [load_image(tmp_path / "full.png"), load_image(tmp_path / "copy.png")]
    a, b = analyze_images(models, imgs)
    assert abs(a.probability - b.probability) < 1e-3
    assert lungs.dice(a.lung_mask, b.lung_mask) > 0.99 or not (a.lung_mask.any() or b.lung_mask.any())


def test_out_of_scope_has_no_probability_unless_forced(models):
    rgb = np.zeros((300, 300, 3), np.uint8)
    rgb[..., 0] = 255
    img = load_image(_png_bytes(rgb))
    (r,) = analyze_images(models, [img])
    assert r.label == "OUT_OF_SCOPE" and r.probability is None and "colour" in r.warnings and not r.in_scope
    (f,) = analyze_images(models, [img], force=True)
    assert f.label in config.CLASS_NAMES and f.probability is not None and "colour" in f.warnings


def _png_bytes(arr: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def test_class_heat_uses_the_absolute_per_class_scale():
    cam = np.zeros((224, 224), np.float32)
    cam[50:100, 50:100] = 0.1  # weak PNEUMONIA evidence
    cam[120:150, 120:150] = -2.0  # strong NORMAL evidence
    meta = {"cam_scale": {"PNEUMONIA": 1.0, "NORMAL": 1.0}}
    pneu, norm = explain.class_heat(cam, 1, meta), explain.class_heat(cam, 0, meta)
    assert pneu.max() == pytest.approx(0.1, abs=0.01), "weak evidence stays pale on the absolute scale"
    assert norm.max() == pytest.approx(1.0), "evidence beyond the scale saturates"
    # without a scale each map is stretched to its own maximum
    assert explain.class_heat(cam, 1, {}).max() == pytest.approx(1.0, abs=0.01)


def test_overlay_keeps_heat_within_the_lungs_and_draws_the_outline():
    mask = two_lungs()
    cam = np.full((224, 224), 5.0, np.float32)  # evidence everywhere, also outside the lungs
    pixels = np.full((448, 448), 100, np.uint8)

    class R:  # the fields result_overlay reads
        pass

    r = R()
    r.cam224, r.lung_mask, r.pixels = cam, mask, pixels
    meta = {"cam_scale": {"PNEUMONIA": 1.0, "NORMAL": 1.0}}
    out = explain.result_overlay(r, meta, 1, alpha=0.5, outline=False)
    assert out.shape == (448, 448, 3)
    assert np.all(out[5, 5] == 100), "no colour far outside the lungs"
    assert not np.all(out[224, 134] == 100), "colour inside the left lung"
    lined = explain.result_overlay(r, meta, 1, alpha=0.0, outline=True)
    r, g, b = (lined[..., k].astype(int) for k in range(3))
    magenta = (r > 180) & (b > 180) & (g < 90)  # the outline colour (anti-aliased) on a grey image
    assert config.OUTLINE_COLOUR == (255, 0, 255) and magenta.sum() > 100, "the lung outline is drawn"


def test_grey_border_and_outside_and_mass_inside():
    x = np.stack([synthetic_xray(224, 224, seed=1)])
    b = robustness.grey_border(x)
    assert np.all(b[0, :16] == b[0, 0, 0]) and np.array_equal(b[0, 16:-16, 16:-16], x[0, 16:-16, 16:-16])
    m = two_lungs()[None]
    o = robustness.grey_outside(x, m)
    grown = lungs.dilate(m[0])
    assert np.array_equal(o[0][grown], x[0][grown]) and len(np.unique(o[0][~grown])) == 1
    cam = np.where(m, 1.0, 0.0).astype(np.float32)
    cam[0, :5, :5] = 1.0  # a little mass outside
    share = robustness.mass_inside(cam, m, 1)
    assert 0.9 < share[0] < 1.0
    assert np.isnan(robustness.mass_inside(cam, m, -1)[0]), "no negative mass at all"


def test_robustness_measure_on_a_tiny_synthetic_set(models):
    x = np.stack([synthetic_xray(224, 224, seed=s, opacity=bool(s % 2)) for s in range(8)])
    y = np.array([s % 2 for s in range(8)])
    masks = np.stack([two_lungs()] * 8)
    r = robustness.measure(models, x, y, masks)
    assert r["n"] == 8 and r["base"]["n"] == 8
    assert {"delta_auc", "delta_specificity", "mean_abs_dp"} <= set(r["border16"])
    assert 0 <= r["outside_lungs"]["mean_abs_dp"] <= 1
    assert r["heatmap_in_lungs"]["n_pneumonia"] == 4
    assert sum(b["n"] for b in r["calibration"]["bins"]) == 8


def test_warm_up_traces_every_network_of_the_path(tiny_lung_model_path):
    """With Keras networks (training's loader) warm_up compiles and traces each network once."""
    from pneumo import pipeline
    from pneumo.training import gradcam
    from pneumo.training import networks as model

    fresh = load_models(tiny_lung_model_path, loader=model.load_keras_network)  # nothing compiled for them yet
    assert fresh.classifier.model not in gradcam._CAM_FNS and fresh.lungs.model not in model._FORWARD_FNS
    pipeline.warm_up(fresh)
    # the classifier's probability + CAM function and the U-Net's forward pass exist and have been traced
    (cam_fn,) = gradcam._CAM_FNS[fresh.classifier.model].values()
    assert fresh.lungs.model in model._FORWARD_FNS
    assert cam_fn.experimental_get_tracing_count() == 1


def test_app_loads_the_models_once_when_the_warm_up_and_a_page_ask_together(tiny_lung_model_path, monkeypatch):
    """The warm-up thread and the first page share one load: the page waits for it instead of loading again."""
    import threading

    from app_pages import common
    from pneumo import pipeline

    calls = []

    def slow_load(path, **kwargs):
        calls.append(path)
        threading.Event().wait(0.3)  # a load in progress while the second caller arrives
        return load_models(path, **kwargs)

    monkeypatch.setattr(pipeline, "load_models", slow_load)
    monkeypatch.setattr(common, "_LOADED", {})
    key = (str(tiny_lung_model_path), 1.0)
    got = []
    threads = [threading.Thread(target=lambda: got.append(common._load_models(*key))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and got[0] is got[1]
    assert common._load_models(*key) is got[0]  # and later pages reuse it


def test_a_failed_warm_up_still_gives_the_loaded_models(tiny_lung_model_path, monkeypatch):
    from app_pages import common
    from pneumo import pipeline

    def broken(models):
        raise RuntimeError("trial run failed")

    monkeypatch.setattr(pipeline, "warm_up", broken)
    monkeypatch.setattr(common, "_LOADED", {})
    models = common._load_models(str(tiny_lung_model_path), 2.0)
    assert models.classifier.input_mode == "lungs" and common._LOADED[(str(tiny_lung_model_path), 2.0)] is models


def test_display_copy_caps_the_long_side_and_keeps_small_images():
    from pneumo.io import shrink_to_side

    def display_copy(pixels):
        return shrink_to_side(pixels, config.DISPLAY_MAX_SIDE)

    big = synthetic_xray(width=2 * config.DISPLAY_MAX_SIDE, height=config.DISPLAY_MAX_SIDE, seed=3)
    out = display_copy(big)
    assert out.shape == (config.DISPLAY_MAX_SIDE // 2, config.DISPLAY_MAX_SIDE) and out.dtype == np.uint8
    small = synthetic_xray(width=300, height=200, seed=3)
    assert display_copy(small) is small


@pytest.mark.parametrize("workers", [1, 2])
def test_analyze_stream_keeps_order_errors_and_answers(tiny_lung_model_path, workers):
    """Batches analysed side by side come back in input order, decode errors in their place, the same answers."""
    from pneumo.io.decode import ImageLoadError

    models = pipeline.load_models(tiny_lung_model_path, with_gate=False)
    images = [LoadedImage(synthetic_xray(260, 240, seed=i, opacity=bool(i % 3))) for i in range(7)]
    stream = [(f"f{i}", img) for i, img in enumerate(images)]
    stream.insert(3, ("bad", ImageLoadError("unreadable")))
    stream.append(("bad2", ImageLoadError("truncated")))
    out = list(pipeline.analyze_stream(models, iter(stream), batch_size=2, workers=workers))
    assert [k for k, _ in out] == [k for k, _ in stream]
    assert isinstance(out[3][1], ImageLoadError) and isinstance(out[-1][1], ImageLoadError)
    expect = pipeline.analyze_images(models, images)
    got = [r for _, r in out if not isinstance(r, Exception)]
    for a, b in zip(got, expect, strict=True):
        assert a.probability == pytest.approx(b.probability, abs=1e-6) and a.label == b.label
        np.testing.assert_array_equal(a.lung_mask, b.lung_mask)
    assert list(pipeline.analyze_stream(models, iter([("x", ImageLoadError("no"))])))[0][0] == "x"
