"""The networks' runtime: each network's TFLite flatbuffer run by LiteRT (XNNPACK), without TensorFlow or Keras.

At batch 1 on 2 CPU cores TensorFlow spends most of a small network's time between operations; the same graph as a
TFLite flatbuffer runs 2-10x faster with the same float32 arithmetic (outputs agree to ~1e-5; tests check it).

Each ``X.keras`` has an ``X.tflite`` beside it, made by ``python -m pneumo.training.export X.keras``, and its
``X.json`` a ``tflite`` block naming the file, its outputs, its SHA-256, the SHA-256 of the ``.keras`` file it was made
from and the export version. :func:`load_network` runs a flatbuffer only when all of them match; a missing or stale
copy is an error (:class:`ModelFileError`) that names the export command: there is no slow TensorFlow fallback on
the app's path.

:func:`forward` and :func:`forward_cam` are the analysis path's one entry to the networks. They run what is attached
to a model: the flatbuffer here, or (training only) a TensorFlow runner attached by ``pneumo.training.networks``.
A classifier's flatbuffer computes P(pneumonia) and the signed CAM (feature map x dense kernel / (h w)) in one call.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sys
import threading
import weakref
from pathlib import Path
from typing import Any

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from pneumo import config
from pneumo.nets.modelfile import ModelFileError, Network, file_sha256, read_metadata

log = logging.getLogger(__name__)

EXPORT_COMMAND = "python -m pneumo.training.export"  # what makes a fresh .tflite copy (needs the train extra)
_ATTACHED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> {"forward"|("cam", layer): runner}


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
    """LiteRT's TFLite interpreter (``ai_edge_litert``: no TensorFlow import, ~0.1 s and ~80 MB for all three)."""
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
    :func:`forward` runs the flatbuffer too."""

    def __init__(self, net: LiteNet, name: str) -> None:
        self._net, self.outputs = net, [name]

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        return [self._net(x)[self._net.outputs.index("probability")].reshape(-1, 1)]


class LiteModel:
    """A network whose TFLite copy runs: what the analysis path reads of one (``name``, ``input_shape``, ``output``,
    ``output_names``, as a Keras model has them); its flatbuffer is attached under 'forward' and, for a classifier,
    ('cam', layer)."""

    def __init__(self, name: str, input_shape: tuple, outputs: list[str], named_outputs: bool) -> None:
        self.name, self.input_shape, self.output_names = name, input_shape, list(outputs)
        self.output = {k: None for k in outputs} if named_outputs else outputs[0]  # the Keras output structure

    def __repr__(self) -> str:
        return f"LiteModel({self.name!r}, input_shape={self.input_shape})"


def attach(model: Any, key: Any, runner: Any) -> None:
    """Run ``runner`` for ``model``: key 'forward' (:func:`forward`) or ('cam', layer) (:func:`forward_cam`).

    A runner has ``outputs`` (names) and is called on float32 (B, ...) to give those outputs in order.
    """
    _ATTACHED.setdefault(model, {})[key] = runner


def attached(model: Any, key: Any) -> Any | None:
    """The runner attached to ``model`` for ``key``, or None."""
    try:
        return _ATTACHED.get(model, {}).get(key)
    except TypeError:  # an object that cannot be weakly referenced
        return None


def _runner(model: Any, key: Any) -> Any:
    runner = attached(model, key)
    if runner is None:
        raise ModelFileError(
            f"nothing runs {getattr(model, 'name', model)!r} for {key!r}: load networks with "
            "pneumo.nets.load_network (TFLite) or, in training, pneumo.training.networks.load_keras_network"
        )
    return runner


def forward(model: Any, x: np.ndarray, batch_size: int = 32) -> Any:
    """Run a network on float (B, ...) in batches -> numpy outputs concatenated on B, in the model's output
    structure (a dict, a list or one array)."""
    net = _runner(model, "forward")
    parts = [net(np.asarray(x[i : i + batch_size], np.float32)) for i in range(0, len(x), batch_size)]
    if not parts:
        raise ValueError("empty batch")
    named = {k: np.concatenate([p[j] for p in parts]) for j, k in enumerate(net.outputs)}
    if isinstance(model.output, dict):
        return {k: named[k] for k in model.output}
    if isinstance(model.output, (list, tuple)):
        return [named[k] for k in model.output_names]
    return named[model.output_names[0]]


def forward_cam(model: Any, x: np.ndarray, layer_name: str) -> tuple[np.ndarray, np.ndarray]:
    """A classifier's P(pneumonia) float64 (B,) and signed CAM float32 (B, h, w) for inputs (B, S, S, 1)."""
    net = _runner(model, ("cam", layer_name))
    named = dict(zip(net.outputs, net(np.asarray(x, np.float32)), strict=True))  # one invoke
    return np.asarray(named["probability"], np.float64), np.asarray(named["cam"], np.float32)


def describe(models: Any) -> str:
    """Which runtime runs each network of a pneumo.pipeline.Models, e.g. 'classifier TFLite, gate and lungs TFLite'
    (one network for both) or 'classifier TFLite, lungs TFLite, gate TFLite' (TensorFlow only for the Keras networks
    that training loads)."""
    nets = [("classifier", models.classifier.model, ("cam", models.classifier.gradcam_layer))]
    if models.lungs is not None and models.lungs is models.gate:
        nets.append(("gate and lungs", models.gate.model, "forward"))
    else:
        nets += [(n, m.model, "forward") for n, m in (("lungs", models.lungs), ("gate", models.gate)) if m is not None]
    words = {True: "TFLite", False: "TensorFlow"}
    return ", ".join(f"{n} {words[isinstance(_runner(m, k), (LiteNet, ProbabilityView))]}" for n, m, k in nets)


def stale_reason(keras_path: Path, metadata: dict) -> str | None:
    """Why the flatbuffer that ``metadata`` names cannot run for ``keras_path`` (None when it is fresh: made by this
    export version from this very ``.keras`` file, and the very file that export wrote; all checked by SHA-256)."""
    block = metadata.get("tflite")
    if not block:
        return "its metadata names no TFLite copy"
    path = keras_path.parent / block["file"]
    if not path.exists():
        return f"{path.name} is missing"
    if hashlib.sha256(path.read_bytes()).hexdigest() != block.get("tflite_sha256"):
        return f"{path.name} is not the file the export wrote"
    if keras_path.exists() and file_sha256(keras_path) != block.get("keras_sha256"):
        return f"{path.name} was made from another {keras_path.name}"
    if block.get("export_version") != config.ENGINE_EXPORT_VERSION:
        return f"{path.name} was made by another export version"
    return None


def load_network(path: str | Path, what: str = "model") -> Network:
    """The network at ``path`` (``X.keras``, with ``X.json`` and ``X.tflite`` beside it) running its TFLite copy.

    Raises ModelFileError, naming the export command, when the metadata is missing or the copy is missing or stale.
    """
    path = Path(path)
    meta = read_metadata(path, what)
    reason = stale_reason(path, meta)
    if reason is not None:
        raise ModelFileError(f"cannot run the {what} {path.name}: {reason}. Make a fresh copy with "
                             f"`{EXPORT_COMMAND} {path}` (needs the train extra: pip install '.[train]')")  # fmt: skip
    block = meta["tflite"]
    net = LiteNet((path.parent / block["file"]).read_bytes(), block["signature_outputs"], block["outputs"])
    runs = block["runs"]
    if isinstance(runs, str):  # the network's own outputs
        model = LiteModel(path.stem, net.input_shape, net.outputs, named_outputs=len(net.outputs) > 1)
        attach(model, runs, net)
    else:  # a classifier's CAM graph: its own output is the probability (B, 1)
        model = LiteModel(path.stem, net.input_shape, ["probability"], named_outputs=False)
        attach(model, tuple(runs), net)
        attach(model, "forward", ProbabilityView(net, "probability"))
    return Network(model, meta, path)
