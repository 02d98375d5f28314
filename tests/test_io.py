"""The loader on every supported format and on the hostile corpus (tests/corpus.py), plus its DICOM display pipeline."""

from __future__ import annotations

import io
import logging
import warnings

import numpy as np
import pytest
from PIL import Image

from pneumo import config
from pneumo.io import ImageLoadError, LoadedImage, load_image, plausibility_warnings
from tests.corpus import base_picture, dicom_bytes, matches, unreadable_cases, valid_cases

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

    from pneumo.io import _window

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
    import pneumo.io as pio

    def boom(data, *args, **kwargs):
        raise RuntimeError("Doe^Jane internal detail")

    monkeypatch.setattr(pio, "_load_pil", boom)
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
    assert any("colour" in m for m in plausibility_warnings(img))
    # Transparent pixels are composited onto black (as a viewer with a dark background shows them).
    rgba = np.dstack([g, g, g, np.where(np.arange(w) < w // 2, 255, 0)[None, :].repeat(h, 0)]).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, format="PNG")
    px = load_image(buf.getvalue()).pixels
    assert np.array_equal(px[:, : w // 2], g[:, : w // 2]) and px[:, w // 2 :].max() == 0


def test_plausibility_warnings():
    g = base_picture()
    assert plausibility_warnings(LoadedImage(g, {"format": "PNG"})) == []  # 288x240 gray radiograph
    small = LoadedImage(g[:100, :100], {"format": "PNG"})
    assert any("small" in m for m in plausibility_warnings(small))
    ct = LoadedImage(g, {"format": "DICOM", "modality": "CT"})
    assert any("CT" in m for m in plausibility_warnings(ct))
    flat = LoadedImage(np.full((300, 300), 90, np.uint8), {})
    assert any("uniform" in m for m in plausibility_warnings(flat))
    wide = LoadedImage(np.tile(g, (1, 3)), {})
    assert any("shape" in m for m in plausibility_warnings(wide))
