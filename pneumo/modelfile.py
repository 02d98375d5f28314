"""A model file and its metadata, without TensorFlow: what the app's analysis path needs to know about a network."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pneumo import config

log = logging.getLogger(__name__)


def metadata_path(model_path: str | Path) -> Path:
    """The JSON metadata file that travels with a model file: same name, ``.json``."""
    return Path(model_path).with_suffix(".json")


def read_metadata(path: str | Path, what: str = "model", require: bool = False) -> dict[str, Any]:
    """The metadata of the model file at ``path``: {} with a warning when there is none (FileNotFoundError when
    ``require`` or when the model file itself is missing)."""
    path = Path(path)
    meta_file = metadata_path(path)
    if not path.exists() or (require and not meta_file.exists()):
        raise FileNotFoundError(f"{what} not found: {path}" + (" (or its .json)" if require else ""))
    if not meta_file.exists():
        log.warning("no metadata next to %s; using defaults", path)
        return {}
    return json.loads(meta_file.read_text())


@dataclass(frozen=True)
class LoadedModel:
    """A network (a Keras model, or pneumo.engine.LiteModel when only its TFLite copy runs) and its metadata; treat
    both as read-only."""

    model: Any
    metadata: dict[str, Any]
    path: Path

    @property
    def image_size(self) -> int:
        return int(self.metadata.get("input_size", config.IMAGE_SIZE))

    @property
    def input_mode(self) -> str:
        """'lungs' (the dilated lung box, greyed outside the lungs) or 'full' (the whole 224 squash)."""
        return str(self.metadata.get("input_mode", "full"))

    @property
    def threshold(self) -> float:
        return float(self.metadata.get("threshold", config.DEFAULT_THRESHOLD))

    @property
    def gradcam_layer(self) -> str:
        return str(self.metadata.get("gradcam_layer", config.GRADCAM_LAYER))

    @property
    def class_names(self) -> tuple[str, str]:
        names = self.metadata.get("class_names", config.CLASS_NAMES)
        return (str(names[0]), str(names[1]))
