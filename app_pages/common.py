"""Streamlit glue shared by the pages (not a page itself): the cached model, the cached analysis, the disclaimer.

Caching: the model is loaded once per process (``st.cache_resource``) and never modified. An analysis is cached by
the SHA-256 of the file's bytes (plus its name and the model), so the same bytes always give the same, immutable
result and moving a slider never re-runs the network. Results are shared objects with read-only arrays at display
size (the full-resolution pixels are dropped after the analysis); they hold no session information. The analyses and
the PNGs sent to browsers live in two :class:`ByteBudgetCache` s bounded by bytes and by ``config.APP_CACHE_TTL_S``.
"""

from __future__ import annotations

import ctypes
import gc
import hashlib
import json
import logging
import sys
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import streamlit as st

from pneumo import config
from pneumo.nets.modelfile import default_model_path
from pneumo.present.text import DISCLAIMER

if TYPE_CHECKING:  # the analysis modules are imported only when a page needs the model: the first page paints sooner
    from pneumo.pipeline import Models, Result

__all__ = [
    "ANALYSES",
    "DISCLAIMER",
    "PNGS",
    "ByteBudgetCache",
    "analyze",
    "evaluation",
    "get_model",
    "model_metadata",
    "model_or_stop",
    "model_path",
    "release_memory",
    "show_disclaimer",
    "start_janitor",
    "start_warm_up",
    "track_session",
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


class ByteBudgetCache:
    """A least-recently-used cache bounded by the bytes of its values and by their age; thread-safe, shared by all
    sessions (its values are immutable: read-only arrays, bytes).

    Written by hand because Streamlit's caches (``st.cache_data``, ``st.cache_resource``) bound only the number of
    entries and their age, not their size: sixteen entries can be sixteen thumbnails or sixteen 49-megapixel images.
    A value larger than the whole budget is returned but not kept.
    """

    def __init__(self, max_bytes: int, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_bytes = int(max_bytes)  # read on every put: a test may lower it
        self.ttl_s = float(ttl_s)
        self._clock = clock
        self._lock = threading.Lock()
        self._items: OrderedDict[Hashable, tuple[Any, int, float]] = OrderedDict()  # key -> (value, bytes, stored at)
        self._bytes = 0

    @property
    def nbytes(self) -> int:
        """The bytes the kept values hold (as counted by the callers of :meth:`put`)."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items

    def _drop(self, key: Hashable) -> None:
        _, size, _ = self._items.pop(key)
        self._bytes -= size

    def get(self, key: Hashable) -> Any | None:
        """The value kept for ``key`` (now the most recently used), or None when absent or older than the TTL."""
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            if self._clock() - item[2] > self.ttl_s:
                self._drop(key)
                return None
            self._items.move_to_end(key)
            return item[0]

    def put(self, key: Hashable, value: Any, nbytes: int) -> Any:
        """Keep ``value`` (``nbytes`` large) under ``key``, evicting the least recently used values until the total
        fits the budget; returns ``value``."""
        with self._lock:
            if key in self._items:
                self._drop(key)
            if nbytes > self.max_bytes:
                return value
            self._items[key] = (value, int(nbytes), self._clock())
            self._bytes += int(nbytes)
            while self._bytes > self.max_bytes:
                self._drop(next(iter(self._items)))
            return value

    def purge_expired(self) -> int:
        """Drop the values older than the TTL; returns how many were dropped."""
        with self._lock:
            now = self._clock()
            old = [k for k, (_, _, t) in self._items.items() if now - t > self.ttl_s]
            for k in old:
                self._drop(k)
            return len(old)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0


def result_nbytes(res: Result) -> int:
    """The memory a Result holds: its arrays plus a small allowance for the object, name, facts and warnings."""
    arrays = (res.pixels, res.x224, res.lung_mask, res.cam224)
    return sum(int(a.nbytes) for a in arrays if a is not None) + 4096


# The analyses (display-size Results) and the PNGs sent to browsers, each bounded by bytes (config).
ANALYSES = ByteBudgetCache(config.APP_CACHE_BYTES, config.APP_CACHE_TTL_S)
PNGS = ByteBudgetCache(config.APP_PNG_CACHE_BYTES, config.APP_CACHE_TTL_S)


def display_size(res: Result) -> Result:
    """``res`` as the app keeps it: pixels uint8 (h, w) with the long side at most ``config.DISPLAY_MAX_SIDE`` (all
    the page, the report and the overlay download draw); the full-resolution pixels are not kept."""
    from pneumo.io.decode import shrink_to_side

    if res.pixels is None or max(res.pixels.shape) <= config.DISPLAY_MAX_SIDE:
        return res
    small = shrink_to_side(res.pixels, config.DISPLAY_MAX_SIDE)  # (h', w') uint8
    small.setflags(write=False)
    return replace(res, pixels=small)


def analyze(data: bytes, name: str, loaded: Models) -> Result:
    """Analyse a file's bytes with the app's model, reusing the cached result for bytes seen before; the network
    runs here and nowhere else for an upload."""
    model_key = f"{Path(loaded.path).resolve()}|{loaded.metadata.get('created', '')}"
    key = (hashlib.sha256(data).hexdigest(), name, model_key)  # the name: it can decide whether bytes are DICOM
    hit = ANALYSES.get(key)
    if hit is not None:
        return hit
    from pneumo.pipeline import analyze_bytes

    result = display_size(analyze_bytes(data, name, loaded))
    release_memory()  # decoding and Grad-CAM leave large temporary buffers behind
    return ANALYSES.put(key, result, result_nbytes(result))


_SESSION_ENDED = threading.Event()  # set when a session's state is freed: the janitor then hands memory back
_JANITOR: threading.Thread | None = None
_JANITOR_LOCK = threading.Lock()


class _SessionToken:
    """Lives in a session's state; when Streamlit frees that state (the session has ended), it wakes the janitor."""


def track_session() -> None:
    """Put a token into this session's state, once: its finaliser tells the janitor that the session's results,
    uploads and reports were freed, so that the memory goes back to the operating system soon after."""
    if "_pneumo_session" not in st.session_state:
        token = _SessionToken()
        weakref.finalize(token, _SESSION_ENDED.set)
        st.session_state["_pneumo_session"] = token


def janitor_pass() -> None:
    """One round of housekeeping: drop cache entries past their TTL; after a session ended (or entries expired),
    collect reference cycles; then hand freed heap memory back to the operating system."""
    ended = _SESSION_ENDED.is_set()
    _SESSION_ENDED.clear()
    expired = ANALYSES.purge_expired() + PNGS.purge_expired()
    if ended or expired:
        gc.collect()  # a session's objects often form cycles: free them now, not at the next full collection
    release_memory()


def _janitor_loop() -> None:
    while True:
        _SESSION_ENDED.wait(timeout=config.APP_JANITOR_S)
        try:
            janitor_pass()
        except Exception:  # noqa: BLE001 - housekeeping must never end the thread
            logging.getLogger(__name__).exception("memory housekeeping failed")
        time.sleep(1.0)  # several sessions ending together: one pass


def start_janitor() -> None:
    """Start the housekeeping thread (:func:`janitor_pass` every ``config.APP_JANITOR_S`` seconds and soon after a
    session ends), once per process."""
    global _JANITOR
    with _JANITOR_LOCK:
        if _JANITOR is None:
            _JANITOR = threading.Thread(target=_janitor_loop, daemon=True, name="pneumo-janitor")
            _JANITOR.start()


def show_disclaimer() -> None:
    """The medical disclaimer, shown on the Analyze and About pages."""
    st.warning(DISCLAIMER, icon=":material/warning:")


def png_bytes(image: Any) -> bytes:
    """PNG bytes of a uint8 (H, W) or RGB (H, W, 3) array (fast compression: these go to the browser)."""
    import cv2

    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    ok, data = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    return data.tobytes() if ok else b""


def _png_of(key: Hashable, make: Callable[[], Any]) -> bytes:
    """PNG bytes of the image ``make()`` draws, from the byte-bounded PNG cache when it holds ``key``."""
    hit = PNGS.get(key)
    if hit is not None:
        return hit
    data = png_bytes(make())
    return PNGS.put(key, data, len(data))


def display_png(digest: str, res: Result) -> bytes:
    """PNG bytes of the radiograph at display size (longest side at most config.DISPLAY_MAX_SIDE), once per image."""
    from pneumo.io.decode import shrink_to_side

    return _png_of(("radiograph", digest), lambda: shrink_to_side(res.pixels, config.DISPLAY_MAX_SIDE))


def overlay_display_png(digest: str, cls: int, alpha: float, outline: bool, res: Result, meta: dict) -> bytes:
    """PNG bytes of the heatmap overlay at display size, once per (image, class, opacity, outline, model): a threshold
    move that keeps the explained class costs nothing."""
    from pneumo.explain.draw import result_overlay
    from pneumo.io.decode import shrink_to_side

    key = ("overlay", digest, cls, alpha, outline, str(meta.get("created", "")))
    shown = shrink_to_side(res.pixels, config.DISPLAY_MAX_SIDE)  # a no-op for the app's display-size results
    return _png_of(key, lambda: result_overlay(res, meta, cls, alpha, outline, shown))
