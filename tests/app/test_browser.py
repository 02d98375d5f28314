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
from tests.app.live_app import CHROMIUM as SYSTEM_CHROMIUM
from tests.app.live_app import OUTPUT_LINE, require_browser, shows_probability
from tests.conftest import ROOT

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("PNEUMO_CHROMIUM") or SYSTEM_CHROMIUM
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
def models(model_path):
    """The server's models, loaded here as pneumo.pipeline loads them (for the expected numbers)."""
    from pneumo.pipeline import load_models

    return load_models(model_path)


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
    require_browser()  # skips without Playwright or Chromium; fails instead with PNEUMO_REQUIRE_BROWSER=1 (CI)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        yield b
        b.close()


def _output_line(page):
    """The Analyze page's model-output line (pneumo.present.text.model_output_line), ordinary type."""
    return page.get_by_test_id("stMarkdown").filter(has_text="Model output").first


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
    _output_line(page).wait_for(timeout=120_000)
    seconds = time.monotonic() - start
    _settle(page)
    _no_exception(page)
    _screenshots(page, shots, "analyze_result")

    shown = OUTPUT_LINE.search(_output_line(page).inner_text()).group(1)
    cli = _cli_probability(model_path, SAMPLE)
    # the page shows one decimal of a percentage; the CLI six decimals of the probability
    assert shows_probability(shown, cli), (shown, cli)
    assert page.locator('[data-testid="stImage"]').count() == 1  # the Grad-CAM overlay (the radiograph on request)
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


def _analyze_sample(page, url: str, sample_option: str | None = None) -> None:
    """Open the Analyze page, switch to the samples and wait for the result."""
    page.goto(url)
    page.get_by_role("heading", name="Analyze a chest X-ray").wait_for(timeout=90_000)
    page.get_by_test_id("stRadioGroup").get_by_text("Try a sample image").click()
    if sample_option:
        page.get_by_test_id("stSelectbox").first.click()
        page.get_by_role("option", name=sample_option).click()
    _output_line(page).wait_for(timeout=120_000)
    _settle(page)


def _threshold_box(page):
    """The decision-threshold slider's widget (the opacity slider comes first on the page)."""
    return page.get_by_test_id("stSlider").filter(has_text="Decision threshold")


def _threshold(page) -> float:
    """The threshold the slider shows, as a fraction ('49%' -> 0.49)."""
    return float(_threshold_box(page).get_by_test_id("stSliderThumbValue").inner_text().strip().rstrip("%")) / 100


def test_alias_url_analyze_opens_the_analyze_page(server, browser):
    url, _ = server
    page = browser.new_page(viewport=VIEWPORT)
    page.goto(f"{url}/analyze")
    page.get_by_role("heading", name="Analyze a chest X-ray").wait_for(timeout=90_000)
    assert "Page not found" not in page.content()


def test_independent_figures_and_wording_at_several_thresholds(server, browser, model_path, models, shots):
    """Independent figures (or the sentence that there are none) next to the operating point; label and wording
    match the sample's probability, as pneumo.pipeline computes it, at every threshold."""
    from pneumo.io.samples import list_samples
    from pneumo.pipeline import analyze_bytes, label_for
    from pneumo.present import evaluation as ev
    from pneumo.present import text as pr

    url, _ = server
    sample = list_samples()[0]  # the sample the page analyses first
    p = analyze_bytes(sample.path.read_bytes(), sample.file, models).probability
    page = browser.new_page(viewport=VIEWPORT)
    _analyze_sample(page, url)
    _no_exception(page)
    main = page.get_by_test_id("stMain")
    main.get_by_role("heading", name=sample.file).first.wait_for()  # control: the page shows that sample
    # the sentence next to the operating point: the figures on new patients, or that there are none
    main.get_by_text(ev.headline(ev.load_evaluation(model_path), markdown=False)).first.wait_for()
    shown = OUTPUT_LINE.search(_output_line(page).inner_text()).group(1)
    assert shown == pr.format_probability(p), (shown, p)
    slider = _threshold_box(page).get_by_role("slider")
    thresholds = []
    for key in ("Home", "End", "PageDown"):  # 0.01, 0.99 and somewhere in between
        slider.focus()
        slider.press(key)
        _settle(page)
        t = _threshold(page)
        thresholds.append(t)
        value = OUTPUT_LINE.search(_output_line(page).inner_text()).group(2)  # the threshold's side it names
        assert value == label_for(p, t), (value, p, t)
        # the whole model-output sentence, as the report words it, and the position badge ('Far above the threshold')
        for phrase in (pr.model_output_line(p, t, models.threshold), pr.verdict(p, t).position_text):
            page.wait_for_function(
                "x => document.querySelector('[data-testid=stMain]').innerText.includes(x)", arg=phrase, timeout=10_000
            )
        assert "confident" not in main.inner_text().lower()
    assert thresholds[:2] == [0.01, 0.99] and 0.01 < thresholds[2] < 0.99, thresholds  # the slider did move
    page.screenshot(path=shots / "analyze_threshold_moved.png")


def test_report_download_right_after_a_slider_move(server, browser, models, shots):
    """Move the threshold and ask for the report at once: the PDF arrives and carries the new threshold."""
    url, _ = server
    page = browser.new_page(viewport=VIEWPORT, accept_downloads=True)
    _analyze_sample(page, url)
    slider = _threshold_box(page).get_by_role("slider")
    slider.focus()
    slider.press("ArrowLeft")  # and no waiting for the rerun
    page.get_by_role("button", name="Create the report").click()
    t = _threshold(page)
    button = page.get_by_test_id("stDownloadButton").filter(has_text="Report (PDF)")
    button.wait_for(timeout=60_000)
    with page.expect_download(timeout=60_000) as info:
        button.click()
    data = Path(info.value.path()).read_bytes()
    assert data.startswith(b"%PDF")
    from pneumo.present.text import format_threshold

    assert t != pytest.approx(models.threshold), "control: the threshold moved before the report was asked for"
    assert f"the chosen threshold {format_threshold(t)}".encode() in data, "the report is for the threshold on screen"
    pdftoppm = shutil.which("pdftoppm")
    if pdftoppm:  # render it, as a reader's PDF viewer would, for the screenshots folder
        (shots / "report.pdf").write_bytes(data)
        subprocess.run([pdftoppm, "-png", "-r", "80", str(shots / "report.pdf"), str(shots / "report")], check=True)


def test_selecting_a_table_row_opens_its_detail(server, browser, shots):
    url, _ = server
    page = browser.new_page(viewport=VIEWPORT)
    _analyze_sample(page, url, "All samples (results table)")
    grid = page.get_by_test_id("stDataFrame").first
    grid.wait_for()
    page.screenshot(path=shots / "analyze_table.png")
    names = [page.get_by_role("heading", level=3).last.inner_text().strip()]
    box = grid.bounding_box()
    # glide-data-grid: header row then rows of about 35 px; the first column holds the row-selection boxes
    page.mouse.click(box["x"] + 14, box["y"] + 35 + 35 * 0 + 17)
    _settle(page)
    names.append(page.get_by_role("heading", level=3).last.inner_text().strip())
    from pneumo.io.samples import list_samples

    first = list_samples()[0].file
    assert not names[0].startswith(first) and names[1].startswith(first), names  # the first row's file, not the newest
    _no_exception(page)
    page.screenshot(path=shots / "analyze_row_selected.png")


def test_a_markdown_image_as_file_name_fetches_nothing_and_shows_literally(server, browser):
    """A file named like a markdown image pointing at a local listener: the browser never requests it, and the page
    shows the name as it is (heading, facts); a name holding a coloured directive shows no coloured text either."""
    import http.server
    import threading

    from pneumo.present.text import WORD_JOINER

    hits: list[str] = []

    class Listener(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server interface
            hits.append(self.path)
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args) -> None:  # quiet
            pass

    listener = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Listener)
    port = listener.server_address[1]
    threading.Thread(target=listener.serve_forever, daemon=True).start()
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/control", timeout=5).close()
    except urllib.error.HTTPError:
        pass
    assert hits == ["/control"], "control: the listener records requests"
    hits.clear()
    url, _ = server
    names = [f"![b](http://127.0.0.1:{port}/x.png)", ":red-background[**PNEUMONIA CONFIRMED**] $x^2$.jpeg"]
    page = browser.new_page(viewport=VIEWPORT)
    try:
        page.goto(url)
        page.get_by_role("heading", name="Analyze a chest X-ray").wait_for(timeout=90_000)
        field = page.locator('[data-testid="stFileUploader"] input[type="file"]')
        for i, name in enumerate(names):  # the uploader keeps the first file: one file (h4 heading), then two (table)
            field.set_input_files([{"name": name, "mimeType": "image/jpeg", "buffer": SAMPLE.read_bytes()}])
            if i:
                page.get_by_test_id("stDataFrame").wait_for(timeout=120_000)
            _output_line(page).wait_for(timeout=120_000)
            _settle(page)
            _no_exception(page)
            main = page.locator('[data-testid="stMain"]')
            heading = main.locator("h4").first if i == 0 else main.locator("h3").last  # the newest file's detail
            shown = heading.inner_text().strip().replace(WORD_JOINER, "")  # joiners: invisible, they stop autolinks
            assert shown == name  # the name exactly as it was, as text
            srcs = page.eval_on_selector_all("img", "els => els.map(e => e.src)")
            assert not [s for s in srcs if str(port) in s]
            bad = main.locator("span.katex, a[href*='127.0.0.1'], [class*='stMarkdownColoredBackground']")
            assert bad.count() == 0, [bad.nth(i).evaluate("e => e.outerHTML") for i in range(bad.count())]
        page.wait_for_timeout(1000)
    finally:
        page.close()
        listener.shutdown()
    assert hits == [], f"the browser fetched {hits} from a file name"
