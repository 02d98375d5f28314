"""pneumo: a research demo that reads a pediatric chest X-ray and estimates the probability of pneumonia.

Not a medical device. See README.md. The public names are listed once, here; each loads its room on first use
(``import pneumo`` itself imports nothing heavy). Data flows one way::

    io (bytes -> pixels) -> checks (scope gate, lungs) -> nets (TFLite networks) -> explain (CAM -> heat -> drawing)
    -> pipeline (the one analysis path, one Result) -> present (words, report) -> predict (CLI) / app.py (Streamlit)

``pneumo.training`` and ``pneumo.bench`` build on that and are never imported by it.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0"

_PUBLIC = {
    # io: decoding
    "ImageLoadError": "pneumo.io.decode",
    "LoadedImage": "pneumo.io.decode",
    "load_image": "pneumo.io.decode",
    "load_many": "pneumo.io.decode",
    # nets: model files and their TFLite runtime
    "ModelFileError": "pneumo.nets.modelfile",
    "Network": "pneumo.nets.modelfile",
    "load_network": "pneumo.nets.lite",
    # pipeline: the one analysis path
    "Models": "pneumo.pipeline",
    "Result": "pneumo.pipeline",
    "load_models": "pneumo.pipeline",
    "analyze_bytes": "pneumo.pipeline",
    "analyze_images": "pneumo.pipeline",
    "analyze_stream": "pneumo.pipeline",
    # explain: heat and drawing
    "result_overlay": "pneumo.explain.draw",
    # present: the report
    "build_report": "pneumo.present.report",
}
__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'pneumo' has no attribute {name!r}")
