"""Streamlit glue shared by the pages (not a page itself): the cached model, the cached analysis, the disclaimer.

Caching: the model is loaded once per process (``st.cache_resource``) and never modified. An analysis is cached by
the SHA-256 of the file's bytes (plus its name and the model), so the same bytes always give the same, immutable
result and moving a slider never re-runs the network. Results are shared objects with read-only arrays; they hold no
session information, and they are dropped after ``config.APP_CACHE_TTL_S`` or when the cache is full.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import logging
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import streamlit as st

from pneumo import config
from pneumo.nets.modelfile import default_model_path
from pneumo.present.text import DISCLAIMER

if TYPE_CHECKING:  # the analysis modules are imported only when a page needs the model: the first page paints sooner
    from pneumo.pipeline import Models, Result

__all__ = [
    "DISCLAIMER",
    "analyze",
    "evaluation",
    "get_model",
    "model_metadata",
    "model_or_stop",
    "model_path",
    "release_memory",
    "show_disclaimer",
    "start_warm_up",
]  # fmt: skip


def _libc() -> ctypes.CDLL | None:
    """glibc, on Linux only (Streamlit Community Cloud); None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


_LIBC = _libc()
if _LIBC is not None and hasattr(_LIBC, "mallopt"):
    # Streamlit runs every session in its own thread, and glibc gives each thread its own heap arena that keeps freed
    # memory: with a few visitors that alone costs hundreds of MB. Two arenas (M_ARENA_MAX = -8) keep the app < 1 GB.
    _LIBC.mallopt(-8, 2)


def release_memory() -> None:
    """Hand freed heap memory back to the operating system (glibc only; a no-op elsewhere)."""
    if _LIBC is not None and hasattr(_LIBC, "malloc_trim"):
        _LIBC.malloc_trim(0)


def model_path() -> Path:
    """The app's model file: ``$PNEUMO_MODEL`` or the committed model (pneumo.nets.default_model_path)."""
    return default_model_path()


@st.cache_data(show_spinner=False, max_entries=4)
def _read_json(path: str, mtime: float) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def model_metadata() -> dict[str, Any]:
    """The app's model metadata (its .json), read without loading the model; {} when there is none."""
    meta = model_path().with_suffix(".json")
    return _read_json(str(meta), meta.stat().st_mtime) if meta.is_file() else {}


def evaluation() -> dict[str, Any] | None:
    """The shipped independent evaluation of the app's model file (matched by its SHA-256), or None."""
    from pneumo.present.evaluation import load_evaluation

    return load_evaluation(model_path())


_LOADED: dict[tuple[str, float], Models] = {}  # the models of this process, loaded once (by the warm-up or a page)
_LOAD_LOCK = threading.Lock()
_WARM_UP: threading.Thread | None = None


def _load_models(path: str, mtime: float) -> Models:
    """Load the models at ``path`` and trace their compiled networks, once per process; later callers wait for the
    first (the warm-up thread or a page) and share its result."""
    with _LOAD_LOCK:
        if (path, mtime) not in _LOADED:
            from pneumo.pipeline import load_models, warm_up

            models = load_models(path)  # the TFLite copies: no TensorFlow import
            try:
                warm_up(models)
            except Exception:  # noqa: BLE001 - a failed trial run must not hide models that loaded
                logging.getLogger(__name__).exception("model warm-up failed; the models are used untraced")
            _LOADED.clear()  # a replaced file: forget the old models
            _LOADED[(path, mtime)] = models
        return _LOADED[(path, mtime)]


def _warm_up(path: str, mtime: float) -> None:
    try:
        _load_models(path, mtime)
    except Exception:  # noqa: BLE001 - a broken model file is reported by the page that needs it, not here
        logging.getLogger(__name__).exception("model warm-up failed")


def start_warm_up() -> None:
    """Load the models (their TFLite copies) and run them once, in a background
    thread, once per process, after the first page has painted: the first result then waits for nothing."""
    global _WARM_UP
    path = model_path()
    if _WARM_UP is None and path.exists():
        _WARM_UP = threading.Thread(target=_warm_up, args=(str(path), path.stat().st_mtime), daemon=True,
                                    name="pneumo-warm-up")  # fmt: skip
        _WARM_UP.start()


@st.cache_resource(show_spinner="Loading the model (first visit only)…")
def get_model(path: str, mtime: float) -> Models:
    """The classifier at ``path``, its lung model and the scope gate, loaded once per process (or by the warm-up);
    ``mtime`` makes a replaced file load afresh."""
    return _load_models(path, mtime)


def model_or_stop() -> Models:
    """The app's model, or an explanation on the page and ``st.stop()`` when it is missing or broken."""
    path = model_path()
    if not path.exists():
        st.error(
            f"No model file at `{path}`. Train one with `python -m pneumo.training.train` (see the README) or point "
            f"the environment variable `{config.MODEL_ENV_VAR}` at a `.keras` file with its `.json` metadata."
        )
        st.stop()
    try:
        return get_model(str(path), path.stat().st_mtime)
    except Exception as exc:  # noqa: BLE001 - any failure to load must become a message, not a crash
        st.error(f"The model at `{path}` could not be loaded ({type(exc).__name__}: {exc}).")
        st.stop()


@st.cache_resource(max_entries=config.APP_CACHE_ENTRIES, ttl=config.APP_CACHE_TTL_S, show_spinner=False, validate=None)
def _cached_analysis(digest: str, name: str, model_key: str, _data: bytes, _loaded: Models) -> Result:
    """The one place where the network runs for an upload; keyed by (content hash, name, model)."""
    from pneumo.pipeline import analyze_bytes

    result = analyze_bytes(_data, name, _loaded)
    release_memory()  # decoding and Grad-CAM leave large temporary buffers behind
    return result


def analyze(data: bytes, name: str, loaded: Models) -> Result:
    """Analyse a file's bytes with the app's model, reusing the cached result for bytes seen before."""
    model_key = f"{Path(loaded.path).resolve()}|{loaded.metadata.get('created', '')}"
    return _cached_analysis(hashlib.sha256(data).hexdigest(), name, model_key, data, loaded)


def show_disclaimer() -> None:
    """The medical disclaimer, shown on the Analyze and About pages."""
    st.warning(DISCLAIMER, icon=":material/warning:")


def png_bytes(image: Any) -> bytes:
    """PNG bytes of a uint8 (H, W) or RGB (H, W, 3) array (fast compression: these go to the browser)."""
    import cv2

    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    ok, data = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    return data.tobytes() if ok else b""


@st.cache_resource(max_entries=config.APP_CACHE_ENTRIES, ttl=config.APP_CACHE_TTL_S, show_spinner=False)
def _display_pixels(digest: str, _res: Result) -> Any:
    from pneumo.io.decode import shrink_to_side

    # the analysed pixels are read-only already; so is a reduced copy
    image = shrink_to_side(_res.pixels, config.DISPLAY_MAX_SIDE)
    image.setflags(write=False)
    return image


@st.cache_resource(max_entries=config.APP_CACHE_ENTRIES, ttl=config.APP_CACHE_TTL_S, show_spinner=False)
def display_png(digest: str, _res: Result) -> bytes:
    """PNG bytes of the radiograph at display size (longest side at most config.DISPLAY_MAX_SIDE), once per image."""
    return png_bytes(_display_pixels(digest, _res))


@st.cache_resource(max_entries=4 * config.APP_CACHE_ENTRIES, ttl=config.APP_CACHE_TTL_S, show_spinner=False)
def overlay_display_png(digest: str, cls: int, alpha: float, outline: bool, _res: Result, _meta: dict) -> bytes:
    """PNG bytes of the heatmap overlay at display size, once per (image, class, opacity, outline): a threshold move
    that keeps the explained class costs nothing."""
    from pneumo.explain.draw import result_overlay

    shown = _display_pixels(digest, _res)
    return png_bytes(result_overlay(_res, _meta, cls, alpha, outline, shown))
