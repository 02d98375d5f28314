"""What a visitor waits for, timed in a real browser: cold start and upload -> probability on the page.

Run through the benchmark (needs the dev requirements, for Playwright, and Debian's ``chromium``):
    python -m pneumo.bench --browser assets/samples/*.jpeg        # a fresh `streamlit run app.py`, headless Chromium

Cold start: the server is started, then timed to its health check, to the first painted Analyze page, and to the first
probability on the page for the first file uploaded as soon as the page is there (``cold_start``), and, on a second
fresh server, uploaded ``COLD_PAUSE_S`` seconds after the page painted (``cold_start_after_a_pause``: the models load
in the background meanwhile).
Upload -> probability, from handing a file to the uploader to its probability being on the page (median and max):
- ``upload_to_probability_s``: the cold-start visitor going on with the other files one after another in the same
  session (each file removed from the uploader before the next is given);
- ``new_visitor_upload_to_probability_s``: each of the first ``NEW_VISITORS`` files as the first upload of a fresh
  browser page; this also counts the browser fetching the result's JavaScript components.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from pneumo import config

CHROMIUM = "/usr/bin/chromium"  # Debian's Chromium: nothing is downloaded
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
HEADING = "Analyze a chest X-ray"  # the Analyze page's title
RESULT = "Model output: P(pneumonia)"  # the line that carries the result (pneumo.present.text.model_output_line)
TIMEOUT_MS = 180_000  # a cold start on a slow machine
NEW_VISITORS = 8  # fresh pages timed (each loads the front end anew: slower and more variable)
COLD_PAUSE_S = 8.0  # a visitor who takes this long to pick a file after the first page painted


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_healthy(url: str, proc: subprocess.Popen, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the app did not start")
        time.sleep(0.05)


def _upload(page, file: Path) -> float:
    """Hand ``file`` to the uploader; seconds until its probability is on the page."""
    t0 = time.perf_counter()
    page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(str(file))
    page.get_by_test_id("stMarkdown").filter(has_text=RESULT).first.wait_for(timeout=TIMEOUT_MS)
    return time.perf_counter() - t0


def _remove_upload(page) -> None:
    """Take the uploaded file off the uploader and wait until the page is idle again."""
    page.locator('[data-testid="stFileChipDeleteBtn"] button').first.click()
    page.get_by_test_id("stMarkdown").filter(has_text=RESULT).first.wait_for(state="detached", timeout=TIMEOUT_MS)
    _idle(page)


def _idle(page) -> None:
    page.wait_for_selector('[data-testid="stStatusWidget"]', state="detached", timeout=TIMEOUT_MS)
    page.wait_for_timeout(300)


def _stats(seconds: list[float]) -> dict[str, Any]:
    return {"median": round(float(np.median(seconds)), 3), "max": round(float(np.max(seconds)), 3),
            "n": len(seconds), "each": [round(u, 3) for u in seconds]}  # fmt: skip


def _open(browser, url: str, settle: bool = True):
    """A new visitor on the Analyze page; ``settle``: also wait until the page's script run has finished."""
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(url)
    page.get_by_role("heading", name=HEADING).wait_for(timeout=TIMEOUT_MS)
    if settle:  # the page is idle, as when a visitor has found the uploader
        _idle(page)
    return page


def _start_server() -> tuple[str, subprocess.Popen]:
    port = _free_port()
    cmd = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
           "--server.port", str(port), "--browser.gatherUsageStats", "false"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=config.ROOT_DIR, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})  # fmt: skip
    return f"http://127.0.0.1:{port}", proc


def _cold_start(browser, file: Path, pause_s: float = 0.0):
    """Start a server; time its health check, the first painted page and the first result of ``file``, uploaded
    ``pause_s`` after the page painted (a visitor choosing a file). Returns (timings, url, proc, page)."""
    t0 = time.perf_counter()
    url, proc = _start_server()
    _wait_healthy(url, proc)
    health_s = time.perf_counter() - t0
    page = _open(browser, url, settle=False)
    page_s = time.perf_counter() - t0
    page.wait_for_timeout(pause_s * 1000)
    upload_s = _upload(page, file)
    timings = {"health_s": round(health_s, 2), "first_page_s": round(page_s, 2), "pause_s": pause_s,
               "first_upload_to_result_s": round(upload_s, 2),
               "first_result_s": round(time.perf_counter() - t0, 2)}  # fmt: skip
    return timings, url, proc, page


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(timeout=30)


def measure_browser(files: list[Path]) -> dict[str, Any]:
    """Cold start and upload -> probability times of ``files`` (see the module docstring)."""
    from playwright.sync_api import sync_playwright

    if len(files) < 2:
        raise ValueError("give at least two image files")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        try:
            cold, url, proc, page = _cold_start(browser, files[0])
            try:
                _idle(page)
                session = []
                for f in files[1:]:  # the same visitor, one file after another (the first is already on the page)
                    _remove_upload(page)
                    session.append(_upload(page, f))
                    _idle(page)
                page.close()
                visitors = []
                for f in files[:NEW_VISITORS]:
                    page = _open(browser, url)
                    visitors.append(_upload(page, f))
                    page.close()
            finally:
                _stop(proc)
            paused, _, proc, _ = _cold_start(browser, files[0], COLD_PAUSE_S)  # a second fresh server
            _stop(proc)
        finally:
            browser.close()
    return {
        "cold_start": cold,
        "cold_start_after_a_pause": paused,
        "upload_to_probability_s": _stats(session) if session else None,
        "new_visitor_upload_to_probability_s": _stats(visitors),
        "files": [f.name for f in files],
        "viewport": "1280x800, headless Chromium",
    }
