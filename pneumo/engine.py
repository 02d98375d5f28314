"""The inference engine: each network of the analysis path as a TensorFlow Lite flatbuffer run by XNNPACK.

At batch 1 on 2 CPU cores TensorFlow spends most of a small network's time between operations; the same graph as a
TFLite flatbuffer runs 2-10x faster with the same float32 arithmetic (outputs agree to ~1e-5; tests check it).

Examples:
    python -m pneumo.engine models/pneumo_cnn.keras models/pneumo_lungs.keras models/pneumo_scope.keras

Each ``X.keras`` gets an ``X.tflite`` beside it, and its ``X.json`` a ``tflite`` block naming the file, its outputs,
its SHA-256, the SHA-256 of the ``.keras`` file it was made from and the export version. ``pneumo.pipeline.load_models``
uses a flatbuffer only when all three match (else the network runs on TensorFlow, with a warning): either attached to
the Keras network or, for the app and the CLI (``engine_only``), alone in a :class:`LiteModel`, without TensorFlow.
:func:`forward` and :func:`explain` are the analysis path's one entry to the networks: they run the flatbuffer where
one is attached, else TensorFlow. The training modules export at the end.

The classifier's flatbuffer computes what ``explain_batch`` returns: P(pneumonia) and the signed CAM (feature map x
dense kernel / (h w), as a 1x1 convolution), so the app needs no TensorFlow graph at all per image. A classifier
whose head is not GAP + dense (Grad-CAM needs a backward pass) gets a plain forward flatbuffer.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import sys
import threading
import warnings
import weakref
from pathlib import Path
from typing import Any

import numpy as np

from pneumo import config

log = logging.getLogger(__name__)
# tf.lite.Interpreter warns on every construction of its future move to ai_edge_litert; filtered once here, because
# warnings.catch_warnings() is not thread-safe and interpreters are made from worker and session threads
warnings.filterwarnings("ignore", message=r"(?s).*tf\.lite\.Interpreter is deprecated", category=UserWarning)

_ATTACHED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # keras model -> {"forward"|("cam", layer): LiteNet}


@contextlib.contextmanager
def native_stderr_silenced() -> Any:
    """Send what native code writes to file descriptor 2 to /dev/null for the duration (LiteRT prints "INFO: Created
    TensorFlow Lite XNNPACK delegate for CPU." at a process's first run, with no setting to turn it off).

    The whole process's descriptor is redirected: use it only where one thread runs (the CLI before its workers).
    """
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def interpreter_class() -> Any:
    """The TFLite interpreter: LiteRT's (``ai_edge_litert``: no TensorFlow import, ~0.1 s and ~80 MB for all three
    networks), else TensorFlow's own ``tf.lite.Interpreter`` (the same runtime and results, inside TensorFlow)."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # a platform without the LiteRT wheel: TensorFlow's copy of the same interpreter
        import tensorflow as tf

        return tf.lite.Interpreter
    return Interpreter


class LiteNet:
    """A TFLite flatbuffer with one input: float32 (B, ...) in, its outputs out.

    Thread-safe (a pool of interpreters, one per concurrent caller); the batch size may change from call to call.
    """

    def __init__(
        self, content: bytes, outputs: list[str], names: list[str] | None = None, threads: int = config.LITE_THREADS
    ) -> None:
        """outputs: the flatbuffer's output names in the Keras model's order; names: their Keras names (default the
        same)."""
        self._content, self._threads = content, threads
        self._free: list[Any] = []  # idle signature runners: one per caller running at the same time
        self._lock = threading.Lock()
        runner = self._new_runner()
        sig = self._signature
        (self._input,) = sig["inputs"]
        self.input_shape = (None, *(int(d) for d in self._dims[1:]))  # (None, S, S, 1) like a Keras model's
        missing = set(outputs) - set(sig["outputs"])
        if missing:
            raise ValueError(f"the flatbuffer lacks the outputs {sorted(missing)}")
        self._outputs = list(outputs)  # the flatbuffer's names, in the Keras model's order
        self.outputs = list(names or outputs)  # the Keras names, same order
        self._free.append(runner)

    def _new_runner(self) -> Any:
        interpreter = interpreter_class()(model_content=self._content, num_threads=self._threads)
        self._signature = interpreter.get_signature_list()["serving_default"]
        self._dims = interpreter.get_input_details()[0]["shape"]  # (1, S, S, 1) as exported
        return interpreter.get_signature_runner("serving_default")

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        """float32 (B, ...) -> the outputs, in order, as numpy arrays (copies: the interpreter reuses its buffers).

        An interpreter is not re-entrant: each concurrent caller (CLI workers, app sessions) takes its own from a pool
        and puts it back; the heavy work runs without the GIL, so two callers use two cores.
        """
        x = np.ascontiguousarray(x, dtype=np.float32)
        with self._lock:
            runner = self._free.pop() if self._free else None
        runner = runner or self._new_runner()
        try:
            out = runner(**{self._input: x})
            return [np.array(out[name]) for name in self._outputs]
        finally:
            with self._lock:
                self._free.append(runner)


class ProbabilityView:
    """The 'probability' output (B,) of a classifier's CAM flatbuffer as the Keras model's own output (B, 1), so that
    :func:`forward` (predict_proba) runs the flatbuffer too."""

    def __init__(self, net: LiteNet, name: str) -> None:
        self._net, self.outputs = net, [name]

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        return [self._net(x)[self._net.outputs.index("probability")].reshape(-1, 1)]


class LiteModel:
    """Stands in for a Keras network when only its TFLite copy runs (the app and the CLI): no TensorFlow, no Keras.

    It has what the analysis path reads from a network (``name``, ``input_shape``, ``output``, ``output_names``);
    its flatbuffer is attached to it like to a Keras model (keys 'forward' and, for a classifier, ('cam', layer)).
    """

    def __init__(self, name: str, input_shape: tuple, outputs: list[str], named_outputs: bool) -> None:
        self.name, self.input_shape, self.output_names = name, input_shape, list(outputs)
        self.output = {k: None for k in outputs} if named_outputs else outputs[0]  # the Keras output structure

    def __repr__(self) -> str:
        return f"LiteModel({self.name!r}, input_shape={self.input_shape})"


def forward(model: Any, x: np.ndarray, batch_size: int = 32) -> Any:
    """``pneumo.model.forward`` without TensorFlow where a flatbuffer is attached: float (B, ...) in batches ->
    numpy outputs concatenated on B, in the model's output structure (a dict, a list or one array)."""
    net = attached(model, "forward")
    if net is None:
        from pneumo.model import forward as tf_forward

        return tf_forward(model, x, batch_size)
    parts = [net(np.asarray(x[i : i + batch_size], np.float32)) for i in range(0, len(x), batch_size)]
    if not parts:
        raise ValueError("empty batch")
    named = {k: np.concatenate([p[j] for p in parts]) for j, k in enumerate(net.outputs)}
    if isinstance(model.output, dict):
        return {k: named[k] for k in model.output}
    if isinstance(model.output, (list, tuple)):
        return [named[k] for k in model.output_names]
    return named[model.output_names[0]]


def explain(model: Any, x: np.ndarray, layer_name: str) -> tuple[np.ndarray, np.ndarray]:
    """``pneumo.gradcam.explain_batch`` without TensorFlow where the CAM flatbuffer is attached: inputs (B, S, S, 1)
    -> P(pneumonia) float64 (B,) and the signed CAM float32 (B, h, w)."""
    net = attached(model, ("cam", layer_name))
    if net is None:
        from pneumo.gradcam import explain_batch

        return explain_batch(model, x, layer_name)
    named = dict(zip(net.outputs, net(np.asarray(x, np.float32)), strict=True))  # one invoke
    return np.asarray(named["probability"], np.float64), np.asarray(named["cam"], np.float32)


def attach(model: Any, key: Any, net: LiteNet | ProbabilityView) -> None:
    """Run ``net`` for ``model``: key 'forward' (:func:`forward`) or ('cam', layer) (:func:`explain`)."""
    _ATTACHED.setdefault(model, {})[key] = net


def attached(model: Any, key: Any) -> LiteNet | None:
    """The flatbuffer attached to ``model`` for ``key``, or None (then TensorFlow runs it)."""
    try:
        return _ATTACHED.get(model, {}).get(key)
    except TypeError:  # an object that cannot be weakly referenced (a test double)
        return None


def describe(models: Any) -> str:
    """Which engine runs each network of a pneumo.pipeline.Models: e.g. 'classifier TFLite, lungs TFLite, gate
    TFLite' (TensorFlow where no matching flatbuffer was attached)."""
    nets = [("classifier", models.classifier.model, ("cam", models.classifier.gradcam_layer))]
    nets += [(n, m.model, "forward") for n, m in (("lungs", models.lungs), ("gate", models.gate)) if m is not None]
    return ", ".join(f"{n} {'TFLite' if attached(m, k) else 'TensorFlow'}" for n, m, k in nets)


# ----------------------------------------------------------------------------------------------------------------
# export
def cam_graph(model: Any, layer_name: str) -> Any | None:
    """A Keras model with outputs 'probability' (B,) and 'cam' (B, h, w) equal to gradcam's CAM, or None when the head
    is not GAP + dense."""
    import keras

    from pneumo.gradcam import cam_head

    dense = cam_head(model, layer_name)
    if dense is None:
        return None
    fmap = model.get_layer(layer_name).output  # (B, h, w, K)
    _, h, w, k = fmap.shape
    conv = keras.layers.Conv2D(1, 1, use_bias=False, name="cam_weights")
    cam = keras.layers.Reshape((h, w), name="cam")(conv(fmap))  # (B, h, w)
    prob = keras.layers.Reshape((), name="probability")(keras.layers.Activation("sigmoid")(dense.output))  # (B,)
    graph = keras.Model(model.inputs, {"probability": prob, "cam": cam}, name="cam_graph")
    kernel = np.asarray(dense.kernel).reshape(1, 1, k, 1) / float(h * w)  # Grad-CAM's channel weights
    conv.set_weights([kernel.astype(np.float32)])
    return graph


def convert(model: Any) -> bytes:
    """A Keras model -> TFLite flatbuffer bytes (float32, no quantisation)."""
    import tensorflow as tf

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
    from pneumo.evaluation import file_sha256
    from pneumo.model import fold_batchnorm, load_keras_with_metadata

    keras_path = Path(keras_path)
    model, meta = load_keras_with_metadata(keras_path, "model file")
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
        "note": "pneumo.engine: the inference graph of the .keras file with this SHA-256, batch norm folded, float32",
    }
    json_path = keras_path.with_suffix(".json")
    if json_path.exists():
        meta = json.loads(json_path.read_text())
        meta["tflite"] = block
        json_path.write_text(json.dumps(meta, indent=1) + "\n")
    log.info("wrote %s (%.2f MB)", out, out.stat().st_size / 2**20)
    return block


def export_or_warn(keras_path: str | Path) -> dict | None:
    """:func:`export` for the end of a training run: a failure is logged, not raised (the model still runs on
    TensorFlow, and the hours of training are not lost)."""
    try:
        return export(keras_path)
    except Exception as exc:  # noqa: BLE001 - see the docstring
        log.warning("no TFLite copy of %s (%s: %s): it will run on TensorFlow", keras_path, type(exc).__name__, exc)
        return None


def _has_layer(model: Any, name: str) -> bool:
    return any(layer.name == name for layer in model.layers)


def _fresh_net(keras_path: Path, metadata: dict) -> LiteNet | None:
    """The flatbuffer ``metadata`` names when it was made, by this version of the export, from this very ``.keras``
    file, and is the file that export wrote (all three checked by SHA-256 / version); else None, with a log line."""
    from pneumo.evaluation import file_sha256

    block = metadata.get("tflite")
    if config.INFERENCE_ENGINE != "tflite":
        return None
    if not block:
        log.info("%s has no TFLite copy: it runs on TensorFlow", keras_path.name)
        return None
    path = keras_path.parent / block["file"]
    content = path.read_bytes() if path.exists() else b""
    fresh = (
        keras_path.exists()
        and file_sha256(keras_path) == block.get("keras_sha256")
        and hashlib.sha256(content).hexdigest() == block.get("tflite_sha256")
        and block.get("export_version") == config.ENGINE_EXPORT_VERSION
    )
    if not fresh:
        log.warning("%s is missing, changed or was made from another %s or by another export version: running it on "
                    "TensorFlow (slower); `python -m pneumo.engine %s` makes a new one",
                    path.name, keras_path.name, keras_path)  # fmt: skip
        return None
    try:
        return LiteNet(content, block["signature_outputs"], block["outputs"])
    except Exception as exc:  # noqa: BLE001 - an unusable flatbuffer must not stop the app: TensorFlow still works
        log.warning("cannot run %s (%s: %s): running on TensorFlow", path.name, type(exc).__name__, exc)
        return None


def _attach_block(model: Any, net: LiteNet, runs: Any, output_name: str) -> None:
    if isinstance(runs, str):
        attach(model, runs, net)
    else:
        attach(model, tuple(runs), net)
        attach(model, "forward", ProbabilityView(net, output_name))  # predict_proba on the flatbuffer too


def load_for(model: Any, keras_path: str | Path, metadata: dict) -> bool:
    """Attach the flatbuffer that ``metadata`` names to the Keras ``model`` when it is fresh (see :func:`_fresh_net`).

    Returns whether one was attached; a missing, stale or unreadable flatbuffer leaves TensorFlow in charge.
    """
    net = _fresh_net(Path(keras_path), metadata)
    if net is None:
        return False
    _attach_block(model, net, metadata["tflite"]["runs"], model.output_names[0])
    return True


def load_lite(keras_path: str | Path, metadata: dict) -> LiteModel | None:
    """A LiteModel running the fresh flatbuffer of ``keras_path`` (no TensorFlow, no Keras), or None."""
    keras_path = Path(keras_path)
    net = _fresh_net(keras_path, metadata)
    if net is None:
        return None
    block = metadata["tflite"]
    runs = block["runs"]
    if isinstance(runs, str):  # the network's own outputs
        model = LiteModel(keras_path.stem, net.input_shape, net.outputs, named_outputs=len(net.outputs) > 1)
    else:  # a classifier's CAM graph: its own output is the probability (B, 1)
        model = LiteModel(keras_path.stem, net.input_shape, ["probability"], named_outputs=False)
    _attach_block(model, net, runs, model.output_names[0])
    return model


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description="Export .keras models as TFLite flatbuffers for fast inference.")
    parser.add_argument("models", nargs="+", type=Path, help=".keras files (each with its .json)")
    for path in parser.parse_args(argv).models:
        export(path)


if __name__ == "__main__":
    main()
