"""The TFLite runtime: it gives the Keras networks' answers, and it refuses a missing, tampered or stale copy with a
message that names the export command (no silent TensorFlow fallback)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from pneumo.io import preprocess
from pneumo.nets import EXPORT_COMMAND, ModelFileError, describe, forward, forward_cam, load_network
from pneumo.pipeline import load_models, predict_proba
from tests.conftest import TINY_SIZE, synthetic_xray


def inputs(n: int = 6) -> np.ndarray:
    return np.stack([preprocess(synthetic_xray(seed=40 + i, opacity=bool(i % 2)), TINY_SIZE) for i in range(n)])


def test_tflite_gives_the_keras_probability_and_cam(tiny_model, tiny_keras):
    x = inputs()
    p_lite, cam_lite = forward_cam(tiny_model.model, x, tiny_model.gradcam_layer)
    p_keras, cam_keras = forward_cam(tiny_keras.model, x, tiny_keras.gradcam_layer)
    assert np.ptp(p_lite) > 0.3  # the tiny model tells the pictures apart, so agreement means something
    np.testing.assert_allclose(p_lite, p_keras, atol=1e-5)
    np.testing.assert_allclose(cam_lite, cam_keras, atol=1e-4)
    np.testing.assert_allclose(predict_proba(tiny_model.model, x), p_lite, atol=1e-6)
    assert np.asarray(forward(tiny_model.model, x)).shape == (len(x), 1)


def copy_model(src, dest):
    dest.mkdir()
    for f in src.parent.glob(f"{src.stem}.*"):
        shutil.copy2(f, dest / f.name)
    return dest / src.name


def assert_refused(path, match: str) -> None:
    for load in (lambda: load_network(path), lambda: load_models(path, with_gate=False)):
        with pytest.raises(ModelFileError, match=match) as err:
            load()
        assert EXPORT_COMMAND in str(err.value)


def test_a_missing_copy_is_refused_with_the_export_command(tiny_model_path, tmp_path):
    path = copy_model(tiny_model_path, tmp_path / "m")
    path.with_suffix(".tflite").unlink()
    assert_refused(path, "missing")


def test_a_tampered_copy_is_refused(tiny_model_path, tmp_path):
    path = copy_model(tiny_model_path, tmp_path / "m")
    flat = path.with_suffix(".tflite")
    data = bytearray(flat.read_bytes())
    data[len(data) // 2] ^= 0xFF
    flat.write_bytes(bytes(data))
    assert_refused(path, "not the file the export wrote")


@pytest.mark.parametrize(("key", "value", "match"), [("keras_sha256", "0" * 64, "made from another"),
                                                     ("export_version", -1, "another export version")])  # fmt: skip
def test_a_stale_copy_is_refused(tiny_model_path, tmp_path, key, value, match):
    path = copy_model(tiny_model_path, tmp_path / "m")
    meta_file = path.with_suffix(".json")
    meta = json.loads(meta_file.read_text())
    meta["tflite"][key] = value
    meta_file.write_text(json.dumps(meta))
    assert_refused(path, match)


def test_metadata_without_a_copy_is_refused(tiny_model_path, tmp_path):
    path = copy_model(tiny_model_path, tmp_path / "m")
    meta_file = path.with_suffix(".json")
    meta = json.loads(meta_file.read_text())
    del meta["tflite"]
    meta_file.write_text(json.dumps(meta))
    assert_refused(path, "names no TFLite copy")


def test_a_model_without_metadata_is_refused(tiny_model_path, tmp_path):
    path = copy_model(tiny_model_path, tmp_path / "m")
    path.with_suffix(".json").unlink()
    with pytest.raises(ModelFileError, match="no metadata"):
        load_network(path)


def test_a_bare_keras_model_has_nothing_to_run_it(tiny_keras):
    from pneumo.training.networks import build_model

    with pytest.raises(ModelFileError, match="nothing runs"):
        forward(build_model(TINY_SIZE, stem_width=4, widths=(8, 8, 8, 8)), inputs(1))


def test_describe_names_the_runtime(tiny_lung_model_path):
    from pneumo.training.networks import load_keras_network

    assert describe(load_models(tiny_lung_model_path)) == "classifier TFLite, lungs TFLite"
    keras_models = load_models(tiny_lung_model_path, loader=load_keras_network)
    assert describe(keras_models) == "classifier TensorFlow, lungs TensorFlow"
