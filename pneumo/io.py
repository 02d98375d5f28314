"""Read a radiograph from a path or bytes into one 8-bit grayscale array.

One entry point, :func:`load_image`, serves the CLI, the app and training. It accepts PNG, JPEG, BMP, TIFF and DICOM;
8/16-bit grayscale, RGB, RGBA, palette and CMYK; it applies EXIF orientation and, for DICOM, the modality and VOI LUTs
and MONOCHROME1 inversion. Anything it cannot read raises :class:`ImageLoadError` with a message a person understands.
Nothing is written to disk and nothing about the pixels or patient is logged.
"""

from __future__ import annotations

import io
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from pneumo import config

log = logging.getLogger(__name__)

# PIL must never fill a truncated file with grey: a truncated upload is an error, not a half image.
ImageFile.LOAD_TRUNCATED_IMAGES = False
# PIL's own bomb guard raises at 2x this; we check the declared size ourselves first (see _check_size).
Image.MAX_IMAGE_PIXELS = config.MAX_IMAGE_PIXELS

_PIL_FORMATS = {"PNG", "JPEG", "MPO", "BMP", "TIFF"}


class ImageLoadError(ValueError):
    """Raised for any input that cannot be turned into a radiograph; ``str(err)`` is meant for people."""


@dataclass(frozen=True)
class LoadedImage:
    """A decoded radiograph.

    pixels: uint8 (H, W) grayscale, 0 = black, as displayed (EXIF rotation and MONOCHROME1 already undone).
    info: non-identifying facts for display: format, original size/mode, DICOM modality and view position.
    colourfulness: mean |R-G| + |G-B| of the source before conversion to gray (0 for grayscale sources).
    """

    pixels: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)
    colourfulness: float = 0.0

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        h, w = self.pixels.shape
        return w, h


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    """Min-max scale any numeric (H, W) array to uint8; a constant image becomes all zeros."""
    arr = np.asarray(arr, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        arr = np.nan_to_num(arr, nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = float(arr.min()), float(arr.max())
    if hi - lo < 1e-12:
        return np.zeros(arr.shape, dtype=np.uint8)
    return np.round((arr - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def _check_size(width: int, height: int) -> None:
    """Refuse absurd sizes before any pixel is decoded."""
    if width <= 0 or height <= 0:
        raise ImageLoadError("The image has no pixels.")
    if width * height > config.MAX_IMAGE_PIXELS:
        raise ImageLoadError(
            f"The image is too large ({width}x{height} pixels); the limit is "
            f"{config.MAX_IMAGE_PIXELS // 1_000_000} megapixels."
        )
    if min(width, height) < config.MIN_IMAGE_SIDE:
        raise ImageLoadError(
            f"The image is too small ({width}x{height} pixels); at least "
            f"{config.MIN_IMAGE_SIDE} pixels per side are needed."
        )
    if max(width, height) / min(width, height) > config.MAX_ASPECT_RATIO:
        raise ImageLoadError(
            f"The image is a {width}x{height} strip, not a radiograph (aspect ratio over {config.MAX_ASPECT_RATIO:g})."
        )


def _is_dicom(data: bytes, name: str) -> bool:
    return data[128:132] == b"DICM" or name.lower().endswith((".dcm", ".dicom"))


def _load_dicom(data: bytes) -> tuple[np.ndarray, dict[str, Any]]:
    """Decode the first frame of a DICOM to uint8 grayscale; only non-identifying tags go into the info."""
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
    except (InvalidDicomError, EOFError, OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ImageLoadError("Not a readable DICOM file (the header is damaged or incomplete).") from exc
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise ImageLoadError("This DICOM file has no pixel data (it holds no image).")
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    _check_size(cols, rows)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if rows * cols * max(frames, 1) > 4 * config.MAX_IMAGE_PIXELS:
        raise ImageLoadError(f"This DICOM holds too many pixels ({frames} frames of {cols}x{rows}).")
    try:
        tsyntax = str(ds.file_meta.TransferSyntaxUID) if "TransferSyntaxUID" in getattr(ds, "file_meta", {}) else ""
    except Exception:  # noqa: BLE001 - a damaged meta header is reported below like any decode failure
        tsyntax = ""
    try:
        arr = ds.pixel_array if frames <= 1 else ds.pixel_array[0]
    except NotImplementedError as exc:
        raise ImageLoadError(
            f"This DICOM is compressed with a codec that is not installed (transfer syntax {tsyntax or 'unknown'})."
        ) from exc
    except RuntimeError as exc:
        raise ImageLoadError(
            f"This DICOM's pixel data cannot be decoded (transfer syntax {tsyntax or 'unknown'}): {exc}"
        ) from exc
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types for corrupt data
        raise ImageLoadError("This DICOM's pixel data is damaged or does not match its header.") from exc
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if arr.ndim == 3 and frames > 1 and photometric.startswith("MONO"):
        arr = arr[0]
    if arr.ndim == 3:  # colour DICOM (RGB / YBR): convert to gray
        if photometric.startswith("YBR"):
            from pydicom.pixels import convert_color_space

            arr = convert_color_space(arr, photometric, "RGB")
        arr = arr[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    else:
        try:
            arr = apply_modality_lut(arr, ds)
            arr = apply_voi_lut(arr, ds, index=0)
        except Exception:  # noqa: BLE001 - a malformed LUT: fall back to the raw values, min-max scaled
            log.warning("DICOM LUT could not be applied; using raw pixel values")
    pixels = _to_uint8(arr)
    if photometric == "MONOCHROME1":
        pixels = 255 - pixels
    info = {
        "format": "DICOM",
        "modality": str(ds.get("Modality", "") or "").upper() or "unknown",
        "view_position": str(ds.get("ViewPosition", "") or "") or "unknown",
        "body_part": str(ds.get("BodyPartExamined", "") or "") or "unknown",
        "photometric": photometric,
        "frames": frames,
        "original_size": (cols, rows),
        "bits_stored": int(ds.get("BitsStored", 0) or 0),
    }
    return pixels, info


def _load_pil(data: bytes) -> tuple[np.ndarray, dict[str, Any], float]:
    """Decode a PIL-readable raster to uint8 grayscale, returning (pixels, info, colourfulness)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            im = Image.open(io.BytesIO(data))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageLoadError("The image declares an absurd size (a decompression bomb?).") from exc
        except UnidentifiedImageError as exc:
            raise ImageLoadError("Not an image: the file is not PNG, JPEG, BMP, TIFF or DICOM.") from exc
        except Exception as exc:  # noqa: BLE001 - PIL raises SyntaxError, OSError, ValueError... for bad headers
            raise ImageLoadError(f"The image header is damaged ({type(exc).__name__}).") from exc
        fmt = (im.format or "").upper()
        if fmt not in _PIL_FORMATS:
            raise ImageLoadError(f"{fmt or 'This'} images are not supported; use PNG, JPEG, BMP, TIFF or DICOM.")
        if getattr(im, "n_frames", 1) > 1 and fmt != "TIFF" and fmt != "MPO":
            raise ImageLoadError("Animated images are not supported; upload a single radiograph.")
        _check_size(*im.size)
        mode = im.mode
        try:
            im.load()
            im = ImageOps.exif_transpose(im)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageLoadError("The image declares an absurd size (a decompression bomb?).") from exc
        except OSError as exc:
            msg = str(exc).lower()
            if "truncat" in msg or "premature" in msg or "end of file" in msg:
                raise ImageLoadError(f"The {fmt} file is truncated (incomplete download?).") from exc
            raise ImageLoadError(f"The {fmt} file is damaged and cannot be decoded.") from exc
        except Exception as exc:  # noqa: BLE001 - e.g. SyntaxError for a broken PNG chunk, ValueError for bad EXIF
            raise ImageLoadError(f"The {fmt} file is damaged and cannot be decoded.") from exc
    info: dict[str, Any] = {"format": "JPEG" if fmt == "MPO" else fmt, "mode": mode, "original_size": im.size}
    colourfulness = 0.0
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        pixels = _to_uint8(np.asarray(im))
    elif im.mode == "L":
        pixels = np.asarray(im, dtype=np.uint8)
    elif im.mode == "1":
        pixels = np.asarray(im.convert("L"), dtype=np.uint8)
    else:
        if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
            im = im.convert("RGBA")
            black = Image.new("RGBA", im.size, (0, 0, 0, 255))
            im = Image.alpha_composite(black, im)
        rgb = np.asarray(im.convert("RGB"), dtype=np.int16)  # (H, W, 3)
        colourfulness = float(np.mean(np.abs(rgb[..., 0] - rgb[..., 1])) + np.mean(np.abs(rgb[..., 1] - rgb[..., 2])))
        pixels = np.asarray(im.convert("RGB").convert("L"), dtype=np.uint8)
    return np.ascontiguousarray(pixels), info, colourfulness


def load_image(source: str | os.PathLike[str] | bytes, name: str = "") -> LoadedImage:
    """Load a radiograph from a path or raw bytes.

    Returns a :class:`LoadedImage` whose ``pixels`` are uint8 (H, W). Raises :class:`ImageLoadError` for anything
    unreadable (not an image, truncated, damaged, absurd size, DICOM without pixels, missing codec, ...).
    ``name`` (a file name) only helps recognise DICOM files without the 'DICM' preamble.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    else:
        path = Path(source)
        name = name or path.name
        try:
            size = path.stat().st_size
            if size > config.MAX_FILE_BYTES:
                raise ImageLoadError(f"The file is too large ({size / 2**20:.0f} MB).")
            data = path.read_bytes()
        except IsADirectoryError as exc:
            raise ImageLoadError("This is a folder, not an image file.") from exc
        except FileNotFoundError as exc:
            raise ImageLoadError("File not found.") from exc
        except PermissionError as exc:
            raise ImageLoadError("The file cannot be read (permission denied).") from exc
        except OSError as exc:
            raise ImageLoadError(f"The file cannot be read ({exc.strerror or type(exc).__name__}).") from exc
    if not data:
        raise ImageLoadError("The file is empty.")
    if len(data) > config.MAX_FILE_BYTES:
        raise ImageLoadError(f"The file is too large ({len(data) / 2**20:.0f} MB).")
    if _is_dicom(data, name):
        pixels, info = _load_dicom(data)
        colourfulness = 0.0
    else:
        if data[:4] == b"%PDF":
            raise ImageLoadError("Not an image: this is a PDF document.")
        if data[:2] == b"PK":
            raise ImageLoadError("Not an image: this is a ZIP archive (or an Office document).")
        pixels, info, colourfulness = _load_pil(data)
    h, w = pixels.shape
    _check_size(w, h)
    return LoadedImage(pixels=pixels, info=info, colourfulness=colourfulness)


def plausibility_warnings(img: LoadedImage) -> list[str]:
    """Reasons why an image may not be a chest radiograph; empty when it looks plausible.

    These are heuristics that guard against obvious misuse (a colour photo, a CT slice, a thumbnail), not a
    validated out-of-distribution detector.
    """
    out: list[str] = []
    modality = img.info.get("modality")
    if modality and modality != "unknown" and modality not in config.XRAY_MODALITIES:
        out.append(f"The DICOM modality is {modality}, not a projection radiograph (CR/DX).")
    if img.colourfulness > config.MAX_COLOURFULNESS:
        out.append("The image is in colour; chest radiographs are grayscale. It looks like a photograph.")
    w, h = img.size
    lo, hi = config.PLAUSIBLE_ASPECT
    if not lo <= w / h <= hi:
        out.append(f"The image's shape ({w}x{h}) is unusual for a chest radiograph.")
    if min(w, h) < config.PLAUSIBLE_MIN_SIDE:
        out.append(f"The image is small ({w}x{h}); results on thumbnails are unreliable.")
    if float(img.pixels.std()) < 8.0:
        out.append("The image is nearly uniform; there is little to analyse.")
    return out
