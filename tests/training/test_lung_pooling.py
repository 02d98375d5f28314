"""The classifier that averages its last features over the lung mask only: the pooling layer, its CAM (a decomposition
of the logit that is zero outside the lungs), the ensemble, the TFLite copy, the analysis path, the augmentation and
the deletion measure of the heatmap's faithfulness."""

from __future__ import annotations

import json
from types import SimpleNamespace

import cv2
import keras
import numpy as np
import pytest

from pneumo.checks import lungs
from pneumo.training.gradcam import explain_batch
from pneumo.training.networks import LungMaskPooling, build_model, ensemble_model
from tests.conftest import TINY_SIZE, synthetic_xray, tiny_lung_mask


def _inputs(n: int, size: int = TINY_SIZE, seed: int = 0) -> np.ndarray:
    """n two-channel classifier inputs float32 (n, size, size, 2): a synthetic chest and the two-ellipse lung mask."""
    img = np.stack([cv2.resize(synthetic_xray(seed=seed + i, opacity=bool(i % 2)), (size, size)) for i in range(n)])
    mask = np.broadcast_to(tiny_lung_mask(size), img.shape)
    return np.stack([img, mask], axis=-1).astype(np.float32)


def _random_head(model: keras.Model, seed: int) -> keras.Model:
    """Give the dense head random weights, so that the logit varies with the features."""
    rng = np.random.default_rng(seed)
    kernel, bias = model.get_layer("logit").get_weights()
    model.get_layer("logit").set_weights([rng.normal(0, 1, kernel.shape).astype("float32"), bias + 0.2])
    return model


def _share(x: np.ndarray, cells: int) -> np.ndarray:
    """Lung share per feature cell (B, cells, cells) of two-channel inputs (B, S, S, 2)."""
    b, s = len(x), x.shape[1]
    return (x[..., 1] / 255.0).reshape(b, cells, s // cells, cells, s // cells).mean(axis=(2, 4))


def test_pooling_is_the_mean_over_lung_cells_and_ignores_the_rest():
    rng = np.random.default_rng(0)
    fmap = rng.normal(size=(2, 4, 4, 3)).astype("float32")  # (B, h, w, K)
    share = np.zeros((2, 4, 4, 1), "float32")
    share[:, 1:3, 0:2] = 1.0
    share[:, 0, 0] = 0.5  # a cell half in the lungs counts half
    out = np.asarray(LungMaskPooling()([fmap, share]))  # (B, K)
    expected = (fmap * share).sum(axis=(1, 2)) / share.sum(axis=(1, 2))
    np.testing.assert_allclose(out, expected, rtol=1e-5)
    changed = fmap.copy()
    changed[:, 3, 3] += 100.0  # a cell with no lung
    np.testing.assert_allclose(np.asarray(LungMaskPooling()([changed, share])), out, rtol=1e-5)
    changed[:, 1, 1] += 100.0  # a lung cell
    assert not np.allclose(np.asarray(LungMaskPooling()([changed, share])), out)


def test_cam_of_a_pooled_model_decomposes_its_logit_and_is_zero_outside_the_lung_cells():
    keras.utils.set_random_seed(1)
    model = _random_head(build_model(TINY_SIZE, 4, (8, 8, 8, 8), 0.0, 0.0, cam_stride=16, lung_pooling=True), 1)
    assert model.input_shape == (None, TINY_SIZE, TINY_SIZE, 2)
    x = _inputs(4)
    x[1, :, : TINY_SIZE // 2, 1] = 0  # one image with only its right lung in the mask
    p, cam = explain_batch(model, x)  # (4,), (4, 2, 2)
    np.testing.assert_allclose(p, model.predict(x, verbose=0)[:, 0], atol=1e-5)
    logit = np.log(p / (1 - p))
    bias = float(model.get_layer("logit").get_weights()[1][0])
    share = _share(x, cam.shape[1])
    np.testing.assert_allclose((share * cam).sum(axis=(1, 2)) + bias, logit, atol=1e-4)
    assert share[1, :, 0].max() == 0  # the left cells of image 1 hold no lung: they add nothing to its logit
    assert np.ptp(p) > 0  # the output depends on the picture


def test_pooled_ensemble_is_the_mean_of_its_members():
    keras.utils.set_random_seed(2)
    members = [
        _random_head(build_model(TINY_SIZE, 4, (8, 8, 8, 8), 0.0, 0.0, cam_stride=16, lung_pooling=True), s)
        for s in (3, 4)
    ]
    ens = ensemble_model(members)
    assert isinstance(ens.get_layer("gap"), LungMaskPooling)
    x = _inputs(3)

    def logit(m: keras.Model) -> np.ndarray:
        p = m.predict(x, verbose=0)[:, 0].astype(np.float64)
        return np.log(p / (1 - p))

    np.testing.assert_allclose(logit(ens), (logit(members[0]) + logit(members[1])) / 2, atol=1e-4)


def test_tflite_copy_of_a_pooled_model_gives_the_keras_answer(tmp_path):
    from pneumo.nets.lite import forward_cam, load_network
    from pneumo.training.export import export

    keras.utils.set_random_seed(5)
    model = _random_head(build_model(TINY_SIZE, 4, (8, 8, 8, 8), 0.0, 0.0, cam_stride=16, lung_pooling=True), 5)
    path = tmp_path / "pooled.keras"
    model.save(path)
    path.with_suffix(".json").write_text(json.dumps({"input_size": TINY_SIZE, "channels": 2}))
    export(path)
    net = load_network(path, "classifier")
    x = _inputs(3)
    p, cam = forward_cam(net.model, x, "gradcam_conv")
    p_ref, cam_ref = explain_batch(keras.saving.load_model(path), x)
    np.testing.assert_allclose(p, p_ref, atol=1e-5)
    np.testing.assert_allclose(cam, cam_ref, atol=1e-4)


def test_analysis_path_draws_no_evidence_outside_the_lung_mask(tiny_pooled_model_path, monkeypatch):
    from pneumo.pipeline import classify_224, load_models

    mask224 = cv2.resize(tiny_lung_mask(224), (224, 224), interpolation=cv2.INTER_NEAREST) > 0  # (224, 224)
    monkeypatch.setattr(lungs, "segment", lambda net, x: (np.repeat(mask224[None], len(x), 0), None))
    models = load_models(tiny_pooled_model_path, with_gate=False)
    assert models.classifier.channels == 2
    x224 = np.stack([cv2.resize(synthetic_xray(seed=i, opacity=bool(i % 2)), (224, 224)) for i in range(4)])
    out = classify_224(models, x224)
    assert np.all(out.cam224[:, ~mask224] == 0)  # nothing outside the lungs, by construction
    assert np.all(np.abs(out.cam224[:, mask224]).max(axis=1) > 0)  # and evidence inside them
    assert np.ptp(out.prob) > 0


def test_mask_channel_lies_in_the_frame_of_the_lung_view():
    mask = cv2.resize(tiny_lung_mask(224), (224, 224), interpolation=cv2.INTER_NEAREST) > 0
    mask[:40] = False  # lungs lower in the picture: the box is not the whole image
    image = np.where(mask, 220, 30).astype(np.uint8)
    view = lungs.lung_input(image, mask, 64).astype(float)  # (64, 64): bright where the lungs are
    channel = lungs.mask_input(mask, 64).astype(float)  # (64, 64) 255 = lung
    assert channel.max() == 255 and channel.min() == 0
    assert view[channel == 255].min() >= 200  # every pixel the channel calls lung is lung in the view
    assert view[channel == 0].max() < 200  # and every pixel it calls not lung is margin or fill
    assert np.all(lungs.mask_input(np.zeros((224, 224), bool), 16) == 255)  # no mask: the whole view counts


def test_training_margin_cut_greys_outside_a_narrower_margin_in_the_same_frame():
    mask = cv2.resize(tiny_lung_mask(224), (224, 224), interpolation=cv2.INTER_NEAREST) > 0
    image = np.full((224, 224), 90, np.uint8)
    image[::4] = 200  # texture everywhere: greying is visible
    usual = lungs.lung_input(image, mask, 64)
    cut = lungs.lung_input(image, mask, 64, margin=(0, 17))  # no visible margin, grey 17
    inside = lungs.mask_input(mask, 64) == 255
    np.testing.assert_array_equal(cut[inside][: inside.sum() // 2], usual[inside][: inside.sum() // 2])
    assert (cut == 17).sum() > (usual == 17).sum() + 50  # the margin is now grey
    fill = round(float(image[lungs.dilate(mask)].mean()))  # the usual grey outside the grown mask
    np.testing.assert_array_equal(lungs.lung_input(image, mask, 64, margin=(8, fill)), usual)  # the full margin


def test_augmentation_moves_the_mask_with_the_image_and_changes_only_the_image_intensity():
    import tensorflow as tf

    from pneumo.training.augment import image_augment

    s = SimpleNamespace(image_size=TINY_SIZE, rotate_deg=0.0, zoom=(1.0, 1.0), aspect=0.0, shift=0.0,
                        gamma=(0.5, 0.5), contrast=(1.0, 1.0), brightness=0.0, noise=0.0)  # fmt: skip
    x = _inputs(2)
    out, _ = image_augment(s)(tf.constant(x), tf.constant([0.0, 1.0]))
    out = np.asarray(out)
    np.testing.assert_allclose(out[..., 1], x[..., 1], atol=1e-3)  # the mask is not brightened
    assert np.abs(out[..., 0] - x[..., 0]).max() > 10  # the image is (gamma 0.5)
    s.shift = 0.25
    moved, _ = image_augment(s)(tf.constant(x), tf.constant([0.0, 1.0]))
    moved = np.asarray(moved)
    assert np.abs(moved[..., 1] - x[..., 1]).max() > 100  # the mask moves ...
    assert np.abs(moved[..., 0] - out[..., 0]).max() > 10  # ... and so does the image


def _brightness_classifier(size: int = 32, cells: int = 4) -> keras.Model:
    """A hand-made lung-pooled classifier: its feature per cell is the cell's mean brightness, so P(pneumonia) grows
    with the brightness of the lung cells and the CAM is largest on the brightest cells."""
    from pneumo.training.networks import split_image_mask

    inputs = keras.Input((size, size, 2), name="image")
    image, share = split_image_mask(inputs, size // cells)
    stride = size // cells
    fmap = keras.layers.Conv2D(1, stride, strides=stride, use_bias=False, name="gradcam_conv")(image)  # (B, c, c, 1)
    pooled = LungMaskPooling(name="gap")([fmap, share])
    logit = keras.layers.Dense(1, name="logit")(pooled)
    prob = keras.layers.Activation("sigmoid", name="probability")(logit)
    model = keras.Model(inputs, prob)
    model.get_layer("gradcam_conv").set_weights([np.full((stride, stride, 1, 1), 1.0 / stride**2, "float32")])
    model.get_layer("logit").set_weights([np.array([[0.08]], "float32"), np.array([-8.0], "float32")])
    return model


def test_deletion_greys_the_cells_with_the_most_evidence_first():
    from pneumo.training import robustness as rb
    from pneumo.training.networks import keras_network

    size = 32
    model = _brightness_classifier(size)
    meta = {"input_size": size, "channels": 2, "input_mode": "lungs", "gradcam_layer": "gradcam_conv"}
    net = keras_network(model, meta)
    models = SimpleNamespace(classifier=net)
    rng = np.random.default_rng(0)
    x = np.zeros((6, size, size, 2), np.uint8)
    x[..., 0] = rng.integers(60, 120, (6, size, size))
    x[:3, 8:16, 8:16, 0] = 250  # one bright cell: a "pneumonia" whose evidence is in one place
    x[..., 1] = 255
    y = np.array([1, 1, 1, 0, 0, 0])
    inputs = {id(models): x}

    def fake_inputs(m, x224):
        start = int(x224[0, 0, 0])
        return inputs[id(m)][start : start + len(x224)], None

    x224 = np.zeros((6, 224, 224), np.uint8)
    x224[:, 0, 0] = np.arange(6)  # each squash says which input it stands for
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(rb, "classifier_inputs", fake_inputs)
        result = rb.deletion(models, x224, y)
    first = result["PNEUMONIA"]["rows"][0]  # 5 % of 16 cells: the one brightest cell
    assert first["mean_p_top"] < result["PNEUMONIA"]["mean_p"] - 0.05  # greying the bright cell lowers P ...
    assert first["mean_p_top"] < first["mean_p_random"] - 0.03  # ... far more than a random cell
    assert result["PNEUMONIA"]["n"] == 3 and result["NORMAL"]["n"] == 3
