"""Privacy: uploads never reach the disk, and DICOM patient fields never reach the page, the report or the logs.

Every run makes fresh random markers: one per identifying DICOM field (patient name, ID and birth date, institution,
referring physician, accession number), a token in a PNG text chunk, and byte windows cut from the uploaded files. A
positive control accompanies every "never appears" check (the file name must appear on the page and in the report,
DEBUG records from the decoding must reach the captured log), so a check that looks in the wrong place fails.

The live test runs ``streamlit run app.py`` with a Python audit hook in the server process (tests/live_app.py), uploads
through headless Chromium and then searches every file that appeared or changed in the temp dir, the working directory
and the home dot-folders for the markers; the audit hook also proves that the server did not open a temporary file
(named or anonymous) while it received and analysed the uploads.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import time
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from tests.app.live_app import LiveServer, launch_chromium, require_browser, upload, wait_for_result
from tests.conftest import ROOT, synthetic_xray
from tests.corpus import dicom_bytes

# DICOM attributes that identify a patient (or the encounter) and must never leave the loader.
IDENTIFYING = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "InstitutionName",
    "ReferringPhysicianName",
    "AccessionNumber",
)
TIMEOUT_MS = 180_000  # a cold page load imports TensorFlow; CI runners are slow


@dataclass(frozen=True)
class Markers:
    """Random values for the identifying fields of one test's DICOM, and the strings that betray each of them."""

    values: dict[str, str]  # DICOM keyword -> the value written into the file
    needles: dict[str, tuple[str, ...]]  # DICOM keyword -> strings that must never appear anywhere

    @classmethod
    def fresh(cls) -> Markers:
        tok = {k: secrets.token_hex(5).upper() for k in IDENTIFYING}
        rng = np.random.default_rng(int.from_bytes(os.urandom(4), "little"))
        y, m, d = int(rng.integers(1920, 2000)), int(rng.integers(1, 13)), int(rng.integers(10, 29))
        birth = f"{y}{m:02d}{d:02d}"
        values = {
            "PatientName": f"Zqx{tok['PatientName']}^Jane",
            "PatientID": f"PID{tok['PatientID']}",
            "PatientBirthDate": birth,
            "InstitutionName": f"Inst{tok['InstitutionName']} Hospital",
            "ReferringPhysicianName": f"Ref{tok['ReferringPhysicianName']}^Doc",
            "AccessionNumber": f"ACC{tok['AccessionNumber']}",  # SH: at most 16 characters
        }
        needles = {
            "PatientName": (f"Zqx{tok['PatientName']}",),
            "PatientID": (f"PID{tok['PatientID']}",),
            "PatientBirthDate": (birth, f"{y}-{m:02d}-{d:02d}", f"{d:02d}.{m:02d}.{y}", f"{m:02d}/{d:02d}/{y}"),
            "InstitutionName": (f"Inst{tok['InstitutionName']}",),
            "ReferringPhysicianName": (f"Ref{tok['ReferringPhysicianName']}",),
            "AccessionNumber": (f"ACC{tok['AccessionNumber']}",),
        }
        return cls(values, needles)

    def all_needles(self) -> dict[str, bytes]:
        return {f"{k}={n}": n.encode() for k, ns in self.needles.items() for n in ns}


def marked_dicom(markers: Markers, width: int = 1024, height: int = 768) -> bytes:
    """A 12-bit DX DICOM with the identifying fields set to the markers and unique noise in its pixels.

    1024x768 x 2 bytes is 1.5 MB: over the 1 MB above which Starlette (under Streamlit's upload route) spools a file
    to disk unless the app raises that limit.
    """
    rng = np.random.default_rng(int.from_bytes(os.urandom(8), "little"))
    pixels = synthetic_xray(width, height, seed=7).astype(np.uint16) * 16  # (H, W) 12-bit
    pixels += rng.integers(0, 16, pixels.shape, dtype=np.uint16)
    return dicom_bytes(pixels, bits_stored=12, patient=False, **markers.values)


def marked_png(token: str, width: int = 900, height: int = 800) -> bytes:
    """An 8-bit PNG radiograph with ``token`` in a tEXt chunk and unique noise in its pixels."""
    rng = np.random.default_rng(int.from_bytes(os.urandom(8), "little"))
    pixels = synthetic_xray(width, height, seed=8).astype(np.int16) + rng.integers(-20, 20, (height, width))
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", token)
    buf = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def byte_windows(data: bytes, label: str, n: int = 3, width: int = 32) -> dict[str, bytes]:
    """``n`` windows of ``width`` bytes from the second half of a file (pixel data: unique to this upload)."""
    starts = [len(data) // 2 + i * (len(data) // 2 - width) // n for i in range(n)]
    return {f"{label}[{s}:{s + width}]": data[s : s + width] for s in starts}


def leaks(blob: bytes, needles: dict[str, bytes]) -> list[str]:
    """The names of the needles that occur in ``blob``."""
    return [name for name, needle in needles.items() if needle in blob]


def pdf_text(pdf: bytes) -> str:
    """The text a reader's viewer shows (poppler's pdftotext), spaces normalised."""
    out = subprocess.run(["pdftotext", "-", "-"], input=pdf, capture_output=True, check=True).stdout
    return " ".join(out.decode().split())


def pdf_plain(pdf: bytes) -> bytes:
    """A PDF's bytes plus its inflated streams, with kerned text pieces ``(ab) -12 (cd)`` joined (for searching)."""
    parts = [pdf]
    for m in re.finditer(rb"stream\r?\n(.*?)\r?\nendstream", pdf, re.S):
        try:
            parts.append(zlib.decompress(m.group(1)))
        except zlib.error:
            continue
    text = b"\n".join(parts)
    return re.sub(rb"\)\s*-?\d+(?:\.\d+)?\s*\(", b"", text)


# ------------------------------------------------------------------------------------------------------ the library


def test_loader_info_holds_no_identifying_dicom_field():
    from pneumo.io.decode import load_image
    from pneumo.pipeline import safe_facts

    markers = Markers.fresh()
    img = load_image(marked_dicom(markers, 320, 256), name="scan.dcm")
    assert img.info["format"] == "DICOM" and img.info["modality"] == "DX"  # the file was read as the DICOM it is
    blob = repr(img.info).encode() + repr(safe_facts(img.info)).encode()
    assert not leaks(blob, markers.all_needles())
    keys = {k.lower().replace("_", "") for k in img.info}
    assert not keys & {k.lower() for k in IDENTIFYING}
    assert not any(k.startswith(("patient", "institution", "referring", "accession")) for k in keys)


def test_report_and_csv_hold_no_identifying_dicom_field(tiny_model, monkeypatch):
    """Every text the report draws, the PNG and PDF bytes (PDF streams inflated) and the results CSV."""
    import matplotlib.figure
    import matplotlib.text

    from pneumo.pipeline import Models, analyze_bytes
    from pneumo.present.report import build_report
    from pneumo.present.table import result_row, to_csv

    drawn: list[str] = []
    real_savefig = matplotlib.figure.Figure.savefig

    def savefig(fig, *args, **kwargs):
        drawn.extend(t.get_text() for t in fig.findobj(matplotlib.text.Text))
        return real_savefig(fig, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig)
    import fpdf  # the PDF report is laid out with fpdf2: record every text it draws too

    for name in ("cell", "multi_cell"):
        real = getattr(fpdf.FPDF, name)

        def spy(self, *args, _real=real, **kwargs):
            drawn.append(str(kwargs.get("text", args[2] if len(args) > 2 else "")))
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(fpdf.FPDF, name, spy)
    markers = Markers.fresh()
    control = f"ctrl{secrets.token_hex(4)}"
    res = analyze_bytes(marked_dicom(markers, 320, 256), f"{control}.dcm", Models(tiny_model))
    assert res.has_probability and not res.error
    needles = markers.all_needles()
    for fmt in ("png", "pdf"):
        drawn.clear()
        anonymous = build_report(res, 0.5, tiny_model.metadata, target_class=1, fmt=fmt)
        assert not any(control in t for t in drawn), "the file name is printed only on request"
        assert control.encode() not in (pdf_plain(anonymous) if fmt == "pdf" else anonymous), "nor in the metadata"
        if fmt == "pdf":
            assert control not in pdf_text(anonymous) and "Image reference: none given" in pdf_text(anonymous)
        drawn.clear()
        data = build_report(res, 0.5, tiny_model.metadata, target_class=1, fmt=fmt, show_name=True)
        text = "\n".join(drawn).encode()
        assert any(f"File: {control}.dcm" in t for t in drawn), "control: asked for, the report draws the file name"
        assert "Modality DX" in text.decode()  # the display-safe facts are drawn
        assert not leaks(text, needles), f"{fmt} report draws {leaks(text, needles)}"
        blob = pdf_plain(data) if fmt == "pdf" else data
        if fmt == "pdf":  # the PNG draws the name in pixels only
            assert f"File: {control}.dcm" in pdf_text(data), "control: the PDF shows the printed name"
        assert not leaks(blob, needles), f"{fmt} report bytes hold {leaks(blob, needles)}"
    csv = to_csv([result_row(res, 0.5)])
    assert control.encode() in csv and not leaks(csv, needles)


# ------------------------------------------------------------------------------------------ the app, in-process


def _element_bytes(node) -> bytes:
    """Every element of an AppTest tree serialised (text, captions, metrics, dataframes' Arrow bytes, widgets)."""
    out: list[bytes] = []
    proto = getattr(node, "proto", None)
    if proto is not None and hasattr(proto, "SerializeToString"):
        out.append(proto.SerializeToString())
    for child in getattr(node, "children", {}).values():
        out.append(_element_bytes(child))
    return b"\n".join(out)


def test_app_page_and_logs_show_no_identifying_dicom_field(tiny_model_path, monkeypatch, caplog):
    """AppTest: one DICOM, then a table of two files; every element and every log record at DEBUG is searched."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("PNEUMO_MODEL", str(tiny_model_path))
    caplog.set_level(logging.DEBUG)  # root at DEBUG: pneumo.*, PIL, streamlit records all reach caplog
    markers = Markers.fresh()
    needles = markers.all_needles()
    control = f"ctrl{secrets.token_hex(4)}"
    dicom = marked_dicom(markers, 400, 320)
    png = marked_png("png-comment-token")

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    assert not at.exception
    caplog.clear()
    files = [(f"{control}.dcm", dicom, "application/dicom")]
    at.file_uploader(key="uploads").set_value(files).run()
    assert not at.exception and not at.error
    page = _element_bytes(at._tree)
    from pneumo.present.text import literal

    assert literal(f"{control}.dcm").encode() in page, "control: the page names the uploaded file (as literal text)"
    assert b"Modality: DX" in page, "control: the display-safe DICOM facts are shown"
    assert any(m.value.startswith("Model output: P(pneumonia) ") for m in at.markdown)  # control: a result
    assert not leaks(page, needles), f"page shows {leaks(page, needles)}"

    at.file_uploader(key="uploads").set_value([*files, ("second.png", png, "image/png")]).run()
    assert not at.exception
    table = at.dataframe[0].value
    assert list(table["file"]) == [f"{control}.dcm", "second.png"]
    page = _element_bytes(at._tree)
    assert not leaks(page, needles), f"results table page shows {leaks(page, needles)}"

    assert any(r.name.startswith("PIL") for r in caplog.records), "control: DEBUG records of the decoding are captured"
    logged = "\n".join(f"{r.name} {r.getMessage()} {r.args!r}" for r in caplog.records).encode()
    assert not leaks(logged, needles), f"logs hold {leaks(logged, needles)}"
    assert b"png-comment-token" not in logged


# ----------------------------------------------------------------------------------- the app, live in a browser


def _scan_roots() -> list[Path]:
    """Where a server could leave an upload: the temp dir, its working directory and the home dot-folders."""
    home = Path.home()
    roots = [Path(tempfile.gettempdir()), ROOT]
    roots += [home / d for d in (".streamlit", ".cache", ".config", ".keras", ".local", ".matplotlib")]
    return [r for r in roots if r.exists()]


def _snapshot(roots: list[Path], exclude: list[Path]) -> dict[str, tuple[int, int, int]]:
    """path -> (size, mtime_ns, ctime_ns) of every regular file under the roots, plus the files directly in home."""
    out: dict[str, tuple[int, int, int]] = {}
    skip = {str(p) for p in exclude}

    def add(path: str) -> None:
        try:
            st = os.stat(path, follow_symlinks=False)
        except OSError:
            return
        if st.st_mode & 0o170000 == 0o100000:  # regular files only (no sockets, fifos, links)
            out[path] = (st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    for root in roots:
        for folder, dirs, names in os.walk(root, onerror=lambda e: None):
            dirs[:] = [d for d in dirs if os.path.join(folder, d) not in skip]
            for name in names:
                add(os.path.join(folder, name))
    for entry in os.scandir(Path.home()):
        add(entry.path)
    return out


def _changed_files_holding(before, after, needles: dict[str, bytes]) -> dict[str, list[str]]:
    """New or changed files (of at most 256 MB) that contain any needle: path -> needle names."""
    found = {}
    for path, sig in after.items():
        if before.get(path) == sig or sig[0] > 256 * 2**20:
            continue
        try:
            data = Path(path).read_bytes()
        except OSError:
            continue
        if hit := leaks(data, needles):
            found[path] = hit
    return found


async def _live_session(url: str, dicom: tuple[str, bytes], png: tuple[str, bytes], warmup: bytes) -> dict:
    """Warm the server up with a plain image, then upload the DICOM, fetch every download, then add the PNG."""
    from playwright.async_api import async_playwright

    out: dict = {"downloads": {}, "media": {}}
    async with async_playwright() as pw:
        browser = await launch_chromium(pw)
        # Warm-up in its own session: one-off work (first Grad-CAM trace, matplotlib's font cache) happens before the
        # watched window.
        warm = await browser.new_page()
        await warm.goto(url)
        await upload(warm, [("warmup.png", warmup)], TIMEOUT_MS)
        await wait_for_result(warm, TIMEOUT_MS)
        await warm.get_by_role("button", name="Create the report").click()
        async with warm.expect_download(timeout=TIMEOUT_MS) as info:  # imports matplotlib, builds its font cache
            await warm.get_by_test_id("stDownloadButton").filter(has_text="Report (PDF)").click()
        await (await info.value).path()
        await warm.close()

        page = await browser.new_page(viewport={"width": 1400, "height": 1000})
        await page.goto(url)
        await page.locator('input[type="file"]').wait_for(state="attached", timeout=TIMEOUT_MS)
        out["window_start"] = time.time()
        await upload(page, [dicom], TIMEOUT_MS)
        await wait_for_result(page, TIMEOUT_MS)
        out["html_dicom"] = await page.content()
        out["text_dicom"] = await page.inner_text("body")
        await page.get_by_text("Print the file name on the report").click()  # the control below needs the name
        await page.get_by_role("button", name="Create the report").click()
        for label in ("Report (PDF)", "Report (PNG, 200 dpi)", "Overlay ("):
            async with page.expect_download(timeout=TIMEOUT_MS) as info:
                await page.get_by_test_id("stDownloadButton").filter(has_text=label).click()
            download = await info.value
            out["downloads"][label] = Path(await download.path()).read_bytes()
        srcs = await page.eval_on_selector_all("img", "els => els.map(e => e.src)")
        for src in {s for s in srcs if "/media/" in s}:
            with urllib.request.urlopen(src, timeout=30) as r:
                out["media"][src] = r.read()

        await upload(page, [png], TIMEOUT_MS)  # the uploader now holds two files: the results table
        await page.get_by_test_id("stDataFrame").wait_for(timeout=TIMEOUT_MS)
        await wait_for_result(page, TIMEOUT_MS)  # the detail of the first file under the table
        out["html_table"] = await page.content()
        out["text_table"] = await page.inner_text("body")
        out["window_end"] = time.time()
        await browser.close()
    return out


@pytest.mark.slow
def test_live_upload_leaves_no_trace_and_never_shows_patient_fields(tiny_model_path, monkeypatch):
    require_browser()
    markers = Markers.fresh()
    png_token = f"PNGTXT{secrets.token_hex(6)}"
    control = f"ctrl{secrets.token_hex(4)}"
    dicom = marked_dicom(markers)
    png = marked_png(png_token)
    assert len(dicom) > 2**20, "the DICOM must be larger than Starlette's 1 MB spooling limit"
    patient = markers.all_needles()
    upload_bytes = {
        **patient,
        "png-tEXt": png_token.encode(),
        **byte_windows(dicom, "dicom"),
        **byte_windows(png, "png"),
    }

    # The browser is the user's side: its profile and downloads go to a folder of its own, left out of the scan
    # (a short path: Chromium's singleton socket path must stay under 108 characters).
    client_tmp = Path(tempfile.mkdtemp(prefix="pneumo-client-"))
    roots = _scan_roots()
    before = _snapshot(roots, exclude=[client_tmp])
    try:
        with LiveServer(tiny_model_path) as server:
            monkeypatch.setenv("TMPDIR", str(client_tmp))  # set after the server started: only the browser sees it
            warmup = marked_png("warm-up image")
            out = asyncio.run(_live_session(server.url, (f"{control}.dcm", dicom), ("second.png", png), warmup))
            time.sleep(1.0)  # let the last log lines through the pipe
            events = server.audit(since=out["window_start"])
            log = server.log()
        after = _snapshot(roots, exclude=[client_tmp])
    finally:
        shutil.rmtree(client_tmp, ignore_errors=True)

    # 1. nothing of the uploads on disk: no changed file holds them, and no temp file was even opened meanwhile
    assert not _changed_files_holding(before, after, upload_bytes)
    temp = os.path.realpath(tempfile.gettempdir())
    during = [e for e in events if e.time <= out["window_end"] + 1.0]
    anonymous = [e for e in during if e.anonymous]
    assert not anonymous, f"the server wrote anonymous temporary files while receiving uploads: {anonymous}"
    in_temp = [e for e in during if os.path.realpath(e.path).startswith(temp + os.sep) or e.path == temp]
    assert not in_temp, f"the server opened temporary files while receiving uploads: {in_temp}"
    for e in during:
        if e.event == "open" and os.path.isfile(e.path):
            assert not leaks(Path(e.path).read_bytes(), upload_bytes), f"{e.path} holds upload bytes"

    # 2. the page (HTML and visible text, both views), every image it loads and every download
    for view in ("dicom", "table"):
        html, text = out[f"html_{view}"].encode(), out[f"text_{view}"].encode()
        assert f"{control}.dcm".encode() in html and f"{control}.dcm".encode() in text, "control: file name shown"
        assert not leaks(html + text, patient), f"{view} page shows {leaks(html + text, patient)}"
        assert png_token.encode() not in html + text
    assert b"Modality: DX" in out["text_dicom"].encode(), "control: the display-safe facts are on the page"
    assert len(out["media"]) >= 1, "control: the heatmap overlay was fetched (the radiograph view is sent on request)"
    for src, data in out["media"].items():
        assert not leaks(data, upload_bytes), f"{src} holds {leaks(data, upload_bytes)}"
    assert out["downloads"]["Report (PDF)"].startswith(b"%PDF")
    assert f"File: {control}.dcm" in pdf_text(out["downloads"]["Report (PDF)"]), "control: the PDF names the file"
    for label, data in out["downloads"].items():
        blob = pdf_plain(data) if data.startswith(b"%PDF") else data
        assert not leaks(blob, upload_bytes), f"download {label!r} holds {leaks(blob, upload_bytes)}"

    # 3. the server's log, with every logger at DEBUG
    assert re.search(r"^LOG DEBUG PIL\.PngImagePlugin: STREAM", log, re.M), "control: DEBUG records are captured"
    assert not leaks(log.encode(), upload_bytes), f"server log holds {leaks(log.encode(), upload_bytes)}"
    assert "Traceback" not in log
