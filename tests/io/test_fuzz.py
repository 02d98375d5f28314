"""Property-based fuzzing of the loader: any bytes in, a LoadedImage or an ImageLoadError out, in bounded memory.

Inputs are arbitrary bytes, mutated real files (bit flips, truncations, splices of one format's header onto another's
body, inserted junk, overwritten size fields) and files with crafted headers (any PNG IHDR, any DICOM Rows/Columns/
bits/frames). Runs are derandomized with a fixed number of examples, so CI sees the same inputs every time.
"""

from __future__ import annotations

import io
import logging
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from pneumo import config
from pneumo.io.decode import ImageLoadError, LoadedImage, load_image
from tests.corpus import base_picture, dicom_bytes, png_with_header

MAX_EXTRA_MB = 300  # peak resident memory above the level before the call, per file
CLEAR_REFS = Path("/proc/self/clear_refs")
FUZZ = settings(
    max_examples=150,
    derandomize=True,
    database=None,
    deadline=None,  # no timing: speed belongs in the benchmarks (pneumo.bench); memory is asserted per call below
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _seeds() -> list[tuple[str, bytes]]:
    """Small valid files of every format (64x56, so that decoding a mutant is quick)."""
    g = np.asarray(Image.fromarray(base_picture()).resize((64, 56), Image.Resampling.BOX))  # (56, 64) uint8
    im = Image.fromarray(g)
    out = []
    for name, fmt, src, kw in (
        ("a.png", "PNG", im, {}),
        ("a16.png", "PNG", Image.fromarray(g.astype(np.uint16) * 16), {}),
        ("rgba.png", "PNG", im.convert("RGBA"), {}),
        ("a.jpg", "JPEG", im, {"quality": 90}),
        ("p.jpg", "JPEG", im.convert("RGB"), {"quality": 90, "progressive": True}),
        ("a.tif", "TIFF", im, {"compression": "tiff_lzw"}),
        ("a.bmp", "BMP", im, {}),
        ("a.gif", "GIF", im, {}),
    ):
        buf = io.BytesIO()
        src.save(buf, format=fmt, **kw)
        out.append((name, buf.getvalue()))
    out.append(("a.dcm", dicom_bytes(g.astype(np.uint16) * 16, "MONOCHROME2", 12, WindowCenter=1000, WindowWidth=2000)))
    out.append(("m1.dcm", dicom_bytes(np.stack([g, g]), "MONOCHROME1")))
    out.append(("bare.dcm", dicom_bytes(g, preamble=False)))
    return out


SEEDS = _seeds()


class _Unexpected(logging.Handler):
    """Counts the loader's last-line-of-defence warnings: each is a decoder failure the loader did not foresee."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "unexpected" in record.getMessage():
            self.count += 1


def _rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _can_reset_peak() -> bool:
    try:
        CLEAR_REFS.write_text("5")  # resets VmHWM (peak RSS) to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


CAN_MEASURE = sys.platform.startswith("linux") and _can_reset_peak()


def check(data: bytes, name: str = "") -> None:
    """The loader's contract on one input."""
    watch = _Unexpected()
    logging.getLogger("pneumo.io").addHandler(watch)
    if CAN_MEASURE:
        CLEAR_REFS.write_text("5")
        before = _rss_kb("VmRSS")
    try:
        img = load_image(data, name=name)
    except ImageLoadError as exc:
        assert str(exc) and "\n" not in str(exc)
    else:
        assert isinstance(img, LoadedImage)
        assert img.pixels.dtype == np.uint8 and img.pixels.ndim == 2
        w, h = img.size
        assert min(w, h) >= config.MIN_IMAGE_SIDE and w * h <= config.MAX_IMAGE_PIXELS
    finally:
        logging.getLogger("pneumo.io").removeHandler(watch)
    if CAN_MEASURE:
        extra_mb = (_rss_kb("VmHWM") - before) / 1024
        assert extra_mb < MAX_EXTRA_MB, f"peak memory +{extra_mb:.0f} MB"
    assert watch.count == 0, "a decoder failure reached the loader's catch-all (handle it explicitly)"


def test_seeds_are_valid_images():
    """The mutations start from files the loader reads (all but the GIF format, which it refuses by design)."""
    for name, data in SEEDS:
        if name.endswith(".gif"):
            with pytest.raises(ImageLoadError, match="GIF"):
                load_image(data, name=name)
        else:
            assert load_image(data, name=name).size == (64, 56), name


@FUZZ
@given(data=st.binary(max_size=4096), name=st.sampled_from(["", "upload.png", "upload.dcm"]))
def test_arbitrary_bytes(data, name):
    check(data, name)


@st.composite
def mutants(draw) -> tuple[bytes, str]:
    """A seed file damaged in one of several ways."""
    name, seed = draw(st.sampled_from(SEEDS))
    data = bytearray(seed)
    op = draw(st.sampled_from(["flip", "truncate", "splice", "insert", "int"]))
    if op == "flip":
        head = draw(st.booleans())  # half the flips land in the first 300 bytes, where the headers are
        span = min(len(data), 300) if head else len(data)
        for pos, mask in draw(
            st.lists(st.tuples(st.integers(0, span - 1), st.integers(1, 255)), min_size=1, max_size=8)
        ):
            data[pos] ^= mask
    elif op == "truncate":
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif op == "splice":  # one file's beginning, another's end
        _, other = draw(st.sampled_from(SEEDS))
        data = data[: draw(st.integers(0, len(data)))] + other[draw(st.integers(0, len(other))) :]
    elif op == "insert":
        pos = draw(st.integers(0, len(data)))
        data = data[:pos] + draw(st.binary(min_size=1, max_size=64)) + data[pos:]
    else:  # overwrite a 16- or 32-bit field near the start with an extreme value (sizes, lengths, offsets)
        value = draw(st.sampled_from([0, 1, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 100_000]))
        fmt = draw(st.sampled_from(["<H", ">H", "<I", ">I"]))
        value &= 0xFFFF if fmt.endswith("H") else 0xFFFFFFFF
        pos = draw(st.integers(0, max(0, min(len(data), 400) - struct.calcsize(fmt))))
        data[pos : pos + struct.calcsize(fmt)] = struct.pack(fmt, value)
    return bytes(data), draw(st.sampled_from([name, "", "x.dcm"]))


@settings(FUZZ, max_examples=400)
@given(case=mutants())
def test_mutated_real_files(case):
    check(*case)


SIDES = st.one_of(st.integers(0, 80), st.sampled_from([6000, 7100, 10_000, 65_535, 200_000, 2**31 - 1, 2**32 - 1]))


@FUZZ
@given(
    width=SIDES,
    height=SIDES,
    depth=st.sampled_from([1, 2, 4, 8, 16, 3]),
    colour=st.sampled_from([0, 2, 3, 4, 6, 1]),
    idat=st.one_of(st.binary(max_size=256), st.integers(0, 20_000).map(lambda n: zlib.compress(b"\x00" * n))),
)
def test_crafted_png_headers(width, height, depth, colour, idat):
    """Any IHDR, including ones that declare gigapixels over a few bytes of data (decompression bombs)."""
    check(png_with_header(width, height, depth, colour, idat))


@FUZZ
@given(
    rows=SIDES,
    cols=SIDES,
    bits=st.sampled_from([1, 8, 12, 16, 32, 64, 7, 0]),
    samples=st.sampled_from([1, 3, 4, 0]),
    frames=st.sampled_from([1, 2, 1000, 2**31 - 1, 0]),
    photometric=st.sampled_from(["MONOCHROME1", "MONOCHROME2", "RGB", "YBR_FULL", "PALETTE COLOR", "XYZ"]),
    signed=st.sampled_from([0, 1]),
)
def test_crafted_dicom_headers(rows, cols, bits, samples, frames, photometric, signed):
    """A valid small DICOM whose image-description tags are then overwritten with any values."""
    g = np.zeros((40, 48), np.uint16)
    data = dicom_bytes(
        g,
        "MONOCHROME2",
        12,
        Rows=min(rows, 65535),
        Columns=min(cols, 65535),
        BitsAllocated=bits,
        BitsStored=min(bits, 12),
        SamplesPerPixel=samples,
        NumberOfFrames=frames,
        PhotometricInterpretation=photometric,
        PixelRepresentation=signed,
    )
    check(data, "x.dcm")


PNG_END = struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))
CUT_SEEDS = [(n, d) for n, d in SEEDS if n.endswith((".jpg", ".png", ".dcm"))]


@FUZZ
@given(seed=st.sampled_from(CUT_SEEDS), keep=st.floats(0.0, 0.97), end_marker=st.booleans())
def test_a_file_cut_short_is_always_refused(seed, keep, end_marker):
    """Cut anywhere (up to 97 %), with or without an end marker added as a repair tool would: never an image, so never
    a grey-filled one."""
    name, data = seed
    cut = data[: int(len(data) * keep)]
    if end_marker and name.endswith(".jpg"):
        cut += b"\xff\xd9"
    elif end_marker and name.endswith(".png"):
        cut += PNG_END
    with pytest.raises(ImageLoadError):
        load_image(cut, name=name)
    check(cut, name)
