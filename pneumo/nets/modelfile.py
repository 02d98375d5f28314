"""A model file and its metadata, without TensorFlow: the one holder of a network (:class:`Network`) and what the
analysis path needs to know about it."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pneumo import config


class ModelFileError(RuntimeError):
    """A model file, its metadata or its TFLite copy is missing or does not match: the message says what to run."""


def default_model_path() -> Path:
    """The classifier the app and the CLI use: ``$PNEUMO_MODEL`` when set, else the committed one."""
    override = os.environ.get(config.MODEL_ENV_VAR, "").strip()
    return Path(override) if override else config.DEFAULT_MODEL_PATH


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read in chunks (the key of a model's evaluation and of its TFLite copy)."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def metadata_path(model_path: str | Path) -> Path:
    """The JSON metadata file that travels with a model file: same name, ``.json``."""
    return Path(model_path).with_suffix(".json")


def read_metadata(path: str | Path, what: str = "model") -> dict[str, Any]:
    """The metadata of the model file at ``path`` (required: it holds the threshold, sizes and the TFLite block)."""
    path = Path(path)
    meta_file = metadata_path(path)
    if not path.exists():
        raise ModelFileError(f"{what} not found: {path}")
    if not meta_file.exists():
        raise ModelFileError(f"{what} {path.name} has no metadata ({meta_file.name}) beside it")
    return json.loads(meta_file.read_text())


@dataclass(frozen=True)
class Network:
    """A network (its TFLite copy, or in training a Keras model), its metadata and its file; all read-only."""

    model: Any
    metadata: dict[str, Any]
    path: Path

    @property
    def image_size(self) -> int:
        """The side of the network's square input."""
        return int(self.metadata.get("input_size", config.IMAGE_SIZE))

    @property
    def input_mode(self) -> str:
        """'lungs' (the dilated lung box, greyed outside the lungs) or 'full' (the whole 224 squash)."""
        return str(self.metadata.get("input_mode", "full"))

    @property
    def channels(self) -> int:
        """Input channels: 1 (the image) or 2 (the image and the lung mask a lung-pooled classifier averages over)."""
        return int(self.metadata.get("channels", config.CHANNELS))

    @property
    def threshold(self) -> float:
        """The operating threshold stored with the network (a classifier's P(pneumonia), a U-Net's P(lung))."""
        return float(self.metadata.get("threshold", config.DEFAULT_THRESHOLD))

    @property
    def gradcam_layer(self) -> str:
        return str(self.metadata.get("gradcam_layer", config.GRADCAM_LAYER))

    @property
    def class_names(self) -> tuple[str, str]:
        names = self.metadata.get("class_names", config.CLASS_NAMES)
        return (str(names[0]), str(names[1]))
