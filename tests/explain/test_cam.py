"""The numbers of an explanation (pneumo.explain.cam): a signed CAM as one class's heat on an absolute scale."""

from __future__ import annotations

import numpy as np
import pytest

from pneumo.explain.cam import class_scale, heatmap_from_cam, scale_words, shown_class


def test_zero_or_non_finite_cam_gives_a_cold_heatmap():
    """Vanishing gradients (an all-zero or NaN cam) give an all-zero heatmap, not NaN."""
    for cam in (np.zeros((7, 7), np.float32), np.full((7, 7), np.nan, np.float32)):
        for cls in (0, 1):
            h = heatmap_from_cam(cam, cls, 32)
            assert h.shape == (32, 32) and h.dtype == np.float32 and np.isfinite(h).all() and h.max() == 0.0
    cam = np.array([[np.inf, 1.0], [-np.inf, -2.0]], np.float32)  # infinities are dropped, the rest is kept
    np.testing.assert_allclose(heatmap_from_cam(cam, 1, 2), [[0.0, 1.0], [0.0, 0.0]], atol=1e-6)
    np.testing.assert_allclose(heatmap_from_cam(cam, 0, 2), [[0.0, 0.0], [0.0, 1.0]], atol=1e-6)


def test_the_two_classes_are_the_two_signs_of_one_map():
    """PNEUMONIA shows ReLU(+cam), NORMAL ReLU(-cam): where one is hot the other is cold."""
    cam = np.random.default_rng(0).normal(0, 1, (5, 5)).astype(np.float32)
    pos, neg = heatmap_from_cam(cam, 1, 5), heatmap_from_cam(cam, 0, 5)  # at the map's own size: no resize
    np.testing.assert_allclose(pos, np.maximum(cam, 0) / cam.max(), atol=1e-6)
    np.testing.assert_allclose(neg, np.maximum(-cam, 0) / -cam.min(), atol=1e-6)
    assert not (pos * neg).any() and pos.max() == pytest.approx(1.0) and neg.max() == pytest.approx(1.0)
    big = heatmap_from_cam(cam, 1, 40)  # resized bilinearly to the requested size, still in [0, 1]
    assert big.shape == (40, 40) and 0.0 <= big.min() and big.max() <= 1.0


def test_heatmap_scale_arithmetic():
    cam = np.array([[0.5, -1.0], [2.0, 0.0]], np.float32)
    np.testing.assert_allclose(heatmap_from_cam(cam, 1, 2, scale=1.0), [[0.5, 0.0], [1.0, 0.0]])  # clipped at 1
    np.testing.assert_allclose(heatmap_from_cam(cam, 0, 2, scale=4.0), [[0.0, 0.25], [0.0, 0.0]])
    np.testing.assert_allclose(heatmap_from_cam(cam, 1, 2), [[0.25, 0.0], [1.0, 0.0]], atol=1e-6)  # per-image max
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            heatmap_from_cam(cam, 1, 2, scale=bad)
    with pytest.raises(ValueError):
        heatmap_from_cam(cam, 2, 2)


def test_class_scale_reads_the_metadata():
    assert class_scale({}, 1) is None  # no cam_scale: each map scaled to its own maximum
    assert class_scale({"cam_scale": 0.25}, 1) == 0.25
    assert class_scale({"cam_scale": {"NORMAL": 0.5, "PNEUMONIA": 0.2}}, 0) == 0.5
    assert class_scale({"cam_scale": {"NORMAL": 0.5, "PNEUMONIA": 0.2}}, 1) == 0.2
    for bad in (0, -1, "x", None):
        assert class_scale({"cam_scale": bad}, 1) is None


def test_shown_class_and_scale_words():
    class R:
        probability: float | None = 0.3

    r = R()
    assert shown_class(r, None, 0.5) == 0 and shown_class(r, None, 0.3) == 1  # the label at the threshold
    assert shown_class(r, 1, 0.5) == 1 and shown_class(r, 0, 0.1) == 0  # the class asked for
    r.probability = None  # no probability (out of scope): NORMAL
    assert shown_class(r, None, 0.5) == 0
    assert "own maximum" in scale_words({}, 1) and "PNEUMONIA" in scale_words({}, 1)
    words = scale_words({"cam_scale": {"NORMAL": 0.5, "PNEUMONIA": 0.2}}, 0)
    assert "one scale for all images" in words and "NORMAL" in words
