"""The CNN and Grad-CAM on a tiny random model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pneumo import config
from pneumo.explain.cam import heatmap_from_cam
from pneumo.explain.draw import overlay_heatmap
from pneumo.io.preprocess import preprocess
from pneumo.nets.modelfile import metadata_path
from pneumo.pipeline import label_for, predict_proba
from pneumo.training.gradcam import cam_head, cam_scale, colorbar, compute_heatmap, explain_batch, mask_heatmap
from pneumo.training.networks import build_model, load_model
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


def test_cam_equals_gradcam(tiny_model):
    """For the GAP + dense head, CAM from one forward pass is Grad-CAM (weights = dense kernel / (h*w))."""
    assert cam_head(tiny_model.model) is tiny_model.model.get_layer("logit")
    xs = np.stack([preprocess(synthetic_xray(seed=s, opacity=s % 2 == 1), TINY_SIZE) for s in range(4)])
    p_cam, c_cam = explain_batch(tiny_model.model, xs, method="cam")
    p_grad, c_grad = explain_batch(tiny_model.model, xs, method="gradcam")
    np.testing.assert_allclose(p_cam, p_grad, atol=1e-6)
    assert c_cam.shape == c_grad.shape == (4, 1, 1)  # the tiny model's 32 px input ends in a 1x1 map
    assert np.abs(c_grad).max() > 0
    np.testing.assert_allclose(c_cam, c_grad, rtol=1e-4, atol=1e-5 * float(np.abs(c_grad).max()))
    default_p, default_c = explain_batch(tiny_model.model, xs)  # 'auto' picks CAM for this head
    np.testing.assert_array_equal(default_c, c_cam)


def test_cam_equals_gradcam_on_a_larger_map():
    """The same on a 4x4 map, where Grad-CAM's spatial averaging of the gradient really matters."""
    import keras

    keras.utils.set_random_seed(3)
    model = build_model(64, stem_width=4, widths=(8, 8, 8))  # 64 / 16 = 4x4 map: averaging over many cells
    xs = np.stack([preprocess(synthetic_xray(seed=s), 64) for s in range(3)]).astype(np.float32)
    _, c_cam = explain_batch(model, xs, method="cam")
    _, c_grad = explain_batch(model, xs, method="gradcam")
    assert c_cam.shape == (3, 4, 4)
    np.testing.assert_allclose(c_cam, c_grad, rtol=1e-4, atol=1e-5 * float(np.abs(c_grad).max()))


def test_cam_mean_plus_bias_is_the_logit(tiny_model):
    """The CAM map is in logit units: its spatial mean plus the dense bias is the model's logit."""
    xs = np.stack([preprocess(synthetic_xray(seed=s), TINY_SIZE) for s in range(3)])
    probs, cams = explain_batch(tiny_model.model, xs)
    bias = float(tiny_model.model.get_layer("logit").get_weights()[1][0])
    logit = np.log(probs / (1 - probs))
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
    np.testing.assert_array_equal(explain_batch(model, x)[1], explain_batch(model, x, method="gradcam")[1])
    with pytest.raises(ValueError):
        explain_batch(model, x, method="cam")
    with pytest.raises(ValueError):
        explain_batch(model, x, method="magic")


def test_absolute_scale_keeps_a_low_probability_image_cold():
    """Issue 8: with one absolute scale, an image with P(pneumonia) < 0.1 % no longer shows a saturated PNEUMONIA map;
    the per-image maximum (no scale) stretches the same faint evidence to full red."""
    import keras

    keras.utils.set_random_seed(1)
    model = build_model(64, stem_width=4, widths=(8, 8, 8))  # 4x4 map
    xs = np.stack([preprocess(synthetic_xray(seed=s, opacity=s % 2 == 0), 64) for s in range(6)])
    scale = cam_scale(explain_batch(model, xs)[1])  # the 'validation' scale of this model
    dense = model.get_layer("logit")
    kernel = np.abs(dense.get_weights()[0])  # (K, 1): every feature now speaks for PNEUMONIA, a little
    dense.set_weights([kernel, np.zeros(1, np.float32)])
    faint = 0.03 * scale / float(explain_batch(model, xs[:1])[1].max())  # the map is linear in the kernel
    dense.set_weights([kernel * faint, np.array([-10.0], np.float32)])
    probs, cams = explain_batch(model, xs[:1])
    assert probs[0] < 0.001 and cams.max() > 0
    absolute = heatmap_from_cam(cams[0], 1, 64, scale)
    relative = heatmap_from_cam(cams[0], 1, 64)
    assert absolute.max() < 0.05, "faint evidence must look faint on the absolute scale"
    assert relative.max() > 0.95, "the per-image maximum saturates it (the old behaviour)"


def test_heatmap_scale_arithmetic_and_cam_scale():
    cam = np.array([[0.5, -1.0], [2.0, 0.0]], np.float32)
    np.testing.assert_allclose(heatmap_from_cam(cam, 1, 2, scale=1.0), [[0.5, 0.0], [1.0, 0.0]])  # clipped at 1
    np.testing.assert_allclose(heatmap_from_cam(cam, 0, 2, scale=4.0), [[0.0, 0.25], [0.0, 0.0]])
    np.testing.assert_allclose(heatmap_from_cam(cam, 1, 2), [[0.25, 0.0], [1.0, 0.0]], atol=1e-6)  # per-image max
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError):
            heatmap_from_cam(cam, 1, 2, scale=bad)
    with pytest.raises(ValueError):
        heatmap_from_cam(cam, 2, 2)
    cams = np.linspace(-100, 100, 201, dtype=np.float32).reshape(201, 1, 1)  # |cam| = 0..100
    assert cam_scale(cams, 99.0) == pytest.approx(99.0)
    assert cam_scale(np.zeros((3, 2, 2))) > 0  # never a zero divisor


def _float_blend(img: np.ndarray, heat: np.ndarray, alpha: float) -> np.ndarray:
    """The reference arithmetic of the overlay: image * (1 - a) + jet(heat) * a with a = alpha * heat."""
    import cv2

    h, w = img.shape
    level = cv2.resize(np.round(heat * 255).astype(np.uint8), (w, h), interpolation=cv2.INTER_LINEAR)
    colour = cv2.applyColorMap(level, cv2.COLORMAP_JET)[:, :, ::-1].astype(np.float64)  # RGB
    a = alpha * level.astype(np.float64)[:, :, None] / 255.0
    return img[:, :, None] * (1 - a) + colour * a


def test_overlay_matches_the_float_blend():
    img = synthetic_xray(width=200, height=150, seed=2)
    yy, xx = np.mgrid[0:32, 0:32]
    heat = np.exp(-((xx - 12) ** 2 + (yy - 20) ** 2) / 60.0).astype(np.float32)
    for alpha in (0.4, 1.0):
        out = overlay_heatmap(img, heat, alpha).astype(np.float64)
        assert np.abs(out - _float_blend(img, heat, alpha)).max() <= 2.0
    rgb = np.dstack([img, img, img])
    np.testing.assert_array_equal(overlay_heatmap(rgb, heat, 0.4), overlay_heatmap(img, heat, 0.4))


def test_overlay_within_mask_and_lung_outline():
    img = synthetic_xray(width=400, height=300, seed=5)
    heat = np.ones((32, 32), np.float32)  # hot everywhere
    lungs = np.zeros((64, 64), np.uint8)  # a mask at another size than the image
    lungs[16:48, 8:28] = 1
    lungs[16:48, 36:56] = 1
    gray = np.repeat(img[:, :, None], 3, axis=2)
    masked = overlay_heatmap(img, heat, 0.5, within=lungs)
    # outside the lungs the radiograph is untouched, inside it is tinted
    np.testing.assert_array_equal(masked[10:50, 10:50], gray[10:50, 10:50])
    inside = masked[150, 100].astype(int)
    assert inside.max() - inside.min() > 30
    np.testing.assert_allclose(mask_heatmap(heat, lungs * 255), mask_heatmap(heat, lungs.astype(bool)))
    # a thin outline in the outline colour around both lungs, and nowhere near the image centre
    drawn = overlay_heatmap(img, np.zeros((32, 32), np.float32), 0.5, outline=lungs)
    diff = np.abs(drawn.astype(int) - np.array(config.OUTLINE_COLOUR)).max(axis=2)  # (H, W)
    magenta = diff < 60  # anti-aliased: near the outline colour, which no grey pixel is
    assert 200 < magenta.sum() < 0.05 * magenta.size
    assert magenta[:, :200].any() and magenta[:, 200:].any()
    assert not magenta[140:160, 190:210].any() and not magenta[:50].any()
    with pytest.raises(ValueError):
        overlay_heatmap(img, heat, outline=np.zeros((2, 2, 2)))


def test_colorbar_runs_from_cold_to_hot_with_labels():
    bar = colorbar(400, 60)
    assert bar.shape == (60, 400, 3) and bar.dtype == np.uint8
    left, right = bar[5, 2].astype(int), bar[5, -3].astype(int)
    assert left[2] > left[0] + 60, "cold end is blue"
    assert right[0] > right[2] + 60, "hot end is red"
    text = bar[32:, :]
    assert (text.min(axis=2) < 100).sum() > 50, "labels are written under the bar"
    with pytest.raises(ValueError):
        colorbar(10, 10)


def test_class_scale_reads_the_metadata():
    from pneumo.explain.cam import class_scale

    assert class_scale({}, 1) is None  # no cam_scale: each map scaled to its own maximum
    assert class_scale({"cam_scale": 0.25}, 1) == 0.25
    assert class_scale({"cam_scale": {"NORMAL": 0.5, "PNEUMONIA": 0.2}}, 0) == 0.5
    assert class_scale({"cam_scale": {"NORMAL": 0.5, "PNEUMONIA": 0.2}}, 1) == 0.2
    for bad in (0, -1, "x", None):
        assert class_scale({"cam_scale": bad}, 1) is None


def test_labels_at_the_threshold():
    assert label_for(0.7, 0.5) == "PNEUMONIA" and label_for(0.3, 0.5) == "NORMAL"
    assert label_for(0.5, 0.5) == "PNEUMONIA"


def test_ensemble_averages_logits_and_keeps_cam(tmp_path):
    """The ensemble model's logit is the mean of its members'; its CAM (one forward pass) is their mean CAM."""
    import keras

    from pneumo.training.gradcam import cam_head, explain_batch
    from pneumo.training.networks import build_model, ensemble_model, load_model

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
    again = load_model(tmp_path / "ens.keras").model
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


def test_load_models_runs_folded_copies_with_the_same_answers(tiny_lung_model_path):
    from pneumo.pipeline import Models, classify_224, load_models

    models = load_models(tiny_lung_model_path)
    assert _bn_count(models.classifier.model) == 0 and _bn_count(models.lungs.model) == 0
    plain = load_model(tiny_lung_model_path)
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


def test_overlay_blends_only_where_there_is_heat_with_the_same_result():
    """The blend runs inside the box of non-zero heat; every pixel equals the whole-frame blend's (a reference
    written here), for grey and RGB images, heat at an edge, none at all, and heat everywhere."""
    import cv2

    from pneumo.explain.draw import _rgb_lut

    def whole_frame(image, heat, alpha):
        h, w = image.shape[:2]
        level = cv2.resize(np.round(np.clip(heat, 0, 1) * 255).astype(np.uint8), (w, h), interpolation=cv2.INTER_LINEAR)
        weight = alpha * np.arange(256, dtype=np.float64) / 255.0
        keep = cv2.LUT(level, np.round(255.0 * (1.0 - weight)).astype(np.uint8))
        tint = cv2.applyColorMap(level, np.round(_rgb_lut(cv2.COLORMAP_JET) * weight[:, None, None]).astype(np.uint8))
        rgb = image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
        return cv2.add(cv2.multiply(rgb, cv2.merge([keep, keep, keep]), scale=1.0 / 255.0), tint)

    img = synthetic_xray(width=301, height=257, seed=4)
    heats = [np.zeros((32, 32), np.float32), np.ones((32, 32), np.float32)]
    corner = np.zeros((32, 32), np.float32)
    corner[:5, 27:] = 0.8
    centre = np.zeros((32, 32), np.float32)
    centre[10:20, 8:14] = np.linspace(0.1, 1.0, 6)
    heats += [corner, centre]
    for heat in heats:
        for image in (img, np.dstack([img, 255 - img, img // 2])):
            before = image.copy()
            np.testing.assert_array_equal(overlay_heatmap(image, heat, 0.45), whole_frame(image, heat, 0.45))
            np.testing.assert_array_equal(image, before)  # the caller's image is left alone
