"""Streamlit glue shared by the pages (not a page itself): the cached model, the cached analysis, the disclaimer.

Caching: the model is loaded once per process (``st.cache_resource``) and never modified. An analysis is cached by
the SHA-256 of the file's bytes (plus its name and the model), so the same bytes always give the same, immutable
result and moving a slider never re-runs the network. Results are shared objects with read-only arrays; they hold no
session information, and they are dropped after ``config.APP_CACHE_TTL_S`` or when the cache is full.
"""

from __future__ import annotations

import ctypes
import sys
from pathlib import Path

import streamlit as st

from pneumo import config
from pneumo.analysis import Analysis, analyze_bytes, file_digest, resolve_model_path
from pneumo.model import LoadedModel, load_model
from pneumo.report import DISCLAIMER

__all__ = ["DISCLAIMER", "analyze", "get_model", "model_or_stop", "release_memory", "show_disclaimer"]


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


@st.cache_resource(show_spinner="Loading the model (first visit only)…")
def get_model(path: str, mtime: float) -> LoadedModel:
    """Load the model at ``path`` once per process; ``mtime`` makes a replaced file load afresh."""
    return load_model(path)


def model_or_stop() -> LoadedModel:
    """The app's model, or an explanation on the page and ``st.stop()`` when it is missing or broken."""
    path = resolve_model_path()
    if not path.exists():
        st.error(
            f"No model file at `{path}`. Train one with `python -m pneumo.train` (see the README) or point the "
            f"environment variable `{config.MODEL_ENV_VAR}` at a `.keras` file with its `.json` metadata."
        )
        st.stop()
    try:
        return get_model(str(path), path.stat().st_mtime)
    except Exception as exc:  # noqa: BLE001 - any failure to load must become a message, not a crash
        st.error(f"The model at `{path}` could not be loaded ({type(exc).__name__}: {exc}).")
        st.stop()


@st.cache_resource(max_entries=config.APP_CACHE_ENTRIES, ttl=config.APP_CACHE_TTL_S, show_spinner=False, validate=None)
def _cached_analysis(digest: str, name: str, model_key: str, _data: bytes, _loaded: LoadedModel) -> Analysis:
    """The one place where the network runs for an upload; keyed by (content hash, name, model)."""
    result = analyze_bytes(_data, name, _loaded)
    release_memory()  # decoding and Grad-CAM leave large temporary buffers behind
    return result


def analyze(data: bytes, name: str, loaded: LoadedModel) -> Analysis:
    """Analyse a file's bytes with the app's model, reusing the cached result for bytes seen before."""
    model_key = f"{Path(loaded.path).resolve()}|{loaded.metadata.get('created', '')}"
    return _cached_analysis(file_digest(data), name, model_key, data, loaded)


def show_disclaimer() -> None:
    """The medical disclaimer, shown on the Analyze and About pages."""
    st.warning(DISCLAIMER, icon=":material/warning:")
