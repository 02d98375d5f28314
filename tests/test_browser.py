"""End to end in a real browser: `streamlit run app.py` on a free port, driven by Debian's Chromium via Playwright.

Uses the committed model when it exists (else the tiny fixture model; $PNEUMO_MODEL overrides both). Screenshots of
every page at 1280x800 go to $PNEUMO_SCREENSHOTS when set, else to a pytest temporary folder. Chromium comes from
the system (`apt-get install chromium`); Playwright never downloads a browser here.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from pneumo import config
from pneumo.analysis import format_probability
from tests.conftest import ROOT

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("PNEUMO_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
VIEWPORT = {"width": 1280, "height": 800}
SAMPLE = ROOT / "assets" / "samples" / "pneumonia_person724_virus_1343.jpeg"
PAGES = {"analyze": "", "stages": "stages", "model_card": "model-card", "about": "about"}
MAX_RSS_MB = 1024  # the app must fit Streamlit Community Cloud's memory


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss_mb(pid: int, field: str = "VmRSS") -> float:
    """Resident memory of a process in MB (VmRSS: all, RssAnon: private, without shared library pages)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


@pytest.fixture(scope="module")
def model_path(app_model_path) -> Path:
    return app_model_path


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("PNEUMO_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def server(model_path):
    """(base url, process) of a real Streamlit server running app.py."""
    port = _free_port()
    env = {**os.environ, config.MODEL_ENV_VAR: str(model_path), "TF_CPP_MIN_LOG_LEVEL": "2"}
    cmd = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
           "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false",
           "--client.showErrorDetails", "full"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.read().strip() == b"ok":
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"streamlit did not start:\n{proc.stdout.read()}")
        time.sleep(0.5)
    yield url, proc
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def browser():
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        yield b
        b.close()


def _settle(page, timeout_ms: int = 60_000) -> None:
    """Wait until the script run has finished and every st.image on the page shows a decoded image."""
    page.wait_for_timeout(500)
    page.wait_for_selector('[data-testid="stStatusWidget"]', state="detached", timeout=timeout_ms)
    page.wait_for_function(
        """() => [...document.querySelectorAll('[data-testid="stImage"]')].every(
             d => { const i = d.querySelector('img'); return i && i.complete && i.naturalWidth > 0; })""",
        timeout=timeout_ms,
    )
    page.wait_for_timeout(500)


_SCROLLER_JS = """() => {
  const els = [...document.querySelectorAll('*')].filter(e => {
    const s = getComputedStyle(e);
    return (s.overflowY === 'auto' || s.overflowY === 'scroll') && e.scrollHeight > e.clientHeight + 5;
  });
  els.sort((a, b) => b.clientWidth * b.clientHeight - a.clientWidth * a.clientHeight);
  if (!els.length) return null;
  els[0].setAttribute('data-pneumo-scroller', '1');
  return [els[0].scrollHeight, els[0].clientHeight];
}"""


def _screenshots(page, folder: Path, stem: str, max_shots: int = 8) -> list[Path]:
    """Viewport screenshots (1280x800) of the whole page, scrolling Streamlit's main container between them."""
    paths = [folder / f"{stem}.png"]
    page.screenshot(path=paths[0])
    dims = page.evaluate(_SCROLLER_JS)
    if not dims:
        return paths
    total, visible = dims
    step = visible - 80  # keep some overlap so nothing falls between two shots
    for k in range(1, max_shots):
        if k * step >= total - visible + step:
            break
        page.evaluate(f"document.querySelector('[data-pneumo-scroller]').scrollTop = {k * step}")
        page.wait_for_timeout(250)
        paths.append(folder / f"{stem}_{k}.png")
        page.screenshot(path=paths[-1])
    page.evaluate("document.querySelector('[data-pneumo-scroller]').scrollTop = 0")
    return paths


def _no_exception(page) -> None:
    errors = page.locator('[data-testid="stException"]')
    assert errors.count() == 0, errors.first.inner_text()


def _cli_probability(model: Path, image: Path) -> float:
    out = subprocess.run(
        [sys.executable, "-m", "pneumo.predict", "--quiet", "--model", str(model), str(image)],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=300,
    )  # fmt: skip
    (row,) = list(csv.DictReader(io.StringIO(out.stdout)))
    return float(row["probability"])


def test_upload_in_browser_matches_cli(server, browser, model_path, shots):
    url, proc = server
    page = browser.new_page(viewport=VIEWPORT)
    page.goto(url)
    page.get_by_role("heading", name="Analyze a chest X-ray").wait_for(timeout=90_000)
    _settle(page)
    page.screenshot(path=shots / "analyze_empty.png")

    start = time.monotonic()
    page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(str(SAMPLE))
    value = page.locator('[data-testid="stMetric"]', has_text="Probability of pneumonia").locator(
        '[data-testid="stMetricValue"]'
    )
    value.wait_for(timeout=120_000)
    seconds = time.monotonic() - start
    _settle(page)
    _no_exception(page)
    _screenshots(page, shots, "analyze_result")

    shown = value.inner_text().strip()
    cli = _cli_probability(model_path, SAMPLE)
    # the page shows one decimal of a percentage; the CLI six decimals of the probability
    expected = format_probability(cli)
    assert shown == expected or abs(float(shown.rstrip("%")) - 100 * cli) <= 0.05 + 1e-6, (shown, cli)
    assert page.locator('[data-testid="stImage"]').count() >= 2  # original and Grad-CAM overlay
    rss, anon = _rss_mb(proc.pid), _rss_mb(proc.pid, "RssAnon")
    print(f"\nupload to probability {seconds:.1f} s; server RSS {rss:.0f} MB ({anon:.0f} MB private); "
          f"shown {shown}, CLI {cli:.6f}")  # fmt: skip
    assert rss < MAX_RSS_MB


@pytest.mark.parametrize("name", list(PAGES))
def test_every_page_renders_without_error(server, browser, shots, name):
    url, _ = server
    page = browser.new_page(viewport=VIEWPORT)
    page.goto(f"{url}/{PAGES[name]}")
    page.locator("h1").first.wait_for(timeout=90_000)
    _settle(page)
    _no_exception(page)
    assert page.locator('[data-testid="stAlertContentError"]').count() == 0
    _screenshots(page, shots, f"page_{name}")
