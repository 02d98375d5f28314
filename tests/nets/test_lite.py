"""pneumo.engine: TFLite flatbuffers give the same answers as TensorFlow, and only for the file they were made from."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest

from pneumo import config, pipeline
from pneumo.io.decode import LoadedImage
from pneumo.nets import lite as engine
from tests.conftest import make_tiny_lung_models, synthetic_xray


def _images(n: int = 4) -> list[LoadedImage]:
    return [LoadedImage(synthetic_xray(300, 260, seed=i, opacity=bool(i % 2))) for i in range(n)]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny lungs-mode classifier and its U-Net, both exported."""
    path = make_tiny_lung_models(tmp_path_factory.mktemp("exported"))
    for p in (path, path.parent / "pneumo_lungs.keras"):
        engine.export(p)
    return path


def test_export_records_the_flatbuffer_and_its_source(exported):
    from pneumo.present.evaluation import file_sha256

    meta = json.loads(exported.with_suffix(".json").read_text())["tflite"]
    assert meta["file"] == "tiny.tflite" and (exported.parent / meta["file"]).stat().st_size > 0
    assert meta["runs"] == ["cam", "gradcam_conv"] and sorted(meta["outputs"]) == ["cam", "probability"]
    assert meta["keras_sha256"] == file_sha256(exported)
    lungs_meta = json.loads((exported.parent / "pneumo_lungs.json").read_text())["tflite"]
    assert lungs_meta["runs"] == "forward" and len(lungs_meta["signature_outputs"]) == 1


def test_flatbuffers_give_the_tensorflow_answers(exported, monkeypatch):
    lite = pipeline.load_models(exported, with_gate=False)
    assert engine.attached(lite.classifier.model, ("cam", "gradcam_conv")) is not None
    assert engine.attached(lite.lungs.model, "forward") is not None
    monkeypatch.setattr(config, "INFERENCE_ENGINE", "tensorflow")
    tf_models = pipeline.load_models(exported, with_gate=False)
    assert engine.attached(tf_models.classifier.model, ("cam", "gradcam_conv")) is None
    from pneumo.pipeline import predict_proba

    x = np.stack([synthetic_xray(32, 32, seed=i)[..., None] for i in range(3)])
    assert engine.attached(lite.classifier.model, "forward") is not None  # predict_proba runs the flatbuffer too
    np.testing.assert_allclose(predict_proba(lite.model, x), predict_proba(tf_models.model, x), atol=1e-5)
    a = pipeline.analyze_images(lite, _images(), force=True)
    b = pipeline.analyze_images(tf_models, _images(), force=True)
    for x, y in zip(a, b, strict=True):
        assert x.probability == pytest.approx(y.probability, abs=1e-4) and x.label == y.label
        assert np.mean(x.lung_mask != y.lung_mask) < 1e-3  # a rare boundary pixel may round the other way
        np.testing.assert_allclose(x.cam224, y.cam224, atol=1e-4 * max(1.0, float(np.abs(y.cam224).max())))


def test_flatbuffer_cam_equals_grad_cam(exported):
    """The flatbuffer's CAM (1x1 convolution with the dense kernel / hw) is Grad-CAM's map for a GAP + dense head."""
    from pneumo.nets.lite import forward_cam as explain
    from pneumo.training.gradcam import explain_batch

    loaded = pipeline.load_models(exported, with_gate=False).classifier
    x = np.stack([synthetic_xray(loaded.image_size, loaded.image_size, seed=i)[..., None] for i in range(3)])
    p_cam, cam = explain(loaded.model, x, loaded.gradcam_layer)  # the flatbuffer
    p_grad, grad = explain_batch(loaded.model, x, loaded.gradcam_layer, method="gradcam")  # TensorFlow, backward
    np.testing.assert_allclose(p_cam, p_grad, atol=1e-5)
    np.testing.assert_allclose(cam, grad, atol=1e-5 * max(1.0, float(np.abs(grad).max())))


def test_named_outputs_keep_their_names(tmp_path):
    """The gate returns a dict of heads; through the flatbuffer it is the same dict."""
    import keras

    from pneumo.training.networks import forward, load_keras_with_metadata
    from pneumo.training.train_scope import Settings, build_gate

    keras.utils.set_random_seed(0)
    path = tmp_path / "gate.keras"
    build_gate(Settings(image_size=32, stem_width=4, widths=(8, 8))).save(path)
    path.with_suffix(".json").write_text(json.dumps({"input_size": 32}))
    engine.export(path)
    model, meta = load_keras_with_metadata(path, "gate")
    x = np.random.default_rng(0).uniform(0, 255, (5, 32, 32, 1)).astype(np.float32)
    expect = forward(model, x)  # TensorFlow
    assert engine.load_for(model, path, meta)
    got = engine.forward(model, x, batch_size=2)  # the flatbuffer; batch sizes 2, 2, 1: the interpreter resizes
    assert set(got) == set(expect) == {"kind", "orientation"}
    for k in expect:
        np.testing.assert_allclose(got[k], expect[k], atol=1e-5)


def test_a_stale_flatbuffer_is_not_used(exported, tmp_path, caplog):
    """A retrained .keras with the old flatbuffer beside it runs on TensorFlow, with a warning naming the fix."""
    import keras

    from pneumo.training.networks import build_model

    for f in exported.parent.iterdir():
        shutil.copy(f, tmp_path / f.name)
    keras.utils.set_random_seed(7)
    size = pipeline.load_models(exported, with_gate=False).image_size
    build_model(size, stem_width=4, widths=(8, 8, 8, 8), cam_stride=16).save(tmp_path / exported.name)  # "retrained"
    with caplog.at_level(logging.WARNING, logger="pneumo.engine"):
        models = pipeline.load_models(tmp_path / exported.name, with_gate=False)
    assert engine.attached(models.classifier.model, ("cam", "gradcam_conv")) is None
    assert engine.attached(models.lungs.model, "forward") is not None  # the U-Net did not change
    assert "python -m pneumo.nets.lite" in caplog.text
    (res,) = pipeline.analyze_images(models, _images(1), force=True)
    assert 0.0 <= res.probability <= 1.0


def test_the_committed_models_ship_their_flatbuffers():
    """Each committed network has a flatbuffer made from that very file (else the app silently runs slower)."""
    from pneumo.present.evaluation import file_sha256

    for path in (config.DEFAULT_MODEL_PATH, config.LUNG_MODEL_PATH, config.SCOPE_MODEL_PATH):
        if not path.exists():
            pytest.skip("no committed models in this checkout")
        block = json.loads(path.with_suffix(".json").read_text())["tflite"]
        assert block["keras_sha256"] == file_sha256(path), f"run: python -m pneumo.nets.lite {path}"
        assert block["tflite_sha256"] == file_sha256(path.parent / block["file"])
        assert block["export_version"] == config.ENGINE_EXPORT_VERSION


def test_one_image_invokes_each_network_once(exported, monkeypatch):
    """The CAM flatbuffer returns probability and map together: one invoke per network and image, not one per output."""
    calls: list[tuple[str, ...]] = []
    original = engine.LiteNet.__call__
    monkeypatch.setattr(
        engine.LiteNet, "__call__", lambda self, x: calls.append(tuple(self.outputs)) or original(self, x)
    )
    models = pipeline.load_models(exported, with_gate=False)
    pipeline.analyze_images(models, _images(1), force=True)
    assert sorted(calls) == sorted(
        [("lung_probability",), tuple(json.loads(exported.with_suffix(".json").read_text())["tflite"]["outputs"])]
    )


def test_the_benchmark_says_which_engine_ran(exported, monkeypatch):
    from pneumo.bench.run import engine_words

    assert engine_words(pipeline.load_models(exported, with_gate=False)) == "classifier TFLite, lungs TFLite"
    monkeypatch.setattr(config, "INFERENCE_ENGINE", "tensorflow")
    assert engine_words(pipeline.load_models(exported, with_gate=False)) == "classifier TensorFlow, lungs TensorFlow"


def _copy(exported, tmp_path):
    for f in exported.parent.iterdir():
        shutil.copy(f, tmp_path / f.name)
    return tmp_path / exported.name


@pytest.mark.parametrize("damage", ["garbage", "other_flatbuffer", "old_export", "no_block"])
def test_a_damaged_or_foreign_flatbuffer_is_not_used(exported, tmp_path, caplog, damage):
    """Replaced bytes, another network's flatbuffer, an older export or no record: TensorFlow runs, and says so."""
    path = _copy(exported, tmp_path)
    meta = json.loads(path.with_suffix(".json").read_text())
    if damage == "garbage":
        (tmp_path / "tiny.tflite").write_bytes(b"not a flatbuffer")
    elif damage == "other_flatbuffer":
        shutil.copy(tmp_path / "pneumo_lungs.tflite", tmp_path / "tiny.tflite")
    elif damage == "old_export":
        meta["tflite"]["export_version"] = config.ENGINE_EXPORT_VERSION - 1
    else:
        del meta["tflite"]
    path.with_suffix(".json").write_text(json.dumps(meta))
    with caplog.at_level(logging.INFO, logger="pneumo.engine"):
        models = pipeline.load_models(path, with_gate=False)
    assert engine.attached(models.classifier.model, ("cam", "gradcam_conv")) is None
    assert engine.attached(models.classifier.model, "forward") is None
    assert "runs on TensorFlow" in caplog.text or "running it on TensorFlow" in caplog.text
    (res,) = pipeline.analyze_images(models, _images(1), force=True)
    assert 0.0 <= res.probability <= 1.0


def test_one_flatbuffer_serves_many_threads(exported):
    """The CLI's workers and the app's sessions call the same network at once: each gets the answers it would get
    alone."""
    from concurrent.futures import ThreadPoolExecutor

    models = pipeline.load_models(exported, with_gate=False)
    net = engine.attached(models.classifier.model, ("cam", "gradcam_conv"))
    rng = np.random.default_rng(0)
    xs = [rng.uniform(0, 255, (int(rng.integers(1, 5)), 32, 32, 1)).astype(np.float32) for _ in range(24)]
    alone = [net(x) for x in xs]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(net, xs))
    for a, b in zip(alone, together, strict=True):
        for u, v in zip(a, b, strict=True):
            np.testing.assert_array_equal(u, v)


def test_analyze_stream_on_flatbuffers_with_several_workers(exported):
    from pneumo.io.decode import ImageLoadError

    models = pipeline.load_models(exported, with_gate=False)
    images = _images(9)
    stream = [(i, img) for i, img in enumerate(images)] + [(9, ImageLoadError("unreadable"))]
    out = list(pipeline.analyze_stream(models, iter(stream), batch_size=2, workers=3))
    assert [k for k, _ in out] == list(range(10)) and isinstance(out[-1][1], ImageLoadError)
    for (_, r), e in zip(out, pipeline.analyze_images(models, images), strict=False):
        assert r.probability == e.probability and r.label == e.label


def test_the_committed_flatbuffers_give_the_tensorflow_answers(monkeypatch):
    """The shipped copies, not only freshly exported tiny ones: one synthetic film through both engines."""
    if not all(p.exists() for p in (config.DEFAULT_MODEL_PATH, config.LUNG_MODEL_PATH, config.SCOPE_MODEL_PATH)):
        pytest.skip("no committed models in this checkout")
    from pneumo.bench.run import engine_words

    lite = pipeline.load_models(config.DEFAULT_MODEL_PATH)
    assert "TensorFlow" not in engine_words(lite)
    monkeypatch.setattr(config, "INFERENCE_ENGINE", "tensorflow")
    tf_models = pipeline.load_models(config.DEFAULT_MODEL_PATH)
    images = [LoadedImage(synthetic_xray(600, 500, seed=s, opacity=bool(s))) for s in range(2)]
    for a, b in zip(pipeline.analyze_images(lite, images, force=True),
                    pipeline.analyze_images(tf_models, images, force=True), strict=True):  # fmt: skip
        assert a.probability == pytest.approx(b.probability, abs=1e-4)
        assert a.warnings == b.warnings and a.label == b.label
        np.testing.assert_allclose(a.cam224, b.cam224, atol=1e-4 * max(1.0, float(np.abs(b.cam224).max())))


def test_engine_only_loads_lite_models_with_the_same_answers(exported, tmp_path):
    """The app's and the CLI's load: LiteModels when every copy is fresh, else Keras networks (still right)."""
    import keras

    lite = pipeline.load_models(exported, with_gate=False, engine_only=True)
    assert isinstance(lite.classifier.model, engine.LiteModel) and isinstance(lite.lungs.model, engine.LiteModel)
    assert lite.classifier.model.input_shape == (None, 32, 32, 1)
    full = pipeline.load_models(exported, with_gate=False)
    for a, b in zip(pipeline.analyze_images(lite, _images(), force=True),
                    pipeline.analyze_images(full, _images(), force=True), strict=True):  # fmt: skip
        assert a.probability == pytest.approx(b.probability, abs=1e-6) and a.label == b.label
        np.testing.assert_array_equal(a.lung_mask, b.lung_mask)
    path = _copy(exported, tmp_path)
    (tmp_path / "pneumo_lungs.tflite").write_bytes(b"stale")  # one network without a fresh copy: Keras for all
    mixed = pipeline.load_models(path, with_gate=False, engine_only=True)
    assert isinstance(mixed.classifier.model, keras.Model) and isinstance(mixed.lungs.model, keras.Model)
    assert engine.attached(mixed.classifier.model, ("cam", "gradcam_conv")) is not None


def test_the_app_path_on_the_committed_models_never_imports_tensorflow():
    """Decode, scope gate, lungs, classifier + CAM, overlay in a fresh process: no TensorFlow, no Keras, the same
    probability as the Keras path in this process."""
    import subprocess
    import sys

    if not config.DEFAULT_MODEL_PATH.exists():
        pytest.skip("no committed models in this checkout")
    code = (
        "import sys, json; from tests.conftest import synthetic_xray; from pneumo import pipeline; "
        "from pneumo.io import LoadedImage; from pneumo.explain import result_overlay, shown_class; "
        "m = pipeline.load_models(engine_only=True); "
        "img = LoadedImage(synthetic_xray(600, 500, seed=1, opacity=True)); "
        "r = pipeline.analyze_images(m, [img], force=True)[0]; "
        "o = result_overlay(r, m.metadata, shown_class(r, None, m.threshold)); "
        "print(json.dumps([r.probability, o.shape[2], 'tensorflow' in sys.modules, 'keras' in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=config.ROOT_DIR, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    p, channels, tf_loaded, keras_loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert channels == 3 and not tf_loaded and not keras_loaded
    keras_path = pipeline.load_models()
    (ref,) = pipeline.analyze_images(
        keras_path, [LoadedImage(synthetic_xray(600, 500, seed=1, opacity=True))], force=True
    )
    assert p == pytest.approx(ref.probability, abs=1e-4)
