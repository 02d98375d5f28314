"""Shared fixtures: synthetic radiograph-like images and a tiny random model with metadata (built once per run)."""

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


def make_tiny_model(out_dir: Path, size: int = TINY_SIZE, seed: int = 0, threshold: float = 0.5) -> Path:
    """Save a tiny random pneumo model and its metadata in ``out_dir``; returns the model path."""
    import keras

    from pneumo.training.networks import build_model, layer_rows

    from pneumo.nets.modelfile import metadata_path

    keras.utils.set_random_seed(seed)
    model = build_model(size, stem_width=4, widths=(8, 8, 8, 8))
    path = out_dir / "tiny.keras"
    model.save(path)
    grid = [round(0.01 * i, 2) for i in range(1, 100)]
    meta = {
        "name": "tiny",
        "created": "2026-01-01T00:00:00+00:00",
        "input_size": size,
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
    return path


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory) -> Path:
    """Path to a tiny random model (32 px input) with consistent metadata."""
    return make_tiny_model(tmp_path_factory.mktemp("tiny_model"))


@pytest.fixture(scope="session")
def tiny_model(tiny_model_path):
    """The tiny random model, loaded (LoadedModel)."""
    from pneumo.training.networks import load_model

    return load_model(tiny_model_path)


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


def make_tiny_lung_models(out_dir: Path, size: int = TINY_SIZE, seed: int = 0, threshold: float = 0.5) -> Path:
    """A tiny random classifier that reads the lungs (input_mode 'lungs', CAM stride 16) beside a tiny random U-Net.

    Returns the classifier's path; pneumo.pipeline.load_models finds the U-Net from its metadata.
    """
    import hashlib

    import keras

    from pneumo.training.networks import build_unet
    from pneumo.training.networks import build_model
    from pneumo.nets.modelfile import metadata_path

    out_dir.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(seed)
    unet = build_unet(size, widths=(4, 8, 8))
    lung_path = out_dir / "pneumo_lungs.keras"
    unet.save(lung_path)
    lung_path.with_suffix(".json").write_text(json.dumps({"input_size": size, "threshold": 0.5}))
    path = make_tiny_model(out_dir, size, seed, threshold)
    model = build_model(size, stem_width=4, widths=(8, 8, 8, 8), cam_stride=16)
    model.save(path)
    meta = json.loads(metadata_path(path).read_text())
    sha = hashlib.sha256(lung_path.read_bytes()).hexdigest()
    meta.update(input_mode="lungs", lung_model={"file": lung_path.name, "sha256": sha},
                cam_scale={"NORMAL": 0.5, "PNEUMONIA": 0.5})  # fmt: skip
    metadata_path(path).write_text(json.dumps(meta))
    return path


@pytest.fixture(scope="session")
def tiny_lung_model_path(tmp_path_factory) -> Path:
    """Path to a tiny random lungs-mode classifier with its tiny U-Net beside it."""
    return make_tiny_lung_models(tmp_path_factory.mktemp("tiny_lungs"))
