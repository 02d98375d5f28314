"""The Keras networks (classifier, ensemble, batch-norm folding) and the reference Grad-CAM / CAM of
pneumo.training.gradcam, on the tiny fixture model (trained on synthetic chests) and small random ones."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pneumo import config
from pneumo.explain.cam import heatmap_from_cam
from pneumo.io.preprocess import preprocess
from pneumo.nets.modelfile import ModelFileError, metadata_path
from pneumo.pipeline import label_for, predict_proba
from pneumo.training.gradcam import cam_head, explain_batch
from pneumo.training.networks import build_model, keras_network, load_keras_network, load_keras_with_metadata
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
    # cam_stride 16 drops the last pooling: a map twice as fine
    fine = build_model(160, stem_width=4, widths=(8, 8, 8, 8), cam_stride=16)
    assert fine.get_layer(config.GRADCAM_LAYER).output.shape[1:3] == (10, 10)


def test_rescaling_and_standardisation_inside_model(tiny_model):
    """The model takes raw 0..255 pixels; a linear exposure change barely moves the output, an opacity does."""
    x = preprocess(synthetic_xray(seed=1), TINY_SIZE).astype(np.float32)
    p1 = predict_proba(tiny_model.model, x)[0]
    p2 = predict_proba(tiny_model.model, np.clip(x * 0.8 + 20, 0, 255))[0]
    assert abs(p1 - p2) < 0.02
    sick = predict_proba(tiny_model.model, preprocess(synthetic_xray(seed=1, opacity=True), TINY_SIZE))[0]
    assert sick - p1 > 0.3, "the tiny model tells an opacity from a clear chest"


def test_load_keras_network_reads_metadata(tiny_model_path):
    loaded = load_keras_network(tiny_model_path)
    meta = json.loads(metadata_path(tiny_model_path).read_text())
    assert loaded.threshold == meta["threshold"] and loaded.path == tiny_model_path
    assert loaded.image_size == meta["input_size"] == loaded.model.input_shape[1]
    assert loaded.class_names == ("NORMAL", "PNEUMONIA") and loaded.gradcam_layer == "gradcam_conv"
    model, meta2 = load_keras_with_metadata(tiny_model_path)
    assert meta2 == meta and model.count_params() == meta["parameters"]
    # the loaded network runs (batch norm folded, runners attached): the same answers as the saved model
    xs = np.stack([preprocess(synthetic_xray(seed=s, opacity=s % 2 == 0), TINY_SIZE) for s in range(4)])
    np.testing.assert_allclose(
        predict_proba(loaded.model, xs), np.asarray(model(xs.astype(np.float32)))[:, 0], rtol=1e-4, atol=1e-5
    )


def test_load_keras_network_needs_the_file_and_its_metadata(tmp_path, tiny_model_path):
    with pytest.raises(ModelFileError, match="not found"):
        load_keras_network(tmp_path / "nope.keras")
    bare = tmp_path / "bare.keras"
    bare.write_bytes(tiny_model_path.read_bytes())  # no .json beside it
    with pytest.raises(ModelFileError, match="no metadata"):
        load_keras_with_metadata(bare)


def test_a_bare_keras_model_does_not_run_on_the_analysis_path(tiny_model_path):
    """predict_proba runs what is attached to a model; a Keras model straight from a file has nothing attached."""
    import keras

    model = keras.saving.load_model(tiny_model_path, compile=False)
    x = preprocess(synthetic_xray(), TINY_SIZE)
    with pytest.raises(ModelFileError, match="nothing runs"):
        predict_proba(model, x)
    net = keras_network(model, json.loads(metadata_path(tiny_model_path).read_text()))
    assert predict_proba(net.model, x)[0] == pytest.approx(float(model(x[None].astype(np.float32))[0, 0]), abs=1e-6)


def test_predict_proba_batches_agree(tiny_model):
    xs = np.stack([preprocess(synthetic_xray(seed=s, opacity=s % 2 == 0), TINY_SIZE) for s in range(5)])
    all_at_once = predict_proba(tiny_model.model, xs, batch_size=32)
    in_twos = predict_proba(tiny_model.model, xs, batch_size=2)
    one_by_one = np.array([predict_proba(tiny_model.model, x)[0] for x in xs])
    assert all_at_once.shape == (5,) and all_at_once.dtype == np.float64
    assert np.ptp(all_at_once) > 0.3, "the images get different answers: the comparison below can fail"
    np.testing.assert_allclose(all_at_once, one_by_one, atol=1e-5)
    np.testing.assert_allclose(in_twos, one_by_one, atol=1e-5)
    assert predict_proba(tiny_model.model, xs[:0]).shape == (0,)


def test_labels_at_the_threshold():
    assert label_for(0.7, 0.5) == "PNEUMONIA" and label_for(0.3, 0.5) == "NORMAL"
    assert label_for(0.5, 0.5) == "PNEUMONIA"


@pytest.fixture(scope="module")
def random_64():
    """A random classifier at 64 px: a 4x4 explained map (the tiny fixture model's 32 px input ends in 1x1)."""
    import keras

    keras.utils.set_random_seed(3)
    model = build_model(64, stem_width=4, widths=(8, 8, 8))  # 64 / 16 = 4x4 map
    dense = model.get_layer("logit")  # a kernel of both signs and unit size: maps that speak for both classes
    kernel = np.random.default_rng(3).normal(0, 1, dense.get_weights()[0].shape).astype(np.float32)
    dense.set_weights([kernel, np.zeros(1, np.float32)])
    return model


def test_gradcam_shape_range_and_classes(random_64):
    """explain_batch + heatmap_from_cam (what the app draws): both classes from one signed map, in [0, 1]."""
    xs = np.stack([preprocess(synthetic_xray(seed=s, opacity=True), 64) for s in range(2)])
    probs, cams = explain_batch(random_64, xs)
    assert probs.shape == (2,) and cams.shape == (2, 4, 4) and cams.dtype == np.float32
    cam = cams[0]
    assert cam.max() > 0 > cam.min(), "this map speaks for both classes somewhere"
    pos, neg = heatmap_from_cam(cam, 1, 4), heatmap_from_cam(cam, 0, 4)  # at the map's own size
    # PNEUMONIA is explained by +logit and NORMAL by -logit: where one is hot the other is cold
    assert not (pos * neg).any() and pos.max() > 0.99 and neg.max() > 0.99  # each to its own maximum
    np.testing.assert_array_equal(pos > 0, cam > 0)
    np.testing.assert_array_equal(neg > 0, cam < 0)
    for h in (heatmap_from_cam(cam, 1, 64), heatmap_from_cam(cam, 0, 64)):
        assert h.shape == (64, 64) and h.dtype == np.float32
        assert np.isfinite(h).all() and h.min() >= 0.0 and h.max() <= 1.0


def test_gradcam_probability_matches_model(tiny_keras, tiny_model):
    xs = np.stack([preprocess(synthetic_xray(seed=s, opacity=s == 1), TINY_SIZE) for s in range(3)])
    for method in ("cam", "gradcam"):
        probs, cams = explain_batch(tiny_keras.model, xs, method=method)
        np.testing.assert_allclose(probs, np.asarray(tiny_keras.model(xs.astype(np.float32)))[:, 0], atol=1e-5)
        np.testing.assert_allclose(probs, predict_proba(tiny_model.model, xs), atol=1e-5)  # the app's answer
        assert cams.shape == (3, 1, 1)
    assert np.ptp(probs) > 0.3


def test_gradcam_does_not_mutate_model(tiny_keras):
    model = tiny_keras.model
    n_layers = len(model.layers)
    weights = [w.copy() for w in model.get_weights()]
    xs = preprocess(synthetic_xray(), TINY_SIZE)
    before = np.asarray(model(xs[None].astype(np.float32)))
    for method in ("cam", "gradcam"):
        explain_batch(model, xs, method=method)
    assert len(model.layers) == n_layers and model.name == "pneumo_cnn"
    for a, b in zip(weights, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(np.asarray(model(xs[None].astype(np.float32))), before)


def test_gradcam_zero_weights_model():
    """A model whose logit ignores the features has zero gradients: the heatmap is zeros, no NaN."""
    model = build_model(TINY_SIZE, stem_width=4, widths=(8, 8, 8, 8))
    dense = model.get_layer("logit")
    dense.set_weights([np.zeros_like(w) for w in dense.get_weights()])
    x = preprocess(synthetic_xray(), TINY_SIZE)
    for method in ("cam", "gradcam"):
        probs, cams = explain_batch(model, x, method=method)
        assert probs[0] == pytest.approx(0.5) and not cams.any()
        for cls in (0, 1):
            h = heatmap_from_cam(cams[0], cls, TINY_SIZE)
            assert np.isfinite(h).all() and h.max() == 0.0


def test_cam_equals_gradcam(tiny_keras):
    """For the GAP + dense head, CAM from one forward pass is Grad-CAM (weights = dense kernel / (h*w))."""
    model = tiny_keras.model
    assert cam_head(model) is model.get_layer("logit")
    xs = np.stack([preprocess(synthetic_xray(seed=s, opacity=s % 2 == 1), TINY_SIZE) for s in range(4)])
    p_cam, c_cam = explain_batch(model, xs, method="cam")
    p_grad, c_grad = explain_batch(model, xs, method="gradcam")
    np.testing.assert_allclose(p_cam, p_grad, atol=1e-6)
    assert c_cam.shape == c_grad.shape == (4, 1, 1)  # the tiny model's 32 px input ends in a 1x1 map
    assert np.abs(c_grad).max() > 0
    np.testing.assert_allclose(c_cam, c_grad, rtol=1e-4, atol=1e-5 * float(np.abs(c_grad).max()))
    _, default_c = explain_batch(model, xs)  # 'auto' picks CAM for this head
    np.testing.assert_array_equal(default_c, c_cam)


def test_cam_equals_gradcam_on_a_larger_map(random_64):
    """The same on a 4x4 map, where Grad-CAM's spatial averaging of the gradient really matters."""
    xs = np.stack([preprocess(synthetic_xray(seed=s), 64) for s in range(3)]).astype(np.float32)
    _, c_cam = explain_batch(random_64, xs, method="cam")
    _, c_grad = explain_batch(random_64, xs, method="gradcam")
    assert c_cam.shape == (3, 4, 4) and np.ptp(c_grad) > 0
    np.testing.assert_allclose(c_cam, c_grad, rtol=1e-4, atol=1e-5 * float(np.abs(c_grad).max()))


def test_cam_mean_plus_bias_is_the_logit(tiny_keras):
    """The CAM map is in logit units: its spatial mean plus the dense bias is the model's logit."""
    model = tiny_keras.model
    xs = np.stack([preprocess(synthetic_xray(seed=s, opacity=s == 0), TINY_SIZE) for s in range(3)])
    probs, cams = explain_batch(model, xs)
    bias = float(model.get_layer("logit").get_weights()[1][0])
    logit = np.log(probs / (1 - probs))
    assert np.ptp(logit) > 1.0
    np.testing.assert_allclose(cams.mean(axis=(1, 2)) + bias, logit, atol=1e-4)


def test_other_heads_fall_back_to_gradcam():
    """A head that is not GAP + dense (here: flatten) has no CAM shortcut; 'auto' uses Grad-CAM and 'cam' refuses."""
    import keras
    from keras import layers

    inp = keras.Input((16, 16, 1))
    f = layers.Conv2D(4, 3, padding="same", activation="relu", name="gradcam_conv")(inp)
    logit = layers.Dense(1, name="logit")(layers.Flatten()(f))
    model = keras.Model(inp, layers.Activation("sigmoid")(logit))
    assert cam_head(model) is None
    x = np.random.default_rng(0).random((2, 16, 16, 1)).astype(np.float32)
    auto = explain_batch(model, x)[1]
    assert auto.shape == (2, 16, 16) and np.abs(auto).max() > 0
    np.testing.assert_array_equal(auto, explain_batch(model, x, method="gradcam")[1])
    with pytest.raises(ValueError):
        explain_batch(model, x, method="cam")
    with pytest.raises(ValueError):
        explain_batch(model, x, method="magic")


def test_absolute_scale_keeps_a_low_probability_image_cold():
    """Issue 8: with the absolute scale training stores (pneumo.training.train.cam_scale), an image with
    P(pneumonia) < 0.1 % shows no saturated PNEUMONIA map; the per-image maximum (no scale) stretches the same faint
    evidence to full red."""
    import keras

    from pneumo.training.train import cam_scale

    keras.utils.set_random_seed(1)
    model = build_model(64, stem_width=4, widths=(8, 8, 8))  # 4x4 map
    dense = model.get_layer("logit")
    kernel = np.abs(dense.get_weights()[0])  # (K, 1): every feature now speaks for PNEUMONIA
    dense.set_weights([kernel, np.zeros(1, np.float32)])
    xs = np.stack([preprocess(synthetic_xray(seed=s, opacity=s % 2 == 0), 64) for s in range(6)])
    y = np.arange(6) % 2 == 0
    scale = cam_scale(model, xs, y.astype(int))["PNEUMONIA"]  # the 'validation' scale of this model
    assert scale > 0 and scale != 1.0, "a measured scale, not the fallback"
    faint = 0.03 * scale / float(explain_batch(model, xs[:1])[1].max())  # the map is linear in the kernel
    dense.set_weights([kernel * faint, np.array([-10.0], np.float32)])
    probs, cams = explain_batch(model, xs[:1])
    assert probs[0] < 0.001 and cams.max() > 0
    absolute = heatmap_from_cam(cams[0], 1, 64, scale)
    relative = heatmap_from_cam(cams[0], 1, 64)
    assert 0 < absolute.max() < 0.05, "faint evidence must look faint on the absolute scale"
    assert relative.max() > 0.95, "the per-image maximum saturates it (the old behaviour)"


def test_ensemble_averages_logits_and_keeps_cam(tmp_path):
    """The ensemble model's logit is the mean of its members'; its CAM (one forward pass) is their mean CAM."""
    import keras

    from pneumo.training.networks import ensemble_model

    members = []
    for seed in (1, 2, 3):
        keras.utils.set_random_seed(seed)
        members.append(build_model(32, stem_width=4, widths=(8, 8, 8, 8), cam_stride=16))
    ens = ensemble_model(members)
    x = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 1)).astype("float32")

    def logit(m):
        p = np.asarray(m(x, training=False), np.float64).reshape(-1)
        return np.log(p / (1 - p))

    np.testing.assert_allclose(logit(ens), np.mean([logit(m) for m in members], axis=0), atol=1e-4)
    assert cam_head(ens) is not None, "the ensemble keeps a GAP + dense head: CAM applies"
    _, cam = explain_batch(ens, x, method="cam")
    member_cams = np.mean([explain_batch(m, x, method="cam")[1] for m in members], axis=0)
    np.testing.assert_allclose(cam, member_cams, atol=1e-4)
    _, grad = explain_batch(ens, x, method="gradcam")
    np.testing.assert_allclose(cam, grad, atol=1e-4)
    ens.save(tmp_path / "ens.keras")
    again = keras.saving.load_model(tmp_path / "ens.keras", compile=False)  # pneumo's layers are registered
    np.testing.assert_allclose(np.asarray(again(x)), np.asarray(ens(x)), atol=1e-6)


def _bn_count(model) -> int:
    import keras

    return sum(_bn_count(x) if isinstance(x, keras.Model) else isinstance(x, keras.layers.BatchNormalization)
               for x in model.layers)  # fmt: skip


def test_fold_batchnorm_keeps_outputs_and_names_and_removes_foldable_bn():
    import keras
    from keras import layers

    from pneumo.training.networks import fold_batchnorm

    rng = np.random.default_rng(0)
    inp = keras.Input((16, 16, 1))
    a = layers.Conv2D(4, 3, padding="same", use_bias=False, name="c1")(inp)
    a = layers.BatchNormalization(name="bn1")(a)
    b = layers.Conv2D(4, 3, padding="same", name="c2")(a)  # feeds a BN and an add: must not be folded
    bb = layers.BatchNormalization(name="bn2")(b)
    x = layers.Add(name="add")([b, bb])
    x = layers.SeparableConv2D(6, 3, padding="same", name="sep")(x)
    x = layers.BatchNormalization(name="bn3")(x)
    body = keras.Model(inp, layers.ReLU(name="gradcam_conv")(x), name="body")
    outer_in = keras.Input((16, 16, 1))
    logit = layers.Dense(1, name="logit")(layers.GlobalAveragePooling2D()(body(outer_in)))
    model = keras.Model(outer_in, logit)
    for layer in body.layers:  # non-trivial statistics, as after training
        if isinstance(layer, layers.BatchNormalization):
            c = layer.moving_mean.shape[0]
            gamma, var = rng.uniform(0.5, 2, c), rng.uniform(0.2, 3, c)
            layer.set_weights([gamma, rng.normal(0, 1, c), rng.normal(0, 1, c), var])  # gamma, beta, mean, var
    folded = fold_batchnorm(model)
    x = rng.normal(0, 1, (3, 16, 16, 1)).astype(np.float32)
    np.testing.assert_allclose(folded(x).numpy(), model(x).numpy(), rtol=1e-4, atol=1e-4)
    assert _bn_count(model) == 3 and _bn_count(folded) == 1  # bn2's conv has two consumers
    inner = folded.get_layer("body")
    assert inner.get_layer("gradcam_conv") is not None and folded.get_layer("logit") is not None
    model.get_layer("logit").set_weights([np.zeros((6, 1)), np.ones(1)])  # the copy does not follow the original
    assert not np.allclose(folded(x).numpy(), model(x).numpy())


def test_keras_loader_runs_folded_copies_with_the_same_answers(tiny_lung_model_path):
    from pneumo.pipeline import Models, classify_224, load_models

    models = load_models(tiny_lung_model_path, with_gate=False, loader=load_keras_network)
    assert _bn_count(models.classifier.model) == 0 and _bn_count(models.lungs.model) == 0
    plain = keras_network(*load_keras_with_metadata(tiny_lung_model_path), tiny_lung_model_path)
    assert _bn_count(plain.model) > 0
    x = np.stack([synthetic_xray(224, 224, seed=s) for s in range(2)])
    out = classify_224(models, x)
    ref = classify_224(Models(plain, models.lungs, None), x)  # the classifier as saved (same lungs)
    np.testing.assert_allclose(out.prob, ref.prob, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out.cam224, ref.cam224, rtol=1e-3, atol=1e-4)


def test_fold_batchnorm_leaves_unsafe_pairs_alone():
    """A conv with its own activation, a conv that is also a model output and the explained layer keep their BN."""
    import keras
    from keras import layers

    from pneumo.training.networks import fold_batchnorm

    rng = np.random.default_rng(1)
    inp = keras.Input((8, 8, 1))
    a = layers.Conv2D(3, 3, padding="same", activation="relu", name="act")(inp)
    a = layers.BatchNormalization(name="bn_act")(a)
    b = layers.Conv2D(3, 3, padding="same", name="also_out")(a)
    bb = layers.BatchNormalization(name="bn_out")(b)
    c = layers.Conv2D(3, 3, padding="same", name=config.GRADCAM_LAYER)(bb)
    cc = layers.BatchNormalization(name="bn_cam")(c)
    model = keras.Model(inp, [cc, b])
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            gamma, var = rng.uniform(0.5, 2, 3), rng.uniform(0.2, 3, 3)
            layer.set_weights([gamma, rng.normal(0, 1, 3), rng.normal(0, 1, 3), var])
    folded = fold_batchnorm(model)
    assert _bn_count(folded) == 3
    x = rng.normal(0, 1, (2, 8, 8, 1)).astype(np.float32)
    for got, want in zip(folded(x), model(x), strict=True):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)
