"""Export ``.keras`` networks as TFLite flatbuffers, the copies the app and the CLI run (pneumo.nets.lite).

Examples:
    python -m pneumo.training.export models/pneumo_cnn.keras models/pneumo_scope.keras

Each ``X.keras`` gets an ``X.tflite`` beside it and its ``X.json`` a ``tflite`` block (file, outputs, both SHA-256s,
export version). A classifier whose head is GAP + dense gets a graph that also outputs the signed CAM (feature map x
dense kernel / (h w), as a 1x1 convolution); any other network a plain forward flatbuffer.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from pneumo import __version__, config
from pneumo.nets.lite import interpreter_class
from pneumo.nets.modelfile import file_sha256
from pneumo.training.gradcam import cam_head, lung_share_layer
from pneumo.training.networks import fold_batchnorm, load_keras_with_metadata

log = logging.getLogger(__name__)


def cam_graph(model: Any, layer_name: str) -> Any | None:
    """A Keras model with outputs 'probability' (B,) and 'cam' (B, h, w) equal to gradcam's CAM, or None when the head
    is not GAP + dense."""
    dense = cam_head(model, layer_name)
    if dense is None:
        return None
    fmap = model.get_layer(layer_name).output  # (B, h, w, K)
    _, h, w, k = fmap.shape
    conv = keras.layers.Conv2D(1, 1, use_bias=False, name="cam_weights")
    raw = conv(fmap)  # (B, h, w, 1): w.F / (h w), Grad-CAM's channel weights
    share_layer = lung_share_layer(model)
    if share_layer is not None:  # lung-mask pooling: w.F / sum of the lung shares (gradcam's density)
        total = keras.ops.sum(share_layer.output, axis=(1, 2, 3), keepdims=True)  # (B, 1, 1, 1)
        raw = raw * (float(h * w) / keras.ops.maximum(total, 1e-6))
    cam = keras.layers.Reshape((h, w), name="cam")(raw)  # (B, h, w)
    prob = keras.layers.Reshape((), name="probability")(keras.layers.Activation("sigmoid")(dense.output))  # (B,)
    graph = keras.Model(model.inputs, {"probability": prob, "cam": cam}, name="cam_graph")
    kernel = np.asarray(dense.kernel).reshape(1, 1, k, 1) / float(h * w)  # Grad-CAM's channel weights
    conv.set_weights([kernel.astype(np.float32)])
    return graph


def convert(model: Any) -> bytes:
    """A Keras model -> TFLite flatbuffer bytes (float32, no quantisation)."""
    return tf.lite.TFLiteConverter.from_keras_model(model).convert()


def signature_outputs(content: bytes, names: list[str]) -> list[str]:
    """The flatbuffer's output names for the Keras outputs ``names`` (a single output is renamed by the converter)."""
    found = interpreter_class()(model_content=content).get_signature_list()["serving_default"]["outputs"]
    if len(names) == 1 and len(found) == 1:
        return list(found)
    if sorted(found) != sorted(names):
        raise ValueError(f"flatbuffer outputs {found} do not match the model's {names}")
    return list(names)


def export(keras_path: str | Path) -> dict:
    """Write ``X.tflite`` beside ``X.keras`` and record it in ``X.json`` (block 'tflite'); returns that block."""
    keras_path = Path(keras_path)
    model, meta = load_keras_with_metadata(keras_path, "model")
    model = fold_batchnorm(model)
    layer = meta.get("gradcam_layer", config.GRADCAM_LAYER)
    graph = cam_graph(model, layer) if _has_layer(model, layer) else None
    key: Any = "forward" if graph is None else ["cam", layer]
    graph = graph if graph is not None else model
    out = keras_path.with_suffix(".tflite")
    content = convert(graph)
    names = list(graph.output_names)
    out.write_bytes(content)
    block = {
        "file": out.name,
        "runs": key,
        "outputs": names,
        "signature_outputs": signature_outputs(content, names),
        "keras_sha256": file_sha256(keras_path),
        "tflite_sha256": hashlib.sha256(content).hexdigest(),
        "export_version": config.ENGINE_EXPORT_VERSION,
        "note": "pneumo.training.export: the inference graph of the .keras file with this SHA-256, batch norm folded, "
        "float32",
    }
    json_path = keras_path.with_suffix(".json")
    if json_path.exists():
        meta = json.loads(json_path.read_text())
        meta["tflite"] = block
        json_path.write_text(json.dumps(meta, indent=1) + "\n")
    log.info("wrote %s (%.2f MB)", out, out.stat().st_size / 2**20)
    return block


def export_or_warn(keras_path: str | Path) -> dict | None:
    """:func:`export` for the end of a training run: a failure is logged, not raised, so the hours of training are
    not lost (the app and the CLI then refuse the model until the export is run again)."""
    try:
        return export(keras_path)
    except Exception as exc:  # noqa: BLE001 - see the docstring
        log.warning("no TFLite copy of %s (%s: %s): run `python -m pneumo.training.export %s`",
                    keras_path, type(exc).__name__, exc, keras_path)  # fmt: skip
        return None


def _has_layer(model: Any, name: str) -> bool:
    return any(layer.name == name for layer in model.layers)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(
        prog="pneumo-export", description="Export .keras models as the TFLite copies the app and the CLI run."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("models", nargs="+", type=Path, help=".keras files (each with its .json)")
    for path in parser.parse_args(argv).models:
        export(path)


if __name__ == "__main__":
    main()
