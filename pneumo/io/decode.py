"""Read a radiograph from a path or bytes into one 8-bit grayscale array.

One entry point, :func:`load_image`, serves the CLI, the app and training. It accepts PNG, JPEG, BMP, TIFF and DICOM;
8/16-bit grayscale, RGB, RGBA, palette and CMYK; it applies EXIF orientation and, for DICOM, the modality LUT, the VOI
LUT or window and MONOCHROME1 inversion (first frame of multi-frame files). Anything it cannot read raises
:class:`ImageLoadError` with a message a person understands; no other exception escapes (tests/io/test_fuzz.py checks
this). A file cut short is refused, never grey-filled; what decoding notices but can live with (a multi-frame DICOM, a
header that contradicts itself, burned-in text) becomes a warning code on the image (:attr:`LoadedImage.warnings`).
DICOM coded values reach ``info`` only as standard codes (anything else as "other"). Nothing is written to disk and
nothing about the pixels or patient is logged.

Callers say how many pixels they need, so nothing larger is decoded or kept: ``min_side`` (the CLI: each side at least
twice the model input) lets a JPEG be decoded in the DCT domain at 1/2, 1/4 or 1/8 scale, and ``max_side`` (the app:
at most the display size) area-resizes the result. :func:`load_many` decodes many files in a thread pool.
"""

from __future__ import annotations

import io
import logging
import os
import re
import stat
import struct
import warnings
import zlib
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import cv2
import numpy as np
import pydicom
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError
from pydicom import config as pydicom_config
from pydicom.dataset import FileMetaDataset
from pydicom.encaps import generate_frames
from pydicom.multival import MultiValue
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, convert_color_space, get_decoder
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
)

from pneumo import config

log = logging.getLogger(__name__)

# PIL must never fill a truncated file with grey: a truncated upload is an error, not a half image.
ImageFile.LOAD_TRUNCATED_IMAGES = False
# PIL's own bomb guard raises at 2x this; we check the declared size ourselves first (see _check_size).
Image.MAX_IMAGE_PIXELS = config.MAX_IMAGE_PIXELS
# pydicom's warnings quote header values, which can be patient data: keep them out of every log. Its logger has a
# NullHandler, so with propagation off nothing reaches the root logger (or Python's last-resort stderr handler).
logging.getLogger("pydicom").propagate = False
# pydicom warns about invalid header values, quoting them (patient data): tell it not to validate on reading at all.
# This is a process-wide setting, not `warnings.catch_warnings()`, which is not thread-safe while the app decodes
# several users' uploads at once.
pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE
# PIL's warnings concern corrupt metadata (EXIF), which we either decode or reject; best-effort silence.
warnings.filterwarnings("ignore", module=r"PIL(\..*)?$")

_PIL_FORMATS = {"PNG", "JPEG", "MPO", "BMP", "TIFF"}
# Formats whose frame count is checked: a multi-frame PNG/GIF/WebP is an animation, not a radiograph.
_ANIMATABLE = {"PNG", "GIF", "WEBP", "FLI", "ICNS"}
# Leading bytes of raster formats: a file with one of these is not DICOM, whatever its name says.
_RASTER_MAGIC = (b"\x89PNG", b"\xff\xd8", b"BM", b"II*\x00", b"MM\x00*", b"GIF8", b"RIFF", b"%PDF", b"PK")
# Colourfulness is estimated on at most this many pixels (an unbiased strided sample; a full int16 copy of a
# 50 MP RGB image would cost 300 MB).
_COLOUR_SAMPLE_PIXELS = 1_000_000
# A JPEG scan's entropy-coded data ends at the first marker that is not a stuffed byte (FF00), a restart marker (RSTn)
# or a fill byte (FFFF).
_JPEG_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
# Bytes put before a JPEG's end marker to learn whether its last scan was complete (see _jpeg_cut_short): runs of fixed
# pseudo-random values without 0xFF, which the decoder reads as Huffman codes, after each restart marker RST0-7 (a
# scan with restart intervals cut at an interval's end waits for one).
_JPEG_NOISE = np.random.default_rng(17).integers(0, 255, 64, dtype=np.uint8).tobytes()
_JPEG_PROBE = _JPEG_NOISE + b"".join(bytes((0xFF, 0xD0 + k)) + _JPEG_NOISE for k in range(8))
# Warning codes decoding can put on an image (LoadedImage.warnings); their sentences are in checks.scope.WARNING_CODES.
DECODE_WARNINGS = ("multi_frame", "burned_in_annotation", "dicom_bits_inconsistent", "dicom_sign_inconsistent")
# DICOM tags of pixel data, (7FE0,0010/0008/0009), as bytes in little- and big-endian files.
_DICOM_PIXEL_TAGS = tuple(
    struct.pack(order, 0x7FE0, elem) for order in ("<HH", ">HH") for elem in (0x0010, 0x0008, 0x0009)
)
# The item that closes encapsulated (compressed) pixel data: (FFFE,E0DD) with length 0, little endian.
_DICOM_SEQUENCE_END = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)


class ImageLoadError(ValueError):
    """Raised for any input that cannot be turned into a radiograph; ``str(err)`` is meant for people."""


@dataclass(frozen=True)
class LoadedImage:
    """A decoded radiograph.

    pixels: uint8 (H, W) grayscale, 0 = black, as displayed (EXIF rotation and MONOCHROME1 already undone); smaller
    than the file's image when the caller asked for ``max_side`` or ``min_side`` (see :func:`load_image`).
    info: non-identifying facts for display: format, original size/mode, DICOM modality and view position.
    colourfulness: mean |R-G| + |G-B| of the source before conversion to gray (0 for grayscale sources).
    full_size: (width, height) of the file's image as displayed; None means the size of ``pixels``.
    warnings: codes (keys of ``pneumo.checks.scope.WARNING_CODES``) for what decoding noticed, e.g. ``multi_frame``.
    """

    pixels: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)
    colourfulness: float = 0.0
    full_size: tuple[int, int] | None = None
    warnings: tuple[str, ...] = ()

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of ``pixels``."""
        h, w = self.pixels.shape
        return w, h

    @property
    def original_size(self) -> tuple[int, int]:
        """(width, height) of the image in the file (after EXIF rotation), whatever size was decoded."""
        return self.full_size if self.full_size is not None else self.size


def _work_dtype(arr: np.ndarray) -> type:
    """float32 for data of up to 16 bits (exact, half the memory of float64); float64 for wider data."""
    return np.float32 if arr.dtype.itemsize <= 2 or arr.dtype == np.float32 else np.float64


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    """Min-max scale any numeric (H, W) array to uint8; a constant image becomes all zeros."""
    arr = np.asarray(arr)
    work = arr.astype(_work_dtype(arr), copy=True)  # (H, W) float, scaled in place below
    if not np.all(np.isfinite(work)):
        np.nan_to_num(work, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = float(work.min()), float(work.max())
    if hi - lo < 1e-12:
        return np.zeros(arr.shape, dtype=np.uint8)
    work -= lo
    work *= 255.0 / (hi - lo)
    np.rint(work, out=work)
    return work.astype(np.uint8)


def _check_size(width: int, height: int) -> None:
    """Refuse absurd sizes before any pixel is decoded."""
    if width <= 0 or height <= 0:
        raise ImageLoadError("The image has no pixels.")
    if width * height > config.MAX_IMAGE_PIXELS:
        raise ImageLoadError(
            f"The image is too large ({width}x{height} pixels); the limit is "
            f"{config.MAX_IMAGE_PIXELS // 1_000_000} megapixels."
        )
    if max(width, height) / min(width, height) > config.MAX_ASPECT_RATIO:
        raise ImageLoadError(
            f"The image is a {width}x{height} strip, not a radiograph (aspect ratio over {config.MAX_ASPECT_RATIO:g})."
        )
    if min(width, height) < config.MIN_IMAGE_SIDE:
        raise ImageLoadError(
            f"The image is too small ({width}x{height} pixels); at least "
            f"{config.MIN_IMAGE_SIDE} pixels per side are needed."
        )


def _is_dicom(data: bytes, name: str) -> bool:
    """DICOM by its 'DICM' magic, or by a .dcm/.dicom name (preamble-less files) unless it starts like a raster."""
    if data[128:132] == b"DICM":
        return True
    return name.lower().endswith((".dcm", ".dicom")) and not data.startswith(_RASTER_MAGIC)


# ---------------------------------------------------------------------------------------------------------- DICOM


def _safe_uid(uid: Any) -> str:
    """A transfer syntax UID for a message: digits and dots only (the value comes from an untrusted header)."""
    text = "".join(c for c in str(uid) if c.isdigit() or c == ".")[:64]
    return text or "unreadable"


def _transfer_syntax(ds: Any) -> Any:
    """The dataset's transfer syntax UID; for a preamble-less file without one, the encoding pydicom detected."""
    meta = getattr(ds, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:
        return UID(str(meta.TransferSyntaxUID).strip("\x00 "))
    implicit, little = getattr(ds, "original_encoding", (None, None))
    if implicit is None:
        return UID("")
    ts = ImplicitVRLittleEndian if implicit else (ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
    ds.file_meta = meta if meta is not None else FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ts  # the decoder reads it from here
    return ts


def _first_number(value: Any) -> float:
    """The first value of a possibly multi-valued numeric DICOM element (DS/IS) as float."""
    return float(value[0] if isinstance(value, (list, tuple, MultiValue)) else value)


def _window(arr: np.ndarray, ds: Any) -> np.ndarray | None:
    """Apply the first VOI window (WindowCenter/Width, PS3.3 C.11.2.1.2) to float (H, W); returns 0..255 or None.

    Implemented here rather than via ``pydicom.pixels.apply_windowing`` because that returns the window in the
    stored-value range (which depends on BitsStored and rescale tags), and we need the display range 0..255; the
    result equals theirs rescaled (tests/test_io.py checks this). Works in the dtype of ``arr``, in place.
    """
    centers, widths = ds.get("WindowCenter"), ds.get("WindowWidth")
    if centers is None or widths is None:
        return None
    center, width = _first_number(centers), _first_number(widths)
    func = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").upper()
    if not (np.isfinite(center) and np.isfinite(width)):
        return None
    if func == "SIGMOID":
        if width <= 0:
            return None
        out = arr - center  # (H, W)
        out *= -4.0 / width
        np.clip(out, -80.0, 80.0, out=out)
        np.exp(out, out=out)
        out += 1.0
        return np.divide(255.0, out, out=out)
    if func == "LINEAR_EXACT":
        if width <= 0:
            return None
        low, span = center - width / 2.0, width
    elif func == "LINEAR":
        if width < 1:
            return None
        low, span = (center - 0.5) - (width - 1.0) / 2.0, max(width - 1.0, 1e-9)
    else:
        return None
    out = arr - low  # (H, W): ((x - c) / w + 0.5) * 255 == (x - (c - w / 2)) * 255 / w
    out *= 255.0 / span
    return np.clip(out, 0.0, 255.0, out=out)


def _modality(arr: np.ndarray, ds: Any) -> np.ndarray:
    """Stored values -> modality values (H, W). A linear rescale is done here in float32 (pydicom's
    ``apply_modality_lut`` makes float64 copies: +300 MB on a large detector); LUT sequences go to pydicom."""
    if "ModalityLUTSequence" in ds or "VOILUTSequence" in ds:
        return np.asarray(apply_modality_lut(arr, ds))  # integer stays integer: a VOI LUT needs integer indices
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    if not (np.isfinite(slope) and np.isfinite(intercept)):
        raise ValueError("non-finite rescale")
    out = arr.astype(_work_dtype(arr), copy=True)  # (H, W)
    if slope != 1.0:
        out *= slope
    if intercept != 0.0:
        out += intercept
    return out


def _mono_to_uint8(arr: np.ndarray, ds: Any) -> np.ndarray:
    """Stored values (H, W) -> displayed uint8 (H, W): modality LUT, then VOI LUT or window, else min-max."""
    raw = arr
    try:
        arr = _modality(arr, ds)
    except Exception:  # noqa: BLE001 - a malformed rescale/LUT: show the stored values, min-max scaled
        log.info("DICOM modality LUT could not be applied; using stored values")
        return _to_uint8(raw)
    shown: np.ndarray | None = None
    try:
        if "VOILUTSequence" in ds:
            bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
            out = np.asarray(apply_voi_lut(arr, ds, index=0, prefer_lut=True), dtype=np.float32)
            top = float(2 ** min(max(bits, 1), 16) - 1)
            shown = out * (255.0 / top) if out.min() >= 0 and out.max() <= top else None
        else:
            shown = _window(arr if arr.dtype.kind == "f" else arr.astype(np.float32), ds)
    except Exception:  # noqa: BLE001 - a malformed VOI LUT or window: fall back to min-max
        log.info("DICOM VOI LUT/window could not be applied; using min-max scaling")
        shown = None
    step = max(1, int(np.sqrt(arr.size / 250_000)))  # uniformity is judged on a strided sample of ~250k pixels
    if shown is not None and float(shown[::step, ::step].std()) < 0.5 <= float(arr[::step, ::step].std()):
        # A window that paints the whole image one shade is a header error, not a picture: fall back to min-max.
        log.info("DICOM window leaves a uniform image; using min-max scaling")
        shown = None
    if shown is None:
        return _to_uint8(arr)
    np.nan_to_num(shown, copy=False, nan=0.0)
    np.rint(shown, out=shown)
    return shown.astype(np.uint8)


_DICOM_INCOMPLETE = (
    "This DICOM file is incomplete or damaged: its pixel data stops early or cannot be read (was the file cut short?)."
)


def _str_tag(ds: Any, keyword: str) -> str:
    """A header value as text; "" when absent, empty or unreadable."""
    try:
        return str(ds.get(keyword, "") or "")
    except Exception:  # noqa: BLE001 - a damaged optional tag is just unknown
        return ""


def _int_tag(ds: Any, keyword: str, default: int) -> int:
    """An integer header value; ``default`` when absent, empty or unreadable."""
    try:
        value = ds.get(keyword, None)
        return default if value is None or value == "" else int(value)
    except Exception:  # noqa: BLE001 - a damaged optional tag is just unknown
        return default


def _pixels_complete(data: bytes, ds: Any, ts: UID, rows: int, cols: int, frames: int) -> bool:
    """Whether the pixel data is all there: native data as long as its header needs, encapsulated (compressed) data
    closed by its end item (pydicom reads a fragment list cut short without a word)."""
    if ts.is_encapsulated:
        return data.rfind(_DICOM_SEQUENCE_END) > data.find(_DICOM_PIXEL_TAGS[0]) >= 0
    keyword = next(k for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData") if k in ds)
    bits = _int_tag(ds, "BitsAllocated", 0)
    samples = _int_tag(ds, "SamplesPerPixel", 1)
    if bits <= 0 or samples <= 0:
        return True  # the decoder judges a header this broken
    values = rows * cols * samples * frames
    needed = (values + 7) // 8 if bits == 1 else values * ((bits + 7) // 8)
    return len(ds[keyword].value or b"") >= needed


def _wraps(values: np.ndarray, low: int, high: int) -> bool:
    """Whether int64 ``values`` reach both ends of the range [low, high] (within 1/16 of it)."""
    margin = (high - low) // 16
    return int(values.min()) <= low + margin and int(values.max()) >= high - margin


def _bit_checks(arr: np.ndarray, ds: Any, raw: bool) -> tuple[np.ndarray, list[str]]:
    """Stored values (H, W) from the pixel cells, checking BitsStored, HighBit and PixelRepresentation against each
    other and against the values; returns (values, warning codes).

    ``raw``: ``arr`` holds whole cells (pydicom's ``correct_unused_bits=False``, native data): the stored bits are
    taken as PS3.5 8.1.1 lays them out, ending at HighBit (pydicom assumes HighBit = BitsStored - 1, which PS3.3
    C.7.6.3.1 requires, and masks the wrong bits otherwise), unless the values evidently sit in the low bits against
    HighBit. A HighBit other than BitsStored - 1, and bits set outside the stored ones (other than a sign extension),
    are reported as ``dicom_bits_inconsistent``. A sign that contradicts the values (they wrap round the end of the
    range as read, but not when read with the other sign: signed data under an unsigned header, or the reverse) is
    reported as ``dicom_sign_inconsistent``; the header is followed.
    """
    if arr.dtype.kind not in "iu":
        return arr, []
    allocated = arr.dtype.itemsize * 8
    stored = _int_tag(ds, "BitsStored", allocated)
    high = _int_tag(ds, "HighBit", stored - 1)
    signed = arr.dtype.kind == "i"
    if not 1 < stored <= allocated or not stored - 1 <= high < allocated:
        return arr, ([] if high == stored - 1 else ["dicom_bits_inconsistent"])
    codes: list[str] = [] if high == stored - 1 else ["dicom_bits_inconsistent"]
    if raw:
        top = high
        if high != stored - 1 and not signed:
            used = int(np.bitwise_or.reduce(arr, axis=None))  # every bit any value sets
            if used < (1 << stored) and used & ((1 << (high - stored + 1)) - 1):
                top = stored - 1  # the values sit in the low bits, whatever HighBit says
        values = np.left_shift(arr, allocated - 1 - top)  # (H, W) the stored bits moved to the top of the cell,
        np.right_shift(values, allocated - stored, out=values)  # then down: masked, or sign-extended if signed
        if "dicom_bits_inconsistent" not in codes and not np.array_equal(values, arr):
            codes.append("dicom_bits_inconsistent")  # bits set beyond the stored ones
        arr = values
    step = max(1, int(np.sqrt(arr.size / 250_000)))  # the sign is judged on a strided sample of ~250k pixels
    sample = arr[::step, ::step].astype(np.int64)  # (h, w)
    modulus, half = 1 << stored, 1 << (stored - 1)
    as_read = (-half, half - 1) if signed else (0, modulus - 1)
    inside = as_read[0] <= int(sample.min()) and int(sample.max()) <= as_read[1]
    if inside and _wraps(sample, *as_read):
        other = (sample % modulus) if signed else np.where(sample >= half, sample - modulus, sample)  # other sign
        if not _wraps(other, *((0, modulus - 1) if signed else (-half, half - 1))):
            codes.append("dicom_sign_inconsistent")
    return arr, codes


def _coded(value: str, allowed: frozenset[str]) -> str:
    """A DICOM coded value as shown: "unknown" when empty, the code when standard (``allowed``), else "other"."""
    code = value.strip().upper()
    if not code:
        return "unknown"
    return code if code in allowed else "other"


def _body_part(value: str) -> str:
    """BodyPartExamined as shown: a standard code; a non-standard value naming the chest becomes CHEST."""
    code = _coded(value, config.DICOM_BODY_PARTS)
    if code == "other" and any(part in value.upper() for part in config.CHEST_BODY_PARTS):
        return "CHEST"
    return code


def _dicom_jpeg_cut_short(ds: Any, frames: int, arr: np.ndarray) -> bool:
    """Whether the first frame of a JPEG-compressed DICOM, decoded by pydicom to ``arr`` (H, W[, 3]), stops early
    (filled grey by libjpeg; see _jpeg_cut_short). Pillow decodes the frame again only when its last block is flat
    mid-grey, as libjpeg's fill is."""
    h, w = arr.shape[:2]
    corner = arr[(h - 1) // 8 * 8 :, (w - 1) // 8 * 8 :]  # (b, b[, 3]) the last 8x8 block
    if arr.dtype != np.uint8 or int(corner.max()) - int(corner.min()) > 2 or abs(int(corner.flat[-1]) - 128) > 1:
        return False
    try:
        frame = next(generate_frames(ds.PixelData, number_of_frames=frames))
        im = Image.open(io.BytesIO(frame))
        im.load()
    except Exception:  # noqa: BLE001 - pydicom's own decoder read it; Pillow's view of it adds nothing
        return False
    return _jpeg_cut_short(frame, im, im.size, None)


def _load_dicom(data: bytes) -> tuple[np.ndarray, dict[str, Any]]:
    """Decode the first frame of a DICOM to uint8 grayscale; only non-identifying tags go into the info."""
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types for a damaged header
        raise ImageLoadError("Not a readable DICOM file (the header is damaged or incomplete).") from exc
    try:
        has_pixels = any(tag in ds for tag in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"))
    except Exception as exc:  # noqa: BLE001 - a dataset that cannot even be searched
        raise ImageLoadError("Not a readable DICOM file (the header is damaged or incomplete).") from exc
    ts = _transfer_syntax(ds)
    if ts and not (ts.is_valid and ts.is_transfer_syntax):
        raise ImageLoadError(
            f"This DICOM declares an unknown or damaged transfer syntax ({_safe_uid(ts)}); its pixels cannot be read."
        )
    if not has_pixels:
        if any(tag in data for tag in _DICOM_PIXEL_TAGS):  # there was pixel data, but it could not be read
            raise ImageLoadError(_DICOM_INCOMPLETE)
        raise ImageLoadError("This DICOM file has no pixel data (it holds no image, e.g. a report or a header only).")
    try:
        rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except Exception as exc:  # noqa: BLE001 - e.g. a non-numeric Rows value
        raise ImageLoadError("This DICOM's image size fields are damaged.") from exc
    _check_size(cols, rows)
    if not ts:
        raise ImageLoadError("This DICOM does not say how its pixels are encoded (no transfer syntax).")
    try:
        decoder = get_decoder(ts)
    except NotImplementedError as exc:  # a real transfer syntax that pydicom has no decoder class for
        raise ImageLoadError(f"This DICOM's pixel encoding ({ts.name}) is not supported.") from exc
    if not decoder.is_available:
        raise ImageLoadError(
            f"This DICOM is compressed as {ts.name} and no decoder for that is installed here; "
            "export it as PNG or uncompressed DICOM."
        )
    try:
        complete = _pixels_complete(data, ds, ts, rows, cols, frames)
    except Exception as exc:  # noqa: BLE001 - a pixel data element that cannot even be measured
        raise ImageLoadError(_DICOM_INCOMPLETE) from exc
    if not complete:
        raise ImageLoadError(_DICOM_INCOMPLETE)
    # Native grey cells are read whole, so that _bit_checks can take the stored bits where HighBit says they are.
    grey = _int_tag(ds, "SamplesPerPixel", 1) == 1 and _str_tag(ds, "PhotometricInterpretation").startswith("MONO")
    raw_cells = {"correct_unused_bits": False} if grey and not ts.is_encapsulated else {}
    try:
        # Only the first frame is decoded; as_rgb turns YBR colour into RGB (the header still says YBR).
        arr, meta = decoder.as_array(ds, index=0, as_rgb=True, **raw_cells)  # (H, W) or (H, W, 3)
        photometric = str(getattr(meta["photometric_interpretation"], "value", meta["photometric_interpretation"]))
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types for corrupt or inconsistent pixel data
        what = f"compressed ({ts.name}) " if ts.is_compressed else ""
        raise ImageLoadError(f"This DICOM's {what}pixel data is damaged or does not match its header.") from exc
    if ts in (JPEGBaseline8Bit, JPEGExtended12Bit) and _dicom_jpeg_cut_short(ds, frames, arr):
        raise ImageLoadError("This DICOM's compressed (JPEG) image is truncated: its image data stops early.")
    photometric = photometric.upper().strip()
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 2 and not (arr.ndim == 3 and arr.shape[-1] in (3, 4)):
        raise ImageLoadError(f"This DICOM's pixel data has an unexpected shape {arr.shape}.")
    if arr.shape[:2] != (rows, cols):
        raise ImageLoadError("This DICOM's pixel data does not match the image size in its header.")
    bit_codes: list[str] = []
    try:
        if arr.ndim == 2 and photometric == "PALETTE COLOR":
            arr = apply_color_lut(arr, ds)  # (H, W, 3)
        if arr.ndim == 3:  # colour (RGB after as_rgb; YBR only if the decoder left it): luma
            if photometric.startswith("YBR"):
                arr = convert_color_space(arr, photometric, "RGB")
            luma = arr[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)  # (H, W)
            rgb8 = arr[..., :3] if arr.dtype == np.uint8 else _to_uint8(arr[..., :3].astype(np.float32))
            colourfulness = _colourfulness(rgb8)  # a colour DICOM (test pattern, photo) is no radiograph
            # 8-bit colour is converted like PIL's RGB -> L (no stretching); wider colour is min-max scaled.
            pixels = np.rint(luma).clip(0, 255).astype(np.uint8) if arr.dtype == np.uint8 else _to_uint8(luma)
        else:
            arr, bit_codes = _bit_checks(arr, ds, raw=bool(raw_cells))
            pixels = _mono_to_uint8(arr, ds)
            colourfulness = 0.0
    except Exception as exc:  # noqa: BLE001 - a damaged palette or colour header
        raise ImageLoadError("This DICOM's colour information is damaged.") from exc
    if photometric == "MONOCHROME1":  # 0 = white: invert for display
        pixels = 255 - pixels

    notes = [*(["multi_frame"] if frames > 1 else []), *bit_codes]
    if _str_tag(ds, "BurnedInAnnotation").strip().upper() == "YES":
        notes.append("burned_in_annotation")
    # Only standard codes and numbers: a free-text tag can hold a name, an ID or markdown.
    info = {
        "format": "DICOM",
        "modality": _coded(_str_tag(ds, "Modality"), config.DICOM_MODALITIES),
        "view_position": _coded(_str_tag(ds, "ViewPosition"), config.DICOM_VIEW_POSITIONS),
        "body_part": _body_part(_str_tag(ds, "BodyPartExamined")),
        "photometric": _coded(photometric, config.DICOM_PHOTOMETRICS),
        "transfer_syntax": ts.name,
        "frames": frames,
        "original_size": (cols, rows),
        "bits_stored": _int_tag(ds, "BitsStored", 0),
        "_colourfulness": colourfulness,
        "_warnings": notes,
    }
    return np.ascontiguousarray(pixels), info


# ---------------------------------------------------------------------------------------------------- PIL formats


def _png_crc_error(data: bytes) -> str | None:
    """The name of the first PNG chunk whose CRC is wrong (Pillow does not check every chunk), else None."""
    pos = 8
    while pos + 12 <= len(data):
        length = struct.unpack(">I", data[pos : pos + 4])[0]
        end = pos + 8 + length
        if end + 4 > len(data):
            return None  # truncated: Pillow reports that with a better message
        kind = data[pos + 4 : pos + 8]
        if zlib.crc32(data[pos + 4 : end]) != struct.unpack(">I", data[end : end + 4])[0]:
            return kind.decode("latin-1")
        if kind == b"IEND":
            return None
        pos = end + 4
    return None


def _colourfulness(rgb: np.ndarray) -> float:
    """Mean |R-G| + |G-B| of uint8 (H, W, 3), on a strided sample of at most _COLOUR_SAMPLE_PIXELS pixels."""
    h, w = rgb.shape[:2]
    step = max(1, int(np.ceil(np.sqrt(h * w / _COLOUR_SAMPLE_PIXELS))))
    sample = rgb[::step, ::step].astype(np.int16)  # (h/step, w/step, 3)
    return float(np.mean(np.abs(sample[..., 0] - sample[..., 1])) + np.mean(np.abs(sample[..., 1] - sample[..., 2])))


def jpeg_reduction(width: int, height: int, max_side: int | None, min_side: int | None) -> int:
    """The JPEG DCT-domain reduction (1, 2, 4 or 8) for an image of (width, height) stored pixels.

    The largest k whose reduced image keeps each side >= ``min_side`` and the long side >= ``max_side`` (the
    caller's needs); 1 (full decode) when neither is given.
    """
    if max_side is None and min_side is None:
        return 1
    for k in (8, 4, 2):
        w, h = width // k, height // k  # Pillow's draft gives at least (W // k, H // k)
        if (min_side is None or min(w, h) >= min_side) and (max_side is None or max(w, h) >= max_side):
            return k
    return 1


def _jpeg_end_of_image(data: bytes) -> tuple[int | None, bool]:
    """Walk a JPEG's markers: (offset of the end marker FFD9 after the first image's last scan, or of the fill bytes
    before it; whether its scans code every coefficient of every component to the last bit).

    The offset is None when the markers do not parse (then the decoder has already judged the file). A JPEG cut
    between two scans of a progressive file, with an end marker after the cut, has every scan complete but misses the
    later ones: libjpeg shows it blurred without a word; the second value tells.
    """
    pos, n = 2, len(data)  # after the start marker FFD8
    components: list[int] = []
    final: set[tuple[int, int]] = set()  # (component id, coefficient index) coded to its last bit
    while pos + 2 <= n:
        if data[pos] != 0xFF:
            return None, False
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker == 0xD9:
            return pos, not components or len(final) == 64 * len(components)
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # markers without a length
            pos += 2
            continue
        if pos + 4 > n:
            return None, False
        end = pos + 2 + struct.unpack(">H", data[pos + 2 : pos + 4])[0]
        segment = data[pos + 4 : end]
        if marker in (0xC0, 0xC1, 0xC2, 0xC9, 0xCA) and segment[5:6]:  # start of a (non-hierarchical) DCT frame
            components = list(segment[6 : 6 + 3 * segment[5] : 3])  # the component ids
        if marker == 0xDA:  # start of scan: its entropy-coded data runs up to the next real marker
            count = segment[0] if segment else 0
            ids, tail = segment[1 : 1 + 2 * count : 2], segment[1 + 2 * count : 4 + 2 * count]
            if len(tail) == 3 and tail[2] & 0x0F == 0:  # Ss, Se, Ah/Al: coefficients Ss..Se, down to bit Al = 0
                final.update((c, k) for c in ids if c in components for k in range(tail[0], min(tail[1], 63) + 1))
            found = _JPEG_MARKER.search(data, end)
            if found is None:
                return None, False
            end = found.start()
            if data[end + 1] == 0xD9:  # the end marker: before any fill bytes (a cut can leave half a stuffed FF00)
                while data[end - 1] == 0xFF:
                    end -= 1
                return end, not components or len(final) == 64 * len(components)
        pos = end
    return None, False


def _jpeg_cut_short(
    data: bytes, im: Image.Image, stored_size: tuple[int, int], draft: tuple[str, tuple[int, int]] | None
) -> bool:
    """True when the JPEG ``im`` (loaded, before EXIF rotation) ran out of scan data before its last pixel.

    A JPEG cut short with an end marker after the cut decodes "fine": libjpeg gives every block after the one where
    the data ran out all-zero coefficients, flat grey 128 (or, cut between two scans of a progressive file, leaves it
    blurred), and only warns, which Pillow does not pass on. A scan that ran out reads bytes put just before its end
    marker as more image data, where a complete scan skips them: decode once more with :data:`_JPEG_PROBE` inserted
    there and compare (before that, scans that leave coefficients uncoded mean a cut between scans, see
    :func:`_jpeg_end_of_image`). For a sequential JPEG all this runs only when the last 8x8 block is flat grey 128
    (none of the 24 full-size sample films; a cut inside the last one or two blocks can slip through); a progressive
    JPEG is always checked, at full scale (what it misses is detail, which a scaled decode may not use). ``draft``:
    the (mode, size) ``im`` was drafted with.
    """
    progressive = bool(im.info.get("progressive") or im.info.get("progression"))
    if not progressive:
        w, h = im.size
        block = max(1, round(8 * w / stored_size[0]))  # an 8x8 block at the decoded scale
        x0, y0 = (w - 1) // block * block, (h - 1) // block * block  # the last block, clipped by the image edge
        corner = np.asarray(im.crop((x0, y0, w, h)).convert("L"))  # (b, b): luma, flat in a grey fill (chroma
        if int(corner.max()) - int(corner.min()) > 2:  # upsampling may blend in the block row above: +-1 after RGB)
            return False
        if im.mode in ("L", "RGB") and abs(int(corner[-1, -1]) - 128) > 1:  # libjpeg fills with all-zero blocks:
            return False  # mid-grey 128 (a real border is black or white, a picture not flat to the pixel)
    end, all_coded = _jpeg_end_of_image(data)
    if end is None:
        return False
    if not all_coded:
        return True
    if progressive:
        draft = None
        if im.size != stored_size:
            im = Image.open(io.BytesIO(data))
            im.load()
    try:
        probe = Image.open(io.BytesIO(data[:end] + _JPEG_PROBE + data[end:]))
        if draft is not None:
            probe.draft(*draft)
        probe.load()
    except Exception:  # noqa: BLE001 - the decoder read the inserted bytes as image data and choked on them
        return True
    return probe.size != im.size or probe.tobytes() != im.tobytes()


def _load_pil(
    data: bytes, max_side: int | None = None, min_side: int | None = None
) -> tuple[np.ndarray, dict[str, Any], float]:
    """Decode a PIL-readable raster to uint8 grayscale, returning (pixels, info, colourfulness).

    A JPEG is decoded at the :func:`jpeg_reduction` scale (libjpeg's scaled inverse DCT: about 4x cheaper per halving).
    """
    try:
        im = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageLoadError("The image declares an absurd size (a decompression bomb?).") from exc
    except UnidentifiedImageError as exc:
        raise ImageLoadError("Not an image: the file is not PNG, JPEG, BMP, TIFF or DICOM.") from exc
    except Exception as exc:  # noqa: BLE001 - PIL raises SyntaxError, OSError, ValueError... for bad headers
        raise ImageLoadError(f"The image header is damaged ({type(exc).__name__}).") from exc
    fmt = (im.format or "").upper()
    try:
        frames = int(getattr(im, "n_frames", 1)) if fmt in _ANIMATABLE else 1
    except Exception as exc:  # noqa: BLE001 - counting frames reads the whole file; it may be damaged
        raise ImageLoadError(f"The {fmt} file is damaged and cannot be decoded.") from exc
    if frames > 1:
        raise ImageLoadError("Animated images are not supported; upload a single radiograph.")
    if fmt not in _PIL_FORMATS:
        raise ImageLoadError(f"{fmt or 'This'} images are not supported; use PNG, JPEG, BMP, TIFF or DICOM.")
    if fmt == "PNG" and (chunk := _png_crc_error(data)) is not None:
        raise ImageLoadError(f"The PNG file is damaged (checksum error in its {chunk!r} chunk).")
    _check_size(*im.size)
    mode = im.mode
    stored_size = im.size
    reduction = jpeg_reduction(*im.size, max_side, min_side) if fmt in ("JPEG", "MPO") else 1
    draft = None
    if reduction > 1:
        draft = (im.mode, (im.size[0] // reduction, im.size[1] // reduction))  # same mode: colour stays visible
        im.draft(*draft)
    try:
        im.load()
        decoded_size = im.size
        if fmt in ("JPEG", "MPO") and _jpeg_cut_short(data, im, stored_size, draft):
            raise ImageLoadError("The JPEG file is truncated: its image data stops early (incomplete download?).")
        im = ImageOps.exif_transpose(im)
    except ImageLoadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageLoadError("The image declares an absurd size (a decompression bomb?).") from exc
    except OSError as exc:
        msg = str(exc).lower()
        if "truncat" in msg or "premature" in msg or "end of file" in msg or "not enough" in msg:
            raise ImageLoadError(
                f"The {fmt} file is truncated: its image data stops early (incomplete download?)."
            ) from exc
        raise ImageLoadError(f"The {fmt} file is damaged and cannot be decoded.") from exc
    except Exception as exc:  # noqa: BLE001 - e.g. SyntaxError for a broken PNG chunk, ValueError for bad EXIF
        raise ImageLoadError(f"The {fmt} file is damaged and cannot be decoded.") from exc
    # original_size as stored (before EXIF rotation), whatever scale was decoded
    info: dict[str, Any] = {"format": "JPEG" if fmt == "MPO" else fmt, "mode": mode, "original_size": stored_size}
    # the file's image as displayed: the stored size, turned like EXIF turned the decoded image
    info["_displayed_size"] = stored_size[::-1] if im.size != decoded_size else stored_size
    colourfulness = 0.0
    try:
        if im.mode.startswith("I") or im.mode == "F":  # 16/32-bit integer or float gray: min-max to 8 bits
            pixels = _to_uint8(np.asarray(im))
        elif im.mode == "L":
            pixels = np.asarray(im, dtype=np.uint8)
        elif im.mode == "1":
            pixels = np.asarray(im.convert("L"), dtype=np.uint8)
        else:
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                im = Image.alpha_composite(Image.new("RGBA", im.size, (0, 0, 0, 255)), im.convert("RGBA"))
            im = im.convert("RGB")
            colourfulness = _colourfulness(np.asarray(im))  # (H, W, 3) uint8
            pixels = np.asarray(im.convert("L"), dtype=np.uint8)
    except Exception as exc:  # noqa: BLE001 - an exotic pixel mode (e.g. LAB TIFF) that PIL cannot convert
        raise ImageLoadError(f"The {fmt} file uses a pixel format ({mode}) that cannot be converted to gray.") from exc
    if pixels.ndim != 2:
        raise ImageLoadError(f"The {fmt} file uses a pixel format ({mode}) that cannot be converted to gray.")
    return np.ascontiguousarray(pixels), info, colourfulness


def _kind(mode: int) -> str:
    """What a file that is not a regular file is, in words (from its st_mode)."""
    for test, words in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe (FIFO)"),
                        (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                        (stat.S_ISSOCK, "a socket")):  # fmt: skip
        if test(mode):
            return words
    return "not a regular file"


def not_regular(mode: int) -> str | None:
    """None for a regular file; else why it is not read, in words ('a named pipe (FIFO)', 'a character device', ...).

    Devices, FIFOs and sockets report a size of 0 and never end (/dev/zero) or block a reader forever (a FIFO with
    no writer): only regular files are ever opened for reading."""
    return None if stat.S_ISREG(mode) else _kind(mode)


def _read_source(source: str | os.PathLike[str] | bytes | bytearray | memoryview, name: str) -> tuple[bytes, str]:
    """The file's bytes and name; refuses missing, unreadable, non-regular and oversized files before reading them.

    The path is opened without blocking (a FIFO swapped in after the check cannot hang the reader), checked again on
    the open descriptor, and read up to one byte past the size limit: a size that lies cannot make the read unbounded.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source), name
    path = Path(source)
    name = name or path.name
    try:
        what = not_regular(os.stat(path).st_mode)
        if what == "a folder":
            raise ImageLoadError("This is a folder, not an image file.")
        if what is not None:
            raise ImageLoadError(f"Not an image file: this is {what}; only regular files are read.")
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            what = not_regular(st.st_mode)
            if what is not None:  # replaced between the two looks
                raise ImageLoadError(f"Not an image file: this is {what}; only regular files are read.")
            if st.st_size > config.MAX_FILE_BYTES:
                raise ImageLoadError(f"The file is too large ({st.st_size / 2**20:.0f} MB).")
            return f.read(config.MAX_FILE_BYTES + 1), name  # a larger file is refused by the caller
    except IsADirectoryError as exc:
        raise ImageLoadError("This is a folder, not an image file.") from exc
    except FileNotFoundError as exc:
        raise ImageLoadError("File not found.") from exc
    except PermissionError as exc:
        raise ImageLoadError("The file cannot be read (permission denied).") from exc
    except OSError as exc:
        raise ImageLoadError(f"The file cannot be read ({exc.strerror or type(exc).__name__}).") from exc


def shrink_to_side(pixels: np.ndarray, max_side: int) -> np.ndarray:
    """Resize uint8 (H, W) or (H, W, 3) so that its long side is at most ``max_side`` (aspect kept); smaller ones
    unchanged.

    Area filtering from a factor of 2 on; below it bilinear, whose 2x2 support already covers every source pixel and
    which costs a tenth of OpenCV's general (non-integer) area filter (1 vs 12 ms for 1500x1200 -> 1200x960).
    """
    h, w = pixels.shape[:2]
    if max(h, w) <= max_side:
        return pixels
    f = max_side / max(h, w)
    size = (max(1, round(w * f)), max(1, round(h * f)))  # (width, height)
    interp = cv2.INTER_AREA if f <= 0.5 else cv2.INTER_LINEAR
    return np.ascontiguousarray(cv2.resize(pixels, size, interpolation=interp))  # (h', w')


def load_image(
    source: str | os.PathLike[str] | bytes,
    name: str = "",
    *,
    max_side: int | None = None,
    min_side: int | None = None,
) -> LoadedImage:
    """Load a radiograph from a path or raw bytes.

    Returns a :class:`LoadedImage` whose ``pixels`` are uint8 (H, W). Raises :class:`ImageLoadError` for anything
    unreadable (not an image, truncated, damaged, absurd size, DICOM without pixels, missing codec, ...).
    ``name`` (a file name) only helps recognise DICOM files without the 'DICM' preamble.

    Say what you need and nothing larger is decoded or kept (``original_size`` still tells the file's size):

    - ``min_side``: each side must keep at least this many pixels (the CLI: ``DECODE_MIN_FACTOR`` x the model
      input, so the area resize to the input stays nearly exact). A JPEG is decoded in the DCT domain at 1/2, 1/4
      or 1/8 scale when that leaves both sides >= ``min_side``; other formats are decoded in full; no resize.
    - ``max_side``: the long side is area-resized to at most this (the app: its display size). A JPEG is decoded
      at the coarsest DCT scale whose long side is still >= ``max_side`` (and each side >= ``min_side``).
    """
    for value, what in ((max_side, "max_side"), (min_side, "min_side")):
        if value is not None and (not isinstance(value, (int, np.integer)) or value < 1):
            raise ValueError(f"{what} must be a positive integer or None")
    data, name = _read_source(source, name)
    if not data:
        raise ImageLoadError("The file is empty.")
    if len(data) > config.MAX_FILE_BYTES:
        raise ImageLoadError(f"The file is too large ({len(data) / 2**20:.0f} MB).")
    try:
        if _is_dicom(data, name):
            pixels, info = _load_dicom(data)
            colourfulness = float(info.pop("_colourfulness", 0.0))
            notes = tuple(info.pop("_warnings", ()))
            full_size = (pixels.shape[1], pixels.shape[0])
        else:
            if data[:4] == b"%PDF":
                raise ImageLoadError("Not an image: this is a PDF document.")
            if data[:2] == b"PK":
                raise ImageLoadError("Not an image: this is a ZIP archive (or an Office document).")
            pixels, info, colourfulness = _load_pil(data, max_side, min_side)
            notes = ()
            full_size = tuple(info.pop("_displayed_size", pixels.shape[::-1]))
        if max_side is not None:
            pixels = shrink_to_side(pixels, int(max_side))  # (h', w') uint8, long side <= max_side
    except ImageLoadError:
        raise
    except MemoryError as exc:
        raise ImageLoadError("The image is too large to decode in the memory available.") from exc
    except Exception as exc:  # noqa: BLE001 - last line of defence: a decoder bug must not become a traceback
        log.warning("unexpected %s while decoding an image", type(exc).__name__)  # no message: it may quote the file
        raise ImageLoadError("The file could not be decoded (damaged, or an unusual variant of its format).") from exc
    _check_size(*full_size)
    return LoadedImage(pixels=pixels, info=info, colourfulness=colourfulness, full_size=full_size, warnings=notes)


S = TypeVar("S")


def load_many(
    sources: Iterable[S],
    *,
    max_side: int | None = None,
    min_side: int | None = None,
    workers: int | None = None,
    prefetch: int | None = None,
) -> Iterator[tuple[S, LoadedImage | ImageLoadError]]:
    """Load many files in a thread pool; yields (source, LoadedImage or ImageLoadError) in the input order.

    The JPEG/PNG/DICOM decoders release the GIL, so threads decode in parallel, also while the caller runs the model
    on the previous batch. At most ``prefetch`` images (default 2 x ``workers``; the CLI passes its batch size, so
    the next batch decodes while the model works) are decoded ahead of the consumer: memory stays bounded on a
    folder of thousands. ``workers``: default min(``config.DECODE_WORKERS``, CPU count); 1 decodes in the calling
    thread. ``max_side``/``min_side`` as in :func:`load_image`. Unreadable files are yielded as their
    ImageLoadError, never raised.
    """
    n = workers if workers is not None else min(config.DECODE_WORKERS, os.cpu_count() or 1)
    if n < 1:
        raise ValueError("workers must be >= 1")
    ahead = prefetch if prefetch is not None else 2 * n
    if ahead < 1:
        raise ValueError("prefetch must be >= 1")

    def one(source: S) -> LoadedImage | ImageLoadError:
        try:
            return load_image(source, max_side=max_side, min_side=min_side)  # type: ignore[arg-type]
        except ImageLoadError as exc:
            return exc

    if n == 1:
        for source in sources:
            yield source, one(source)
        return
    pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="pneumo-decode")
    try:
        pending: deque = deque()  # (source, Future) in input order
        for source in sources:
            pending.append((source, pool.submit(one, source)))
            if len(pending) >= ahead:
                done, fut = pending.popleft()
                yield done, fut.result()
        while pending:
            done, fut = pending.popleft()
            yield done, fut.result()
    finally:  # also when the consumer stops early: queued files are not decoded
        pool.shutdown(wait=True, cancel_futures=True)
