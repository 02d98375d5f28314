"""A corpus of hostile and odd image files, generated on the fly (nothing large is committed).

Every *valid* file is derived from one base picture (a shipped sample radiograph, shrunk) and comes with the picture
a correct loader must show for it (``Case.expected``, uint8 (H, W)); every *unreadable* file comes with a regular
expression its ``ImageLoadError`` message must match. ``write_corpus(dir)`` writes all files and returns the cases.
"""

from __future__ import annotations

import io
import re
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
BASE_SAMPLE = ROOT / "assets" / "samples" / "normal_NORMAL2-IM-0640-0001.jpeg"
# Width x height of the base picture: not square (a 90 degree turn changes the shape) and >= 224 on both sides.
BASE_SIZE = (288, 240)
# Transfer syntaxes whose decoders pydicom 3 only has through optional plugins (pylibjpeg, pyjpegls, gdcm).
PLUGIN_ONLY_SYNTAXES = ("1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.70")
J2K_LOSSLESS = "1.2.840.10008.1.2.4.90"  # JPEG 2000 (lossless only): pydicom decodes it through Pillow


@dataclass(frozen=True)
class Case:
    """One corpus file. Valid: ``expected`` is the displayed picture; unreadable: ``error`` is a message regex."""

    name: str
    data: bytes
    expected: np.ndarray | None = None  # uint8 (H, W) or None
    error: str | None = None
    lossy: bool = False  # JPEG inside: compare with a tolerance instead of exactly
    warnings: tuple[str, ...] = ()  # valid: the warning codes decoding must put on it (LoadedImage.warnings)

    @property
    def valid(self) -> bool:
        return self.expected is not None


def base_picture(size: tuple[int, int] = BASE_SIZE) -> np.ndarray:
    """uint8 (H, W) radiograph spanning the full 0..255 range (so min-max scaling is the identity on it)."""
    im = Image.open(BASE_SAMPLE).convert("L").resize(size, Image.Resampling.BOX)
    arr = np.asarray(im, dtype=np.float64)
    arr = (arr - arr.min()) * (255.0 / (arr.max() - arr.min()))
    return np.round(arr).astype(np.uint8)


def _encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_with_header(width: int, height: int, bit_depth: int = 8, colour_type: int = 0, idat: bytes = b"") -> bytes:
    """A PNG whose IHDR declares any size (valid CRCs), with the given (usually tiny) compressed IDAT."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    body = idat or zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", body) + _png_chunk(b"IEND", b"")


def dicom_bytes(
    frames: np.ndarray,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    patient: bool = True,
    preamble: bool = True,
    **tags,
) -> bytes:
    """A DX DICOM file (explicit VR little endian) holding ``frames`` (H, W) or (F, H, W), with patient fields set.

    Extra ``tags`` (keyword=value) are set on the dataset. With ``preamble=False`` only the bare dataset is returned
    (no 128-byte preamble, no 'DICM', no file meta), as old files and some exports are.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image, for presentation
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=["pneumo-corpus"])
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.ViewPosition = "PA"
    ds.BodyPartExamined = "CHEST"
    if patient:
        ds.PatientName = "Doe^Jane"
        ds.PatientID = "PID-0042-SECRET"
        ds.PatientBirthDate = "20190314"
    bits = bits_stored or (8 if frames.dtype == np.uint8 else 16)
    ds.set_pixel_data(frames, photometric, bits, generate_instance_uid=False)
    for key, value in tags.items():
        setattr(ds, key, value)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    data = buf.getvalue()
    if not preamble:
        meta_len = struct.unpack("<I", data[140:144])[0]  # (0002,0000) group length, right after 'DICM'
        data = data[144 + meta_len :]
    return data


def _dicom_encapsulated(transfer_syntax: str, fragment: bytes, shape: tuple[int, int], photometric: str) -> bytes:
    """A DICOM whose pixel data is one encapsulated (compressed) frame ``fragment`` declared with the syntax."""
    import pydicom
    from pydicom.encaps import encapsulate

    h, w = shape
    samples = 3 if photometric.startswith(("RGB", "YBR")) else 1
    ds = pydicom.dcmread(io.BytesIO(dicom_bytes(np.zeros((h, w), np.uint8))))
    ds.SamplesPerPixel = samples
    ds.PhotometricInterpretation = photometric
    if samples == 3:
        ds.PlanarConfiguration = 0
    ds.PixelData = encapsulate([fragment])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def png_cut_at_chunk(png: bytes, chunk_size: int = 4096, keep: float = 0.9) -> bytes:
    """``png`` re-written with its image data in ``chunk_size`` IDAT chunks, the later ones dropped and a proper end
    chunk added: every chunk checksum is right, only the compressed data stops early."""
    pos, chunks = 8, []
    while pos < len(png):
        length = struct.unpack(">I", png[pos : pos + 4])[0]
        chunks.append((png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + length]))
        pos += 12 + length
    idat = b"".join(body for kind, body in chunks if kind == b"IDAT")
    head = b"".join(_png_chunk(kind, body) for kind, body in chunks if kind not in (b"IDAT", b"IEND"))
    pieces = [idat[i : i + chunk_size] for i in range(0, len(idat), chunk_size)]
    kept = pieces[: max(1, int(len(pieces) * keep))]
    assert keep >= 1.0 or len(kept) < len(pieces), "the PNG is too small to be cut at a chunk"
    return png[:8] + head + b"".join(_png_chunk(b"IDAT", p) for p in kept) + _png_chunk(b"IEND", b"")


def jpeg_cut(jpeg: bytes, keep: float = 0.9, end_marker: bool = True) -> bytes:
    """The first ``keep`` of a JPEG, with an end marker (FFD9) appended, as a repair tool or careless copy leaves it."""
    return jpeg[: int(len(jpeg) * keep)] + (b"\xff\xd9" if end_marker else b"")


def missing_codec_syntax() -> str | None:
    """A compressed transfer syntax that pydicom cannot decode in this environment (None if all can be)."""
    from pydicom.pixels import get_decoder

    for uid in PLUGIN_ONLY_SYNTAXES:
        if not get_decoder(uid).is_available:
            return uid
    return None


def unreadable_cases() -> list[Case]:
    """Files the loader must refuse, each with a regex for its message."""
    g = base_picture()
    rng = np.random.default_rng(7)
    jpeg = _encode(Image.fromarray(g), "JPEG", quality=90)
    png = _encode(Image.fromarray(g), "PNG")
    bad_crc = bytearray(png)
    bad_crc[-16] ^= 0xFF  # last byte of the IDAT chunk's CRC (IEND is the final 12 bytes)
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w") as zf:
        zf.writestr("report.txt", "not an image")
    frames = [Image.fromarray(np.full((64, 64), v, np.uint8)) for v in (0, 128, 255)]
    gif = io.BytesIO()
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    dcm = dicom_bytes(g.astype(np.uint16) * 16, bits_stored=12)
    ts_ok = b"1.2.840.10008.1.2.1\x00"  # explicit VR little endian, padded to even length
    assert dcm.count(ts_ok) == 1
    no_pixels = _dicom_without_pixels()
    progressive = _encode(Image.fromarray(g), "JPEG", quality=90, progressive=True)
    rgb_jpeg = _encode(Image.fromarray(np.dstack([g, g, g])), "JPEG", quality=95)
    dcm_jpeg = _dicom_encapsulated("1.2.840.10008.1.2.4.50", rgb_jpeg, g.shape, "YBR_FULL_422")
    codec = missing_codec_syntax()
    cases = [
        Case("empty.png", b"", error=r"empty"),
        Case("random_bytes.png", rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(), error=r"Not an image"),
        Case("text_renamed.png", b"This is a text file, not an image.\n" * 20, error=r"Not an image"),
        Case("pdf_renamed.jpg", b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n", error=r"PDF"),
        Case("zip_renamed.jpg", zbuf.getvalue(), error=r"ZIP"),
        Case("truncated.jpg", jpeg[: len(jpeg) // 2], error=r"truncated"),
        Case("truncated.png", png[: len(png) // 2], error=r"truncated"),
        # cut at 90 %: libjpeg would fill the rest grey without a word when an end marker follows the cut
        Case("truncated_90.jpg", jpeg_cut(jpeg, end_marker=False), error=r"truncated"),
        Case("truncated_end_marker.jpg", jpeg_cut(jpeg), error=r"truncated"),
        Case("truncated_end_marker_progressive.jpg", jpeg_cut(progressive), error=r"truncated"),
        Case("truncated_chunks.png", png_cut_at_chunk(png), error=r"truncated"),
        Case("bad_crc.png", bytes(bad_crc), error=r"checksum"),
        Case("bomb.png", png_with_header(200_000, 200_000), error=r"absurd size|too large"),
        Case("one_pixel.png", _encode(Image.new("L", (1, 1), 128), "PNG"), error=r"too small"),
        Case("strip_30000x10.png", _encode(Image.new("L", (30000, 10), 128), "PNG"), error=r"strip"),
        Case("animated.gif", gif.getvalue(), error=r"Animated"),
        Case("dicom_no_pixels.dcm", no_pixels, error=r"no pixel data"),
        Case("dicom_bad_syntax.dcm", dcm.replace(ts_ok, b"\xff\xfeZZ<garbage>!\x07\x00"), error=r"transfer syntax"),
        Case("dicom_unknown_syntax.dcm", dcm.replace(ts_ok, b"1.2.840.99999.1.2.3\x00"), error=r"transfer syntax"),
        Case(
            "dicom_missing_codec.dcm",
            _dicom_encapsulated(
                codec or PLUGIN_ONLY_SYNTAXES[0], b"\xff\xd8\xff\xf7garbage" * 8, g.shape, "MONOCHROME2"
            ),
            # Where a plugin is installed the garbage fragment is still refused, as damaged.
            error=r"no decoder" if codec else r"damaged",
        ),
        Case("dicom_truncated.dcm", dcm[: len(dcm) // 2], error=r"damaged|does not match"),
        Case("dicom_one_byte_short.dcm", dcm[:-1], error=r"incomplete"),
        Case("dicom_jpeg_one_byte_short.dcm", dcm_jpeg[:-1], error=r"incomplete"),
        Case("dicom_jpeg_nine_bytes_short.dcm", dcm_jpeg[:-9], error=r"incomplete"),
        Case(
            "dicom_jpeg_cut.dcm",
            _dicom_encapsulated("1.2.840.10008.1.2.4.50", jpeg_cut(rgb_jpeg), g.shape, "YBR_FULL_422"),
            error=r"truncated",
        ),
    ]
    return cases


def _dicom_without_pixels() -> bytes:
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(dicom_bytes(np.zeros((64, 64), np.uint8))))
    del ds.PixelData
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def window_expected(g: np.ndarray) -> np.ndarray:
    """What the VOI-window DICOM case must display: its window maps base values 64..192 onto black..white."""
    return np.clip(np.round((g.astype(np.float64) - 64.0) * 255.0 / 128.0), 0, 255).astype(np.uint8)


def valid_cases() -> list[Case]:
    """Readable but unusual files, each with the picture it must show (all derived from :func:`base_picture`)."""
    g = base_picture()  # (H, W) uint8
    im = Image.fromarray(g)
    g16 = g.astype(np.uint16) * 16  # 12-bit data in 16-bit words, as detectors store it
    rgba = np.dstack([g, g, g, np.full_like(g, 255)])
    cmyk = Image.merge("CMYK", [Image.new("L", im.size, 0)] * 3 + [Image.fromarray(255 - g)])
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation 6: "rotate 90 degrees clockwise to display"
    stored_rotated = Image.fromarray(np.ascontiguousarray(np.rot90(g, 1)))  # stored turned 90 degrees anticlockwise
    exif3 = Image.Exif()
    exif3[0x0112] = 3  # orientation 3: "rotate 180 degrees to display"
    multi = np.stack([g16, (255 - g).astype(np.uint16) * 16, np.zeros_like(g16)])  # (3, H, W): first frame counts
    rgb_jpeg = _encode(Image.fromarray(np.dstack([g, g, g])), "JPEG", quality=95)
    cases = [
        Case("plain_gray8.png", _encode(im, "PNG"), expected=g),
        Case("gray16.png", _encode(Image.fromarray(g16), "PNG"), expected=g),
        Case("rgb.png", _encode(im.convert("RGB"), "PNG"), expected=g),
        Case("rgba.png", _encode(Image.fromarray(rgba, "RGBA"), "PNG"), expected=g),
        Case("palette.png", _encode(im.convert("P", palette=Image.Palette.ADAPTIVE, colors=256), "PNG"), expected=g),
        Case("baseline.jpg", _encode(im, "JPEG", quality=95), expected=g, lossy=True),
        Case("cmyk.jpg", _encode(cmyk, "JPEG", quality=95), expected=g, lossy=True),
        Case("progressive.jpg", _encode(im, "JPEG", quality=95, progressive=True), expected=g, lossy=True),
        Case("exif_rotated_6.jpg", _encode(stored_rotated, "JPEG", quality=95, exif=exif), expected=g, lossy=True),
        Case("exif_rotated_3.jpg", _encode(im.rotate(180), "JPEG", quality=95, exif=exif3), expected=g, lossy=True),
        Case("tiff_lzw.tif", _encode(im, "TIFF", compression="tiff_lzw"), expected=g),
        Case("gray16.tif", _encode(Image.fromarray(g16), "TIFF"), expected=g),
        Case("bmp.bmp", _encode(im, "BMP"), expected=g),
        Case("dicom_mono2_12bit.dcm", dicom_bytes(g16, bits_stored=12), expected=g),
        Case("dicom_mono1_12bit.dcm", dicom_bytes((4095 - g16).astype(np.uint16), "MONOCHROME1", 12), expected=g),
        Case("dicom_mono2_8bit.dcm", dicom_bytes(g), expected=g),
        Case(
            "dicom_voi_window.dcm",
            # stored 16*g; modality LUT -> 16*g - 1024; window [0, 2048] -> black..white (PS3.3 C.11.2.1.2.1)
            dicom_bytes(
                g16, bits_stored=12, RescaleSlope=1, RescaleIntercept=-1024, WindowCenter=1024.5, WindowWidth=2049
            ),
            expected=window_expected(g),
        ),
        Case("dicom_multiframe.dcm", dicom_bytes(multi, bits_stored=12), expected=g, warnings=("multi_frame",)),
        Case(
            "dicom_burned_in_annotation.dcm",
            dicom_bytes(g16, bits_stored=12, BurnedInAnnotation="YES"),
            expected=g,
            warnings=("burned_in_annotation",),
        ),
        Case(
            "dicom_highbit15_as_standard.dcm",
            # 12 stored bits ending at bit 15 (PS3.5 8.1.1): read as value >> 4, so the window in 12-bit values fits
            dicom_bytes(
                g16 << 4,
                bits_stored=16,
                BitsStored=12,
                HighBit=15,
                RescaleSlope=1,
                RescaleIntercept=-1024,
                WindowCenter=1024.5,
                WindowWidth=2049,
            ),
            expected=window_expected(g),
            warnings=("dicom_bits_inconsistent",),
        ),
        Case(
            "dicom_highbit15_low_bits.dcm",
            dicom_bytes(g16 + 1, bits_stored=12, HighBit=15),  # the values sit in the low 12 bits, against HighBit
            expected=g,
            warnings=("dicom_bits_inconsistent",),
        ),
        Case("dicom_no_preamble.dcm", dicom_bytes(g16, bits_stored=12, preamble=False), expected=g),
        Case(
            "dicom_jpeg_ybr.dcm",
            _dicom_encapsulated("1.2.840.10008.1.2.4.50", rgb_jpeg, g.shape, "YBR_FULL_422"),
            expected=g,
            lossy=True,
        ),
    ]
    if j2k_available():  # a compressed DICOM that does decode here (pydicom's Pillow plugin)
        buf = io.BytesIO()
        im.save(buf, format="JPEG2000", irreversible=False, no_jp2=True)  # lossless J2K codestream
        cases.append(
            Case(
                "dicom_j2k_lossless.dcm",
                _dicom_encapsulated(J2K_LOSSLESS, buf.getvalue(), g.shape, "MONOCHROME2"),
                expected=g,
            )
        )
    return cases


def j2k_available() -> bool:
    """Whether Pillow can write and pydicom can read JPEG 2000 in this environment."""
    from PIL import features
    from pydicom.pixels import get_decoder

    return bool(features.check("jpg_2000")) and get_decoder(J2K_LOSSLESS).is_available


def all_cases() -> list[Case]:
    return unreadable_cases() + valid_cases()


def write_corpus(directory: Path) -> list[Case]:
    """Write every corpus file into ``directory`` (created if needed); returns the cases in file order."""
    directory.mkdir(parents=True, exist_ok=True)
    cases = all_cases()
    names = [c.name for c in cases]
    assert len(set(names)) == len(names), "corpus file names must be unique"
    for c in cases:
        (directory / c.name).write_bytes(c.data)
    return cases


def matches(case: Case, message: str) -> bool:
    """Whether an error message is the one expected for an unreadable case."""
    return case.error is not None and re.search(case.error, message, flags=re.IGNORECASE) is not None
