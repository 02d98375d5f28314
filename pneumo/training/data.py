"""The public data set's folder layout: listing, patient ids, the patient-level split and a decoded-image cache."""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from pneumo import config
from pneumo.io.decode import ImageLoadError, load_image
from pneumo.io.preprocess import preprocess

log = logging.getLogger(__name__)

_PERSON = re.compile(r"^(person\d+)_", re.IGNORECASE)
_NORMAL = re.compile(r"^((?:NORMAL2-)?IM-\d+)", re.IGNORECASE)


def patient_id(filename: str) -> str:
    """Patient id from a Kermany file name: ``person123_bacteria_4.jpeg`` -> ``person123``,
    ``NORMAL2-IM-0383-0001.jpeg`` -> ``NORMAL2-IM-0383``, ``IM-0115-0001.jpeg`` -> ``IM-0115``.
    Unknown patterns fall back to the file stem (one image, one patient)."""
    name = Path(filename).name
    for pat in (_PERSON, _NORMAL):
        m = pat.match(name)
        if m:
            return m.group(1)
    return Path(name).stem


def list_split(split_dir: Path) -> tuple[list[Path], np.ndarray]:
    """Image paths under ``split_dir/{NORMAL,PNEUMONIA}`` (sorted) and labels, 1 = PNEUMONIA."""
    paths: list[Path] = []
    labels: list[int] = []
    for label, cls in enumerate(config.CLASS_NAMES):
        files = sorted(p for p in (split_dir / cls).glob("*") if p.suffix.lower() in config.IMAGE_SUFFIXES)
        paths += files
        labels += [label] * len(files)
    return paths, np.asarray(labels, dtype=np.int64)


def patient_split(
    paths: list[Path], labels: np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val): whole patients go to validation, per class, until ``val_fraction`` of its images.

    Images of one patient never straddle the split; the split is stratified by class and fixed by ``seed``.
    """
    rng = np.random.default_rng(seed)
    pids = np.array([patient_id(p.name) for p in paths])
    val_mask = np.zeros(len(paths), dtype=bool)
    for label in np.unique(labels):
        cls_idx = np.flatnonzero(labels == label)
        patients = sorted(set(pids[cls_idx]))
        rng.shuffle(patients)
        target = val_fraction * len(cls_idx)
        taken = 0
        for pid in patients:
            if taken >= target:
                break
            m = (pids == pid) & (labels == label)
            val_mask |= m
            taken += int(m.sum())
    # a patient id must not appear on both sides, whatever the class
    assert not set(pids[val_mask]) & set(pids[~val_mask]), "patient leak between train and validation"
    return np.flatnonzero(~val_mask), np.flatnonzero(val_mask)


def fingerprint(paths: list[Path], root: Path) -> str:
    """sha256 over the sorted (relative path, content sha256) pairs: identifies the exact training data."""
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(f"{p.relative_to(root).as_posix()}:{hashlib.sha256(p.read_bytes()).hexdigest()}\n".encode())
    return h.hexdigest()


def cached_array(
    cache_dir: str | Path | None, tag: str, paths: list[Path], make: Callable[[], np.ndarray]
) -> np.ndarray:
    """``make()`` cached as ``<cache_dir>/<tag>_<key>.npy``; the key hashes the tag and the files' paths, sizes and
    modification times, so changed data is decoded again. No cache_dir: just ``make()``."""
    if not cache_dir:
        return make()
    key = hashlib.sha256(tag.encode())
    for p in paths:
        st = p.stat()
        key.update(f"{p}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    cache = Path(cache_dir) / f"{tag}_{key.hexdigest()[:16]}.npy"
    if cache.exists():
        log.info("using cached decoded images %s", cache)
        return np.load(cache)
    arr = make()
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, arr)
    return arr


def load_arrays(paths: list[Path], size: int, cache_dir: Path | None = None) -> np.ndarray:
    """Decode and preprocess every image to uint8 (N, size, size, 1), cached in ``cache_dir`` (:func:`cached_array`)."""

    def decode() -> np.ndarray:
        out = np.empty((len(paths), size, size, 1), dtype=np.uint8)  # (N, S, S, 1)
        for i, p in enumerate(paths):
            try:
                out[i] = preprocess(load_image(p).pixels, size)
            except ImageLoadError as exc:
                raise ImageLoadError(f"{p}: {exc}") from exc
            if (i + 1) % 1000 == 0:
                log.info("decoded %d/%d images", i + 1, len(paths))
        return out

    return cached_array(cache_dir, f"decoded_{size}", paths, decode)


def load_masks(paths: list[Path], data_root: Path, mask_root: Path, size: int = 224) -> np.ndarray:
    """bool (N, size, size) masks by image stem; an image without a mask gets an all-False mask (and is skipped)."""
    out = np.zeros((len(paths), size, size), dtype=bool)
    for i, p in enumerate(paths):
        rel = p.relative_to(data_root).with_suffix(".png")
        m = cv2.imread(str(mask_root / rel), cv2.IMREAD_GRAYSCALE)
        if m is not None:
            out[i] = cv2.resize(m, (size, size), interpolation=cv2.INTER_NEAREST) >= 128
    return out
