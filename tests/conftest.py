"""Shared fixtures: synthetic radiograph-like images and tiny models with metadata and TFLite copies (built once per
run; the classifier is trained for a few epochs on synthetic chests, so its output depends on the picture)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]
TINY_SIZE = 32


def synthetic_xray(width: int = 300, height: int = 260, seed: int = 0, opacity: bool = False) -> np.ndarray:
    """A uint8 (H, W) image with a chest-like layout: dark lungs, bright mediastinum, ribs, noise.

    ``opacity`` adds a bright blob in the right lung (a stand-in for consolidation).
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    u, v = xx / width, yy / height
    img = 200 - 80 * (np.exp(-(((u - 0.3) / 0.14) ** 2 + ((v - 0.5) / 0.3) ** 2)))
    img -= 80 * np.exp(-(((u - 0.7) / 0.14) ** 2 + ((v - 0.5) / 0.3) ** 2))
    img += 20 * np.sin(v * 40) * (np.abs(u - 0.5) > 0.1)
    if opacity:
        img += 90 * np.exp(-(((u - 0.3) / 0.07) ** 2 + ((v - 0.6) / 0.08) ** 2))
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _chest_batch(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n synthetic chests uint8 (n, size, size, 1) at ``size``, half of them with an opacity (label 1)."""
    import cv2

    y = np.arange(n) % 2
    x = np.stack([cv2.resize(synthetic_xray(seed=seed * 1000 + i, opacity=bool(y[i])), (size, size),
                             interpolation=cv2.INTER_AREA) for i in range(n)])  # fmt: skip
    return x[..., None], y.astype("float32")


def tiny_lung_mask(size: int) -> np.ndarray:
    """Two upright ellipses, the lung fields of a synthetic chest: uint8 (size, size), 255 = lung."""
    import cv2

    mask = np.zeros((size, size), np.uint8)
    for cx in (0.3, 0.7):
        center = (round(cx * size), round(0.5 * size))
        cv2.ellipse(mask, center, (max(1, round(0.14 * size)), max(1, round(0.32 * size))), 0, 0, 360, 255, -1)
    return mask


def _fit_tiny(model, size: int, seed: int, epochs: int = 15) -> None:
    """A few epochs on synthetic chests, so that the tiny model's output depends on the picture (a random one
    answers 0.5 for everything, and tests built on it cannot fail). A two-channel model gets the lung mask too."""
    import keras

    x, y = _chest_batch(48, size, seed)
    if model.input_shape[-1] == 2:
        x = np.concatenate([x, np.broadcast_to(tiny_lung_mask(size)[None, :, :, None], x.shape)], axis=-1)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="binary_crossentropy")
    model.fit(x.astype("float32"), y, batch_size=16, epochs=epochs, verbose=0, shuffle=False)


def make_tiny_model(
    out_dir: Path, size: int = TINY_SIZE, seed: int = 0, threshold: float = 0.5, cam_stride: int = 32,
    export: bool = True, lung_pooling: bool = False,
) -> Path:  # fmt: skip
    """Save a tiny pneumo classifier (briefly trained on synthetic chests: its output depends on the input), its
    metadata and (``export``) its TFLite copy in ``out_dir``; returns the model path."""
    import keras

    from pneumo.nets.modelfile import metadata_path
    from pneumo.training.export import export as export_tflite
    from pneumo.training.networks import build_model, layer_rows

    out_dir.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(seed)
    model = build_model(size, stem_width=4, widths=(8, 8, 8, 8), cam_stride=cam_stride, lung_pooling=lung_pooling)
    _fit_tiny(model, size, seed)
    path = out_dir / "tiny.keras"
    model.save(path)
    grid = [round(0.01 * i, 2) for i in range(1, 100)]
    meta = {
        "name": "tiny",
        "created": "2026-01-01T00:00:00+00:00",
        "input_size": size,
        "channels": 2 if lung_pooling else 1,
        "class_names": ["NORMAL", "PNEUMONIA"],
        "gradcam_layer": "gradcam_conv",
        "threshold": threshold,
        "threshold_rule": "test fixture",
        "parameters": int(model.count_params()),
        "layers": layer_rows(model),
        "metrics": {
            "validation": {
                "auc": 0.5,
                "accuracy": 0.5,
                "sensitivity": 0.5,
                "specificity": 0.5,
                "ece": 0.1,
                "n": 4,
                "n_normal": 2,
                "n_pneumonia": 2,
                "threshold": threshold,
                "confusion": {"tp": 1, "fn": 1, "tn": 1, "fp": 1},
            }
        },
        "operating_points": [{"threshold": t, "sensitivity": round(1 - t, 4), "specificity": t} for t in grid],
        "roc": {"validation": {"fpr": [0.0, 0.5, 1.0], "tpr": [0.0, 0.5, 1.0]}},
        "training": {"command": "tests/conftest.py make_tiny_model", "data": {"fingerprint_sha256": "0" * 64}},
    }
    metadata_path(path).write_text(json.dumps(meta))
    if export:
        export_tflite(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory) -> Path:
    """Path to a tiny random model (32 px input) with consistent metadata."""
    return make_tiny_model(tmp_path_factory.mktemp("tiny_model"))


@pytest.fixture(scope="session")
def tiny_model(tiny_model_path):
    """The tiny model as the app and the CLI run it: a pneumo.nets.Network on its TFLite copy."""
    from pneumo.nets.lite import load_network

    return load_network(tiny_model_path)


@pytest.fixture(scope="session")
def tiny_keras(tiny_model_path):
    """The same tiny model as training runs it: a pneumo.nets.Network on the Keras model (TensorFlow)."""
    from pneumo.training.networks import keras_network, load_keras_with_metadata

    model, meta = load_keras_with_metadata(tiny_model_path)
    return keras_network(model, meta, tiny_model_path)


@pytest.fixture(scope="session")
def app_model_path(tmp_path_factory) -> Path:
    """The model an end-to-end test runs the app with: $PNEUMO_MODEL, else the committed one, else a tiny one."""
    from pneumo import config

    override = os.environ.get(config.MODEL_ENV_VAR)
    if override:
        return Path(override)
    if config.DEFAULT_MODEL_PATH.exists():
        return config.DEFAULT_MODEL_PATH
    return make_tiny_model(tmp_path_factory.mktemp("app_model"))


# Thresholds of a tiny random gate that lets every image through as it is (no refusal, turn or flip).
OPEN_GATE = {"in_scope": 0.0, "orientation": 1.01, "upright_min": 0.0, "mirror": 1.01, "mirror_unclear": 1.01,
             "mirror_warn": 1.01}  # fmt: skip


def make_tiny_lung_models(
    out_dir: Path, size: int = TINY_SIZE, seed: int = 0, threshold: float = 0.5, lung_pooling: bool = False,
    shared: bool = False,
) -> Path:  # fmt: skip
    """A tiny classifier that reads the lungs (input_mode 'lungs', CAM stride 16; ``lung_pooling``: it averages over
    the lung mask only) beside a tiny random U-Net, both exported to TFLite. Returns the classifier's path;
    pneumo.pipeline.load_models finds the U-Net from its metadata. ``shared``: instead of a U-Net, a tiny random gate
    with a lung head (pneumo_scope.keras, thresholds :data:`OPEN_GATE`) finds the lungs."""
    import keras

    from pneumo.nets.modelfile import file_sha256, metadata_path
    from pneumo.training.export import export as export_tflite
    from pneumo.training.networks import build_unet

    out_dir.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(seed)
    if shared:
        from pneumo.training.train_scope import Settings, build_gate

        lung_net = build_gate(Settings(image_size=size, stem_width=4, widths=(8, 8), lung_widths=(8, 4)))
        lung_path = out_dir / "pneumo_scope.keras"
        lung_meta = {"input_size": size, "thresholds": OPEN_GATE, "lung_threshold": 0.5}
    else:
        lung_net = build_unet(size, widths=(4, 8, 8))
        lung_path = out_dir / "pneumo_lungs.keras"
        lung_meta = {"input_size": size, "threshold": 0.5}
    lung_net.save(lung_path)
    lung_path.with_suffix(".json").write_text(json.dumps(lung_meta))
    export_tflite(lung_path)
    path = make_tiny_model(out_dir, size, seed, threshold, cam_stride=16, export=False, lung_pooling=lung_pooling)
    meta = json.loads(metadata_path(path).read_text())
    meta.update(input_mode="lungs", lung_model={"file": lung_path.name, "sha256": file_sha256(lung_path)},
                cam_scale={"NORMAL": 0.5, "PNEUMONIA": 0.5})  # fmt: skip
    metadata_path(path).write_text(json.dumps(meta))
    export_tflite(path)
    return path


@pytest.fixture(scope="session")
def tiny_lung_model_path(tmp_path_factory) -> Path:
    """Path to a tiny random lungs-mode classifier with its tiny U-Net beside it."""
    return make_tiny_lung_models(tmp_path_factory.mktemp("tiny_lungs"))


@pytest.fixture(scope="session")
def tiny_shared_model_path(tmp_path_factory) -> Path:
    """Path to a tiny lung-pooled classifier whose lungs a tiny random gate with a lung head finds (two networks)."""
    return make_tiny_lung_models(tmp_path_factory.mktemp("tiny_shared"), lung_pooling=True, shared=True)


@pytest.fixture(scope="session")
def tiny_pooled_model_path(tmp_path_factory) -> Path:
    """Path to a tiny lungs-mode classifier that pools over the lung mask only, its tiny U-Net beside it."""
    return make_tiny_lung_models(tmp_path_factory.mktemp("tiny_pooled"), lung_pooling=True)
