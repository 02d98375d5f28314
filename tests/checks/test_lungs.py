"""Lung segmentation: U-Net shapes, mask post-processing, the lung-only classifier input and its paste-back."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from pneumo.checks import lungs
from pneumo.nets.modelfile import ModelFileError
from tests.conftest import synthetic_xray


def two_lungs(h: int = 224, w: int = 224) -> np.ndarray:
    """A bool (h, w) mask with two lung-shaped ellipses."""
    yy, xx = np.mgrid[0:h, 0:w]
    left = ((xx - 0.3 * w) / (0.13 * w)) ** 2 + ((yy - 0.5 * h) / (0.3 * h)) ** 2 <= 1
    right = ((xx - 0.7 * w) / (0.13 * w)) ** 2 + ((yy - 0.5 * h) / (0.3 * h)) ** 2 <= 1
    return left | right


def test_unet_maps_image_to_same_size_probability():
    from pneumo.training.networks import build_unet

    model = build_unet(32, widths=(4, 8, 8))
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 1)).astype("float32")
    y = np.asarray(model(x, training=False))
    assert y.shape == (2, 32, 32, 1)
    assert np.all((y >= 0) & (y <= 1))
    assert model.get_layer("lung_probability").output.shape[1:] == (32, 32, 1)
    assert model.count_params() < 1_000_000


def test_committed_sized_unet_is_under_a_million_parameters():
    from pneumo.training.networks import build_unet

    assert build_unet().count_params() < 1_000_000


def test_postprocess_keeps_two_largest_drops_specks_and_fills_holes():
    truth = two_lungs()
    prob = truth.astype(np.float32)
    prob[110:114, 60:64] = 0.0  # a hole in the left lung
    prob[5:8, 5:8] = 1.0  # a speck far away
    prob[200:210, 100:125] = 1.0  # a third, smaller blob (stomach bubble)
    mask = lungs.postprocess(prob)
    assert mask[111, 61], "the hole is filled"
    assert not mask[6, 6] and not mask[205, 110], "the speck and the third blob are dropped"
    assert lungs.dice(mask, truth) > 0.999
    assert lungs.plausible(mask)


def test_postprocess_keeps_one_lung_when_the_other_is_a_speck():
    prob = np.zeros((224, 224), np.float32)
    prob[40:180, 30:100] = 1
    prob[100:103, 150:153] = 1  # < 10 % of the largest
    mask = lungs.postprocess(prob)
    assert lungs.mask_facts(mask)["components"] == 1
    assert not lungs.plausible(mask)


def test_postprocess_of_nothing_is_empty():
    assert not lungs.postprocess(np.zeros((50, 50), np.float32)).any()


def test_dice_and_iou():
    a = np.zeros((10, 10), bool)
    b = np.zeros((10, 10), bool)
    a[:, :5] = True
    b[:, :4] = True
    assert lungs.dice(a, b) == pytest.approx(2 * 40 / 90)
    assert lungs.iou(a, b) == pytest.approx(40 / 50)
    assert lungs.dice(np.zeros((3, 3), bool), np.zeros((3, 3), bool)) == 1.0


def test_lung_input_greys_everything_outside_the_dilated_lungs():
    x = synthetic_xray(224, 224)
    mask = two_lungs()
    view = lungs.lung_input(x, mask, 160)
    assert view.shape == (160, 160) and view.dtype == np.uint8
    # changing pixels outside the dilated mask changes nothing the classifier sees
    outside = ~lungs.dilate(mask)
    x2 = x.copy()
    x2[outside] = 255 - x2[outside]
    x2[:16], x2[-16:] = 0, 255  # a marker and a border
    grown = lungs.dilate(mask)
    # the fill value is the mean inside the grown mask, which is unchanged
    assert np.array_equal(lungs.lung_input(x2, mask, 160), view)
    assert grown.sum() > mask.sum()


def test_lung_input_without_lungs_uses_the_whole_image():
    x = synthetic_xray(224, 224)
    view = lungs.lung_input(x, np.zeros((224, 224), bool), 160)
    assert view.shape == (160, 160)
    assert view.std() > 10


def test_paste_back_puts_the_crop_map_over_the_lung_box():
    mask = two_lungs()
    heat = np.ones((10, 10), np.float32)
    full = lungs.paste_back(heat, mask)
    y0, y1, x0, x1 = lungs.lung_box(lungs.dilate(mask), 0)
    assert full.shape == (224, 224)
    assert np.all(full[y0:y1, x0:x1] == 1) and full.sum() == (y1 - y0) * (x1 - x0)


@pytest.fixture(scope="module")
def tiny_unet(tmp_path_factory):
    """A tiny random U-Net saved with its metadata and exported: (TFLite Network, Keras Network)."""
    import keras

    from pneumo.nets.lite import load_network
    from pneumo.training.export import export
    from pneumo.training.networks import build_unet, keras_network, load_keras_with_metadata

    keras.utils.set_random_seed(0)
    path = tmp_path_factory.mktemp("unet") / "lungs.keras"
    build_unet(32, widths=(4, 8, 8)).save(path)
    path.with_suffix(".json").write_text(json.dumps({"input_size": 32, "threshold": 0.5}))
    export(path)
    return load_network(path, "lung model"), keras_network(*load_keras_with_metadata(path, "lung model"), path)


def test_segment_runs_the_saved_model_with_its_metadata(tiny_unet):
    lite, tf_net = tiny_unet
    assert lite.image_size == 32 and lite.threshold == 0.5
    x224 = np.stack([synthetic_xray(224, 224, seed=s) for s in range(3)])
    masks, prob = lungs.segment(lite, x224)
    assert masks.shape == (3, 224, 224) and masks.dtype == bool
    assert prob.shape == (3, 224, 224) and np.all((prob >= 0) & (prob <= 1))
    # P(lung) is the U-Net's output on the area-resized squash, resized back to 224
    small = np.stack([cv2.resize(x, (32, 32), interpolation=cv2.INTER_AREA) for x in x224])[..., None]
    raw = np.asarray(tf_net.model(small.astype(np.float32), training=False))[..., 0]  # (3, 32, 32)
    expect = np.stack([cv2.resize(r, (224, 224), interpolation=cv2.INTER_LINEAR) for r in raw])
    np.testing.assert_allclose(prob, expect, atol=1e-5)
    assert prob.std() > 1e-3, "the U-Net's output depends on the picture"
    # the masks are the post-processed probabilities at the stored threshold
    for m, p in zip(masks, prob, strict=True):
        np.testing.assert_array_equal(m, lungs.postprocess(p, 0.5))
    # the same squash gives the same mask, whatever batch it came in
    m1, _ = lungs.segment(lite, x224[1:2])
    assert np.array_equal(m1[0], masks[1])
    # the Keras network (training) and its TFLite copy (the app) agree
    tf_masks, tf_prob = lungs.segment(tf_net, x224)
    np.testing.assert_allclose(tf_prob, prob, atol=1e-5)
    assert np.mean(tf_masks != masks) < 1e-3  # a rare pixel at exactly the threshold may round the other way


def test_missing_lung_model_is_a_clear_error(tmp_path):
    from pneumo.nets.lite import load_network

    with pytest.raises(ModelFileError, match="lung model not found"):
        load_network(tmp_path / "nope.keras", "lung model")


def test_height_ratio_spots_a_lung_field_cut_short():
    mask = two_lungs()
    assert lungs.height_ratio(mask) > 0.95
    short = mask.copy()
    short[130:, :112] = False  # the right lung (image left) cut at mid-height, as when a base is consolidated
    assert lungs.height_ratio(short) < 0.75
    assert lungs.height_ratio(np.zeros((50, 50), bool)) == 0.0


def test_lung_box_is_the_bounding_box_of_the_mask():
    """lung_box (cv2.boundingRect) against the plain numpy definition on random masks, margins and empty masks."""
    rng = np.random.default_rng(3)
    for i in range(40):
        mask = np.zeros((60, 50), bool)
        if i:
            y, x = rng.integers(0, 60), rng.integers(0, 50)
            mask[y : y + rng.integers(1, 30), x : x + rng.integers(1, 30)] = True
            mask[rng.integers(0, 60), rng.integers(0, 50)] = True
        margin = int(rng.integers(0, 6))
        ys, xs = np.nonzero(mask)
        expect = (
            (0, 60, 0, 50)
            if not len(ys)
            else (
                max(ys.min() - margin, 0),
                min(ys.max() + 1 + margin, 60),
                max(xs.min() - margin, 0),
                min(xs.max() + 1 + margin, 50),
            )
        )
        assert lungs.lung_box(mask, margin) == tuple(int(v) for v in expect)
