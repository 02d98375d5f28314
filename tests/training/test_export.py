"""pneumo.training.export: the TFLite copy the app runs (pneumo.nets.load_network) gives the Keras model's answers."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from pneumo import config
from pneumo.io.preprocess import preprocess
from pneumo.nets.lite import forward_cam, load_network
from pneumo.nets.modelfile import file_sha256
from pneumo.pipeline import predict_proba
from pneumo.training.export import export
from pneumo.training.gradcam import explain_batch
from pneumo.training.networks import load_keras_with_metadata
from tests.conftest import TINY_SIZE, synthetic_xray


@pytest.fixture(scope="module")
def exported(tiny_model_path, tmp_path_factory):
    """A copy of the tiny model exported here (the fixture's own copy was made by the same function)."""
    folder = tmp_path_factory.mktemp("export")
    path = folder / tiny_model_path.name
    shutil.copy(tiny_model_path, path)
    meta = json.loads(tiny_model_path.with_suffix(".json").read_text())
    meta.pop("tflite")
    path.with_suffix(".json").write_text(json.dumps(meta))
    return path, export(path)


def _inputs(n: int = 6) -> np.ndarray:
    return np.stack([preprocess(synthetic_xray(seed=s, opacity=s % 2 == 0), TINY_SIZE) for s in range(n)])


def test_export_records_the_copy_and_its_source(exported):
    path, block = exported
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["tflite"] == block and meta["threshold"] == 0.5  # the rest of the metadata is kept
    assert block["file"] == "tiny.tflite" and (path.parent / block["file"]).stat().st_size > 0
    assert block["runs"] == ["cam", "gradcam_conv"] and sorted(block["outputs"]) == ["cam", "probability"]
    assert block["keras_sha256"] == file_sha256(path)
    assert block["tflite_sha256"] == file_sha256(path.parent / block["file"])
    assert block["export_version"] == config.ENGINE_EXPORT_VERSION


def test_exported_copy_gives_the_keras_probability_and_cam(exported):
    """The flatbuffer (batch norm folded, CAM as a 1x1 convolution) against the Keras model as saved."""
    path, _ = exported
    lite = load_network(path)
    model, _ = load_keras_with_metadata(path)
    x = _inputs()
    p_lite, cam_lite = forward_cam(lite.model, x, lite.gradcam_layer)
    p_keras, cam_keras = explain_batch(model, x, method="gradcam")  # the reference: forward and backward pass
    assert np.ptp(p_keras) > 0.3 and np.ptp(cam_keras) > 1.0, "the answers differ between images"
    np.testing.assert_allclose(p_lite, p_keras, atol=1e-5)
    np.testing.assert_allclose(p_lite, np.asarray(model(x.astype(np.float32)))[:, 0], atol=1e-5)
    assert cam_lite.shape == cam_keras.shape == (len(x), 1, 1)
    np.testing.assert_allclose(cam_lite, cam_keras, atol=1e-5 * max(1.0, float(np.abs(cam_keras).max())))
    np.testing.assert_allclose(predict_proba(lite.model, x), p_keras, atol=1e-5)  # the probability-only view


def test_exported_lung_classifier_gives_the_keras_cam_on_a_finer_map(tiny_lung_model_path):
    """The same on the lungs-mode tiny classifier (CAM stride 16: a 2x2 map, where the 1x1 convolution matters)."""
    lite = load_network(tiny_lung_model_path)
    model, _ = load_keras_with_metadata(tiny_lung_model_path)
    x = _inputs()
    p_lite, cam_lite = forward_cam(lite.model, x, lite.gradcam_layer)
    p_keras, cam_keras = explain_batch(model, x, method="gradcam")
    assert cam_keras.shape == (len(x), 2, 2) and np.ptp(cam_keras) > 0
    np.testing.assert_allclose(p_lite, p_keras, atol=1e-5)
    np.testing.assert_allclose(cam_lite, cam_keras, atol=1e-5 * max(1.0, float(np.abs(cam_keras).max())))
