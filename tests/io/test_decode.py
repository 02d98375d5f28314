"""The loader on every supported format and on the hostile corpus (tests/corpus.py), plus its DICOM display pipeline."""

from __future__ import annotations

import io
import logging
import re
import warnings

import numpy as np
import pytest
from PIL import Image

from pneumo import config
from pneumo.checks.scope import WARNING_CODES, rule_codes
from pneumo.io import decode
from pneumo.io.decode import ImageLoadError, LoadedImage, load_image
from tests.corpus import (
    _dicom_encapsulated,
    base_picture,
    dicom_bytes,
    jpeg_cut,
    matches,
    png_cut_at_chunk,
    unreadable_cases,
    valid_cases,
)

UNREADABLE = unreadable_cases()
VALID = valid_cases()
PATIENT_STRINGS = ("Doe", "Jane", "PID-0042", "SECRET", "20190314")


@pytest.mark.parametrize("case", UNREADABLE, ids=lambda c: c.name)
def test_unreadable_file_gets_typed_error_with_useful_message(case, tmp_path):
    path = tmp_path / case.name
    path.write_bytes(case.data)
    for source in (path, case.data):  # from a path (CLI) and from bytes with a name (app upload)
        with pytest.raises(ImageLoadError) as err:
            load_image(source, name=case.name)
        message = str(err.value)
        assert matches(case, message), f"{case.name}: {message!r} does not match {case.error!r}"
        assert 10 < len(message) < 200 and message[0].isupper()
        assert "Traceback" not in message and "<_io." not in message and "\n" not in message


@pytest.mark.parametrize("case", VALID, ids=lambda c: c.name)
def test_valid_file_decodes_to_expected_picture(case, tmp_path):
    path = tmp_path / case.name
    path.write_bytes(case.data)
    img = load_image(path)
    assert isinstance(img, LoadedImage)
    assert img.pixels.dtype == np.uint8 and img.pixels.ndim == 2 and img.pixels.flags.c_contiguous
    assert img.pixels.shape == case.expected.shape, "wrong orientation or size"
    diff = np.abs(img.pixels.astype(np.int16) - case.expected)
    if case.lossy:  # JPEG inside: small differences everywhere, no systematic shift
        assert diff.mean() < 1.5 and diff.max() <= 16
        assert abs(float(img.pixels.mean()) - float(case.expected.mean())) < 1.0
    else:
        assert diff.max() == 0
    assert img.colourfulness < 1.0
    assert img.warnings == case.warnings
    assert load_image(case.data, name=case.name).pixels.tobytes() == img.pixels.tobytes()


def test_exif_rotation_is_undone_not_ignored():
    """The EXIF case must differ from the stored pixels: otherwise the test above proves nothing for it."""
    case = next(c for c in VALID if c.name == "exif_rotated_6.jpg")
    stored = np.asarray(Image.open(io.BytesIO(case.data)).convert("L"))
    assert stored.shape == case.expected.shape[::-1]
    assert load_image(case.data).size == (case.expected.shape[1], case.expected.shape[0])


def test_16bit_and_monochrome1_are_scaled_and_inverted():
    g = base_picture()
    g16 = g.astype(np.uint16) * 16  # 12-bit range in 16-bit words: a naive >> 8 would give a near-black image
    buf = io.BytesIO()
    Image.fromarray(g16).save(buf, format="PNG")
    assert Image.open(buf).mode.startswith("I")
    assert np.array_equal(load_image(buf.getvalue()).pixels, g)
    mono2 = load_image(dicom_bytes(g16, "MONOCHROME2", 12)).pixels
    mono1 = load_image(dicom_bytes(g16, "MONOCHROME1", 12)).pixels  # same stored values, opposite display
    assert np.array_equal(mono1.astype(np.int16) + mono2, np.full(g.shape, 255))


def test_dicom_info_has_no_patient_fields():
    g = base_picture()
    data = dicom_bytes(g.astype(np.uint16) * 16, "MONOCHROME2", 12)
    assert all(s.encode() in data for s in ("Doe^Jane", "PID-0042-SECRET", "20190314"))
    img = load_image(data, name="scan.dcm")
    assert img.info["format"] == "DICOM" and img.info["modality"] == "DX" and img.info["view_position"] == "PA"
    assert not any(s in repr(img.info) for s in PATIENT_STRINGS)
    assert not any("patient" in k.lower() or "birth" in k.lower() for k in img.info)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(f"{record.name}: {record.getMessage()}")


def test_dicom_header_values_never_reach_logs_warnings_or_messages():
    """pydicom quotes damaged header values in its warnings; none of that may reach our logs or the user."""
    g = base_picture()
    data = dicom_bytes(g.astype(np.uint16) * 16, "MONOCHROME2", 12)
    data = data.replace(b"1.2.840.10008.1.2.1\x00", b"Doe^Jane-SECRET-PID\x00")  # patient text in a UID field
    root, lib = logging.getLogger(), logging.getLogger("pydicom")
    on_root, on_lib = _Records(), _Records()
    old_level = root.level
    root.addHandler(on_root)
    lib.addHandler(on_lib)
    root.setLevel(logging.DEBUG)
    try:
        # record with the process's filters as pneumo.io installs them (filters are global: no per-call override)
        with warnings.catch_warnings(record=True) as caught:
            with pytest.raises(ImageLoadError, match="transfer syntax") as err:
                load_image(data, name="scan.dcm")
    finally:
        root.removeHandler(on_root)
        lib.removeHandler(on_lib)
        root.setLevel(old_level)
    # pydicom would quote the value in a warning while validating; pneumo.io switches that validation off
    from pydicom import config as pydicom_config

    assert pydicom_config.settings.reading_validation_mode == pydicom_config.IGNORE
    shown = " ".join(on_root.messages + on_lib.messages) + " ".join(str(w.message) for w in caught) + str(err.value)
    assert not any(s in shown for s in PATIENT_STRINGS), shown


def test_window_matches_pydicom_apply_windowing():
    """Our 0..255 window equals pydicom's apply_windowing rescaled from its output range, for all VOI functions."""
    import pydicom
    from pydicom.pixels import apply_windowing

    from pneumo.io.decode import _window

    stored = np.linspace(0, 4095, 4096).reshape(64, 64)  # (64, 64) float, 12-bit unsigned range
    for func, center, width in (("LINEAR", 1500.0, 801.0), ("LINEAR_EXACT", 2000.0, 1000.0), ("SIGMOID", 2048, 900)):
        ds = pydicom.dcmread(io.BytesIO(dicom_bytes(np.zeros((64, 64), np.uint16), "MONOCHROME2", 12)))
        ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = center, width, func
        theirs = apply_windowing(stored.copy(), ds) * (255.0 / 4095.0)  # their range: 0 .. 2**BitsStored - 1
        ours = _window(stored, ds)
        assert ours is not None and np.allclose(ours, theirs, atol=1e-6), func


def test_window_with_several_values_uses_the_first_and_a_useless_window_is_ignored():
    g = base_picture()
    g16 = g.astype(np.uint16) * 16
    two = dicom_bytes(g16, "MONOCHROME2", 12, WindowCenter=[1024.5, 99999], WindowWidth=[2049, 1])
    assert np.array_equal(load_image(two).pixels, np.clip(np.round(g16 / 2048 * 255), 0, 255).astype(np.uint8))
    # A window far above every pixel would paint the image black: fall back to min-max instead.
    off = dicom_bytes(g16, "MONOCHROME2", 12, WindowCenter=60000, WindowWidth=10)
    assert np.array_equal(load_image(off).pixels, g)
    # A malformed width (0 for LINEAR) is ignored, not a crash.
    assert np.array_equal(load_image(dicom_bytes(g16, "MONOCHROME2", 12, WindowCenter=100, WindowWidth=0)).pixels, g)


def test_voi_lut_sequence_is_applied():
    import pydicom
    from pydicom.dataset import Dataset

    g = base_picture()
    ds = pydicom.dcmread(io.BytesIO(dicom_bytes(g.astype(np.uint16) * 16, "MONOCHROME2", 12)))
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 12]  # 4096 entries, first input 0, 12-bit output
    item.add_new("LUTData", "US", [min(4095, 2 * v) for v in range(4096)])  # 2x contrast, saturating at 2048
    ds.VOILUTSequence = [item]
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    expected = np.round(np.minimum(4095, g.astype(np.float64) * 32) * (255 / 4095)).astype(np.uint8)
    assert np.array_equal(load_image(buf.getvalue()).pixels, expected)


def test_dicom_detection_by_magic_or_name():
    g = base_picture()
    bare = dicom_bytes(g, preamble=False)  # no preamble, no 'DICM': only the name says DICOM
    with pytest.raises(ImageLoadError, match="Not an image"):
        load_image(bare)
    assert np.array_equal(load_image(bare, name="OLD.DCM").pixels, g)
    png = io.BytesIO()
    Image.fromarray(g).save(png, format="PNG")
    assert load_image(png.getvalue(), name="misnamed.dcm").info["format"] == "PNG"  # content wins over name


def test_path_errors(tmp_path, monkeypatch):
    with pytest.raises(ImageLoadError, match="not found"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(ImageLoadError, match="folder"):
        load_image(tmp_path)
    big = tmp_path / "big.png"
    big.write_bytes(b"\x89PNG" + b"\x00" * 2000)
    monkeypatch.setattr(config, "MAX_FILE_BYTES", 1000)
    with pytest.raises(ImageLoadError, match="too large"):
        load_image(big)
    with pytest.raises(ImageLoadError, match="too large"):
        load_image(big.read_bytes())


def test_bytes_like_sources_are_equivalent():
    png = io.BytesIO()
    Image.fromarray(base_picture()).save(png, format="PNG")
    data = png.getvalue()
    ref = load_image(data).pixels
    for source in (bytearray(data), memoryview(data)):
        assert np.array_equal(load_image(source).pixels, ref)


def test_unexpected_decoder_failure_becomes_typed_error_without_details(monkeypatch, caplog):
    import pneumo.io.decode as decode

    def boom(data, *args, **kwargs):
        raise RuntimeError("Doe^Jane internal detail")

    monkeypatch.setattr(decode, "_load_pil", boom)
    with caplog.at_level(logging.DEBUG), pytest.raises(ImageLoadError, match="could not be decoded") as err:
        load_image(b"\x89PNG....")
    assert "Doe" not in str(err.value) and "Doe" not in caplog.text and "RuntimeError" in caplog.text


def test_colour_and_alpha_handling():
    g = base_picture()
    h, w = g.shape
    photo = np.dstack([g, np.roll(g, 40, axis=1), 255 - g])  # (H, W, 3), strongly coloured
    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, format="PNG")
    img = load_image(buf.getvalue())
    assert img.colourfulness > config.MAX_COLOURFULNESS
    assert "colour" in rule_codes(img)
    # Transparent pixels are composited onto black (as a viewer with a dark background shows them).
    rgba = np.dstack([g, g, g, np.where(np.arange(w) < w // 2, 255, 0)[None, :].repeat(h, 0)]).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, format="PNG")
    px = load_image(buf.getvalue()).pixels
    assert np.array_equal(px[:, : w // 2], g[:, : w // 2]) and px[:, w // 2 :].max() == 0


# ------------------------------------------------------------------------------------------ reduced decoding (issue 11)
def _jpeg(pixels: np.ndarray, quality: int = 95, exif_orientation: int | None = None) -> bytes:
    buf = io.BytesIO()
    im = Image.fromarray(pixels)
    if exif_orientation is None:
        im.save(buf, format="JPEG", quality=quality)
    else:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        im.save(buf, format="JPEG", quality=quality, exif=exif.tobytes())
    return buf.getvalue()


def _large_xray(width: int = 1800, height: int = 1500) -> np.ndarray:
    from tests.conftest import synthetic_xray

    return synthetic_xray(width=width, height=height, seed=4, opacity=True)


def test_jpeg_reduction_keeps_what_the_caller_needs():
    from pneumo.io.decode import jpeg_reduction

    assert jpeg_reduction(1800, 1500, None, None) == 1
    assert jpeg_reduction(1800, 1500, None, 448) == 2  # 900x750 >= 448; 450x375 is not
    assert jpeg_reduction(4000, 3600, None, 448) == 8  # 500x450 at 1/8 still >= 448
    assert jpeg_reduction(4000, 3600, None, 451) == 4  # 450 < 451 at 1/8: 1000x900 at 1/4
    assert jpeg_reduction(1800, 1500, 1200, None) == 1  # 900 < 1200: full decode, then area resize
    assert jpeg_reduction(5000, 4000, 1200, None) == 4  # 1250 >= 1200
    assert jpeg_reduction(300, 260, None, 448) == 1


def test_reduced_jpeg_decoding_agrees_with_full_decoding():
    """DCT-domain reduction to >= 2x the model input, then the area squash: the model sees (nearly) the same input."""
    from pneumo.io.preprocess import preprocess

    data = _jpeg(_large_xray())
    full = load_image(data)
    reduced = load_image(data, min_side=2 * config.IMAGE_SIZE)
    assert full.size == (1800, 1500)
    assert reduced.size == (900, 750), "decoded at 1/2 scale in the DCT domain"
    assert reduced.original_size == full.original_size == (1800, 1500)
    a = preprocess(full.pixels).astype(np.int16)  # (224, 224, 1)
    b = preprocess(reduced.pixels).astype(np.int16)
    assert np.abs(a - b).mean() < 0.5 and np.abs(a - b).max() <= 6


def test_reduced_jpeg_decoding_agrees_on_the_model_output(tiny_model):
    from pneumo.io.preprocess import preprocess
    from pneumo.pipeline import predict_proba

    size = tiny_model.image_size
    data = [_jpeg(_large_xray(600 + 40 * i, 500 + 30 * i)) for i in range(3)]
    full = np.stack([preprocess(load_image(d).pixels, size) for d in data])
    reduced = np.stack([preprocess(load_image(d, min_side=2 * size).pixels, size) for d in data])
    assert all(load_image(d, min_side=2 * size).size[0] < 600 for d in data)  # really reduced (1/8 at 32 px)
    p_full = predict_proba(tiny_model.model, full)
    assert np.abs(p_full - predict_proba(tiny_model.model, reduced)).mean() <= 0.01
    # the comparison can fail: the same squashes mirrored (the opacity in the other lung) move P far more
    assert np.abs(p_full - predict_proba(tiny_model.model, full[:, :, ::-1])).mean() > 0.1


def test_max_side_gives_display_pixels_and_keeps_the_file_size():
    data = _jpeg(_large_xray())
    img = load_image(data, max_side=600)
    assert img.size == (600, 500) and img.original_size == (1800, 1500)
    assert img.info["original_size"] == (1800, 1500)
    # the scope rules judge the file, not the display copy: no 'low_resolution' code for a 150 px copy
    assert rule_codes(load_image(data)) == rule_codes(load_image(data, max_side=150)) == []
    small = load_image(data, max_side=5000)  # larger than the image: unchanged
    assert small.size == (1800, 1500)
    png = io.BytesIO()
    Image.fromarray(_large_xray(900, 700)).save(png, format="PNG")
    p = load_image(png.getvalue(), max_side=450, min_side=10)
    assert p.size == (450, 350) and p.original_size == (900, 700)
    assert load_image(png.getvalue(), min_side=100).size == (900, 700), "only JPEG is reduced while decoding"


def test_reduced_decoding_follows_exif_rotation():
    data = _jpeg(_large_xray(1000, 600), exif_orientation=6)  # stored 1000x600, shown turned: 600x1000
    full, reduced = load_image(data), load_image(data, min_side=100)
    assert full.size == (600, 1000) and full.original_size == (600, 1000)
    assert reduced.size == (150, 250) and reduced.original_size == (600, 1000)


def test_size_arguments_are_checked():
    data = _jpeg(_large_xray(400, 300))
    for bad in (0, -5, 2.5, "10"):
        with pytest.raises(ValueError):
            load_image(data, max_side=bad)
        with pytest.raises(ValueError):
            load_image(data, min_side=bad)


def test_load_many_keeps_order_and_yields_errors(tmp_path):
    from pneumo.io.decode import load_many

    good = []
    for i in range(5):
        p = tmp_path / f"img{i}.jpg"
        p.write_bytes(_jpeg(_large_xray(400 + 10 * i, 300)))
        good.append(p)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image at all")
    missing = tmp_path / "missing.jpg"
    sources = [good[0], junk, good[1], missing, *good[2:]]
    for workers in (1, 3):
        out = list(load_many(sources, workers=workers, max_side=200))
        assert [s for s, _ in out] == sources
        for s, res in out:
            if s in (junk, missing):
                assert isinstance(res, ImageLoadError) and str(res)
            else:
                assert isinstance(res, LoadedImage) and max(res.size) == 200
    assert "not found" in str(dict(load_many([missing]))[missing]).lower()
    # bytes work too, and a consumer may stop early without hanging
    it = load_many([p.read_bytes() for p in good] * 4, workers=2)
    first = next(it)
    it.close()
    assert isinstance(first[1], LoadedImage)
    with pytest.raises(ValueError):
        list(load_many(good, workers=0))


def test_colour_dicom_reports_its_colourfulness():
    """An RGB DICOM (a test pattern, a photo wrapped as DICOM) must not pass as grayscale: the scope rule needs it."""
    bars = np.zeros((120, 160, 3), np.uint8)
    for i, colour in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]):
        bars[:, i * 40 : (i + 1) * 40] = colour
    img = load_image(dicom_bytes(bars, photometric="RGB"))
    assert img.pixels.shape == (120, 160) and img.colourfulness > 100
    assert "colour" in rule_codes(img)
    grey = load_image(dicom_bytes(np.full((120, 160), 90, np.uint8)))
    assert grey.colourfulness == 0.0


# ------------------------------------------------------------------------------------------- files cut short
def _picture(width: int = 480, height: int = 400, flat_bottom: int = 0, value: int = 0) -> np.ndarray:
    """uint8 (H, W) test picture with texture everywhere (so a grey fill shows), optionally a flat bottom band."""
    y, x = np.mgrid[:height, :width]
    rng = np.random.default_rng(3)
    arr = (np.sin(x / 9.0) + np.cos(y / 13.0)) * 60 + 128 + rng.normal(0, 12, (height, width))  # (H, W)
    if flat_bottom:
        arr[-flat_bottom:] = value
    return np.clip(arr, 0, 255).astype(np.uint8)


def _jpeg_variants(arr: np.ndarray) -> dict[str, bytes]:
    rgb = Image.fromarray(np.dstack([arr, arr, 255 - arr]))  # colour, 4:2:0 chroma
    return {
        "gray": _jpeg(arr, quality=90),
        "rgb420": _encode_jpeg(rgb, quality=90),
        "progressive": _encode_jpeg(Image.fromarray(arr), quality=90, progressive=True),
        "restarts": _encode_jpeg(Image.fromarray(arr), quality=90, restart_marker_blocks=4),
        "odd_size": _jpeg(arr[-241:, :333], quality=90),  # last blocks cut by the image edge
    }


def _encode_jpeg(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="JPEG", **kw)
    return buf.getvalue()


@pytest.mark.parametrize("kind", ["gray", "rgb420", "progressive", "restarts", "odd_size"])
def test_jpeg_cut_short_is_refused_at_every_decode_scale(kind):
    """libjpeg fills a JPEG cut short grey when an end marker follows the cut; the loader must refuse it instead."""
    data = _jpeg_variants(_picture())[kind]
    for keep in (0.5, 0.9, 0.99):
        for end_marker in (True, False):
            cut = jpeg_cut(data, keep, end_marker)
            if end_marker:  # control: Pillow itself decodes this one without complaint (the silent grey fill)
                im = Image.open(io.BytesIO(cut))
                im.load()
            for kw in ({}, {"min_side": 100}, {"max_side": 100}):  # full, DCT-reduced (CLI), display size (app)
                with pytest.raises(ImageLoadError, match="truncated"):
                    load_image(cut, **kw)


@pytest.mark.parametrize("value", [0, 128])
@pytest.mark.parametrize("kind", ["gray", "rgb420", "progressive", "restarts", "odd_size"])
def test_complete_jpeg_with_flat_last_block_decodes_as_before(kind, value, monkeypatch):
    """A flat band at the bottom: black as film borders are, or mid-grey as libjpeg's fill is (then the probe decode
    runs and must find the file complete); the pixels are exactly Pillow's."""
    data = _jpeg_variants(_picture(flat_bottom=40, value=value))[kind]
    stored = Image.open(io.BytesIO(data))
    expected = np.asarray(stored.convert("L"))
    corner = expected[-8:, -8:]
    assert int(corner.max()) - int(corner.min()) <= 2, "control: the last block is flat"
    assert (abs(int(corner[-1, -1]) - 128) <= 1) == (value == 128), "control: mid-grey exactly when asked"
    probes = []
    real_open = Image.open
    monkeypatch.setattr(
        decode.Image, "open", lambda fp, *a: probes.append(decode._JPEG_PROBE in fp.getvalue()) or real_open(fp, *a)
    )
    assert np.array_equal(load_image(data).pixels, expected)
    assert any(probes) == (value == 128 or kind == "progressive"), "the probe runs exactly when needed"
    assert np.array_equal(load_image(data + b"trailing bytes after the end").pixels, expected)
    assert load_image(data, max_side=100).size[0] == 100


def test_jpeg_end_marker_is_found_after_the_last_scan():
    data = _jpeg(_picture(), quality=90)
    assert decode._jpeg_end_of_image(data) == (len(data) - 2, True)
    assert decode._jpeg_end_of_image(data + b"\x00junk\xff\xd9") == (len(data) - 2, True)  # the first image's end
    cut = data[: int(len(data) * 0.9)]
    cut = cut if cut.endswith(b"\xff") else cut + b"\xff"  # half of a stuffed FF00, as a cut can leave it
    assert decode._jpeg_end_of_image(cut + b"\xff\xd9") == (len(cut) - 1, True)  # before the dangling FF
    assert decode._jpeg_end_of_image(b"\xff\xd8\xff\xe0\x00")[0] is None


def test_progressive_jpeg_cut_between_scans_is_refused():
    """Cut exactly where a scan ends: every scan present is complete, the later ones (the detail) are missing."""
    data = _encode_jpeg(Image.fromarray(_picture()), quality=90, progressive=True)
    first_scan = data.find(b"\xff\xda")
    cuts = [m.start() for m in re.finditer(rb"\xff[\xc4\xda]", data) if m.start() > first_scan]  # next tables/scan
    assert len(cuts) >= 6 and decode._jpeg_end_of_image(data)[1]
    for cut in cuts:
        short = data[:cut] + b"\xff\xd9"
        assert not decode._jpeg_end_of_image(short)[1]
        Image.open(io.BytesIO(short)).load()  # control: Pillow decodes it, blurred, without a word
        with pytest.raises(ImageLoadError, match="truncated"):
            load_image(short)


def test_png_cut_at_a_chunk_boundary_is_refused_and_a_whole_one_decodes_exactly():
    g = base_picture()
    buf = io.BytesIO()
    Image.fromarray(g).save(buf, format="PNG")
    rechunked = png_cut_at_chunk(buf.getvalue(), chunk_size=2048, keep=1.0)  # every chunk kept: a whole file
    assert np.array_equal(load_image(rechunked).pixels, g)
    with pytest.raises(ImageLoadError, match="truncated"):
        load_image(png_cut_at_chunk(buf.getvalue(), chunk_size=2048))


# ---------------------------------------------------------------------------------------------------- DICOM
def test_dicom_cut_short_is_called_incomplete_not_empty():
    g16 = base_picture().astype(np.uint16) * 16
    for data in (dicom_bytes(g16, bits_stored=12), dicom_bytes(np.stack([g16, g16]), bits_stored=12)):
        assert load_image(data).pixels.shape == g16.shape  # control: the whole file reads
        for short in (1, 2, 9, len(data) // 3):
            with pytest.raises(ImageLoadError, match="incomplete") as err:
                load_image(data[:-short])
            assert "no pixel data" not in str(err.value)


def test_compressed_dicom_cut_short_is_called_incomplete_or_truncated():
    g = base_picture()
    jpeg = _jpeg(g, quality=95)
    data = _dicom_encapsulated("1.2.840.10008.1.2.4.50", jpeg, g.shape, "MONOCHROME2")
    assert np.abs(load_image(data).pixels.astype(int) - g).max() <= 16  # control: the whole file reads
    for short in (1, 8, 9, 500):
        with pytest.raises(ImageLoadError, match="incomplete"):
            load_image(data[:-short])
    cut_inside = _dicom_encapsulated("1.2.840.10008.1.2.4.50", jpeg_cut(jpeg), g.shape, "MONOCHROME2")
    with pytest.raises(ImageLoadError, match="truncated"):
        load_image(cut_inside)


def test_signed_values_under_an_unsigned_header_and_the_reverse_are_reported():
    g = base_picture()
    signed = g.astype(np.int16) * 4 - 500  # (H, W) -500..520, as a signed detector stores them
    assert load_image(dicom_bytes(signed, bits_stored=16)).warnings == ()  # control: header and values agree
    assert np.array_equal(load_image(dicom_bytes(signed, bits_stored=16)).pixels, g)
    wrong = load_image(dicom_bytes(signed.view(np.uint16), bits_stored=16))  # same bytes, header says unsigned
    assert wrong.warnings == ("dicom_sign_inconsistent",)
    unsigned = g.astype(np.uint16) * 200 + 5000  # 5000..56000: wraps to negative when read as signed
    assert load_image(dicom_bytes(unsigned)).warnings == ()
    assert load_image(dicom_bytes(unsigned.view(np.int16))).warnings == ("dicom_sign_inconsistent",)
    full = np.linspace(0, 4095, g.size).reshape(g.shape).astype(np.uint16)  # the whole 12-bit range: no contradiction
    assert load_image(dicom_bytes(full, bits_stored=12)).warnings == ()


def test_highbit_and_bits_beyond_bits_stored_are_read_as_the_standard_says_and_reported():
    g = base_picture()
    high = g.astype(np.uint16) * 256  # 12 stored bits ending at bit 15 (HighBit 15): the values are high >> 4
    img = load_image(dicom_bytes(high, bits_stored=16, BitsStored=12))
    assert img.warnings == ("dicom_bits_inconsistent",) and np.array_equal(img.pixels, g)
    # HighBit 11 says the stored bits are 0-11: the bits above are not pixel data (PS3.5 8.1.1) and are masked off
    overlay = g.astype(np.uint16) * 16 | np.uint16(0xF000)  # the top 4 bits set, as old files put overlays there
    img = load_image(dicom_bytes(overlay, bits_stored=16, BitsStored=12, HighBit=11))
    assert img.warnings == ("dicom_bits_inconsistent",) and np.array_equal(img.pixels, g)
    assert load_image(dicom_bytes(g.astype(np.uint16) * 16, bits_stored=12)).warnings == ()  # control


def test_dicom_coded_values_are_shown_only_as_standard_codes():
    g16 = base_picture().astype(np.uint16) * 16
    hostile = {
        "ViewPosition": "DOE^JOHN MRN4711",
        "Modality": ":red-background[**PNEUMONIA CONFIRMED**]",
        "BodyPartExamined": "![b](http://example.invalid/x.png)",
    }
    img = load_image(dicom_bytes(g16, bits_stored=12, **hostile))
    assert (img.info["view_position"], img.info["modality"], img.info["body_part"]) == ("other", "other", "other")
    assert not any(v in repr(img.info) for v in ("DOE", "MRN", "PNEUMONIA", "red-background", "http", "example"))
    from pneumo.pipeline import safe_facts

    assert safe_facts(img.info)["View position"] == "other" and safe_facts(img.info)["Modality"] == "other"
    assert rule_codes(img) == ["not_radiograph", "not_chest"]  # as the raw values: no X-ray modality, no chest
    odd = load_image(
        dicom_bytes(g16, bits_stored=12, ViewPosition="lateral", Modality="cr", BodyPartExamined="PORT CHEST")
    )
    assert (odd.info["view_position"], odd.info["modality"], odd.info["body_part"]) == ("LATERAL", "CR", "CHEST")
    assert rule_codes(odd) == ["not_frontal"]
    hand = load_image(dicom_bytes(g16, bits_stored=12, BodyPartExamined="HAND", ViewPosition=""))
    assert (hand.info["body_part"], hand.info["view_position"]) == ("HAND", "unknown")
    assert rule_codes(hand) == ["not_chest"]
    assert load_image(dicom_bytes(g16, bits_stored=12, BodyPartExamined="KNEE RIGHT")).info["body_part"] == "other"


def test_multi_frame_dicom_says_which_frame_was_analysed():
    from pneumo.pipeline import safe_facts

    g16 = base_picture().astype(np.uint16) * 16
    single = load_image(dicom_bytes(g16, bits_stored=12))
    multi = load_image(dicom_bytes(np.stack([g16, 4095 - g16, g16]), bits_stored=12))
    assert np.array_equal(multi.pixels, single.pixels)  # frame 1, not the inverted frame 2
    assert single.warnings == () and "Frame" not in safe_facts(single.info)
    assert multi.warnings == ("multi_frame",) and safe_facts(multi.info)["Frame"] == "1 of 3"
    assert "frame 1" in WARNING_CODES["multi_frame"]


def test_decode_warnings_have_sentences_and_do_not_block_the_analysis():
    from pneumo.checks.scope import OUT_OF_SCOPE_CODES, WARNING_CODES

    assert set(decode.DECODE_WARNINGS) <= set(WARNING_CODES)
    assert not set(decode.DECODE_WARNINGS) & OUT_OF_SCOPE_CODES
    emitted = {w for c in VALID for w in c.warnings}
    assert emitted <= set(decode.DECODE_WARNINGS) and len(emitted) == 3
