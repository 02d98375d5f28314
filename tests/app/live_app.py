"""A real ``streamlit run app.py`` server and headless Chromium, for the load and privacy tests (not a test file).

The server runs in its own process, started through a small boot script that

- sets the root logger to DEBUG, so every library's log records (pneumo, PIL, pydicom if it propagated, matplotlib,
  TensorFlow, Streamlit, uvicorn) reach stderr; and
- installs a Python audit hook (``sys.addaudithook``) that prints one ``PNEUMO-AUDIT`` line for every file the server
  opens for writing, removes or renames. This sees what a look at the disk afterwards cannot: a temporary file that is
  deleted again, or an anonymous ``O_TMPFILE`` file that never has a name.

stdout and stderr come back through a pipe into memory (``LiveServer.log``); nothing of the server's output is written
to disk. ``LiveServer`` also samples the server's resident memory (``/proc/<pid>/status``) while it runs.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Debian's Chromium; Playwright never downloads a browser in this project (see .ci/run).
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# Seconds the server may take to answer its health check (it imports Streamlit; TensorFlow loads with the first page).
SERVER_START_S = 120

_BOOT = r"""
import logging, os, sys, time
logging.basicConfig(level=logging.DEBUG, stream=sys.stderr, format="LOG %(levelname)s %(name)s: %(message)s")
_WRITE = os.O_WRONLY | os.O_RDWR
_out = sys.__stderr__
def _audit(event, args):
    if event == "open":
        path, mode, flags = args
        if (isinstance(mode, str) and any(c in mode for c in "wax+")) or (isinstance(flags, int) and flags & _WRITE):
            _out.write(f"PNEUMO-AUDIT {time.time():.4f} open {flags} {path!r}\n")
    elif event in ("os.remove", "os.rename", "os.truncate", "os.rmdir", "shutil.copyfile", "shutil.move"):
        _out.write(f"PNEUMO-AUDIT {time.time():.4f} {event} 0 {args[0]!r}\n")
sys.addaudithook(_audit)
from streamlit.web import cli
sys.argv = ["streamlit", "run", *sys.argv[1:]]
cli.main()
"""
_AUDIT_LINE = re.compile(r"^PNEUMO-AUDIT (?P<t>[\d.]+) (?P<event>\S+) (?P<flags>-?\d+|None) (?P<path>.*)$")


def require_browser() -> None:
    """Skip (or, with PNEUMO_REQUIRE_BROWSER=1 as in CI, fail) when Playwright or Chromium is missing."""
    missing = []
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        missing.append("the playwright Python package")
    if not Path(CHROMIUM).exists():
        missing.append(f"Chromium at {CHROMIUM}")
    if missing:
        msg = "browser test needs " + " and ".join(missing) + " (apt-get install chromium)"
        if os.environ.get("PNEUMO_REQUIRE_BROWSER") == "1":
            pytest.fail(msg)
        pytest.skip(msg)


def write_report(report: dict, path: Path, env_var: str, what: str) -> str:
    """A measurement's JSON: into ``path``, also into $``env_var`` when set (for docs/performance.md), printed."""
    import json

    text = json.dumps(report, indent=1)
    path.write_text(text)
    if os.environ.get(env_var):
        Path(os.environ[env_var]).write_text(text)
    print(f"\n{what}: {text}")
    return text


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _proc_status_kb(pid: int, field: str) -> int | None:
    """A ``kB`` field (VmRSS, VmHWM) of /proc/<pid>/status, or None where /proc is missing or the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


@dataclass(frozen=True)
class AuditEvent:
    """One file operation of the server process: event is 'open' (for writing), 'os.remove', 'os.rename', ..."""

    time: float
    event: str
    flags: int
    path: str

    @property
    def anonymous(self) -> bool:
        """An O_TMPFILE open: a file without a name, whose contents are on disk but never in a directory."""
        return self.event == "open" and bool(self.flags & getattr(os, "O_TMPFILE", 0) & ~getattr(os, "O_DIRECTORY", 0))


class LiveServer:
    """``streamlit run app.py`` on a free port with the model at ``model_path``; use as a context manager."""

    def __init__(self, model_path: Path, sample_every_s: float = 0.05) -> None:
        self.model_path = Path(model_path)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.lines: list[str] = []  # everything the server printed (stdout + stderr), audit lines included
        self.peak_rss_kb = 0  # highest sampled VmRSS
        self.rss_samples: list[tuple[float, int]] = []  # (time.time(), VmRSS kB)
        self._sample_every_s = sample_every_s
        self._proc: subprocess.Popen[str] | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # ---- lifecycle
    def __enter__(self) -> LiveServer:
        env = {
            **os.environ,
            "PNEUMO_MODEL": str(self.model_path),
            "PYTHONUNBUFFERED": "1",
            "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false",
        }
        cmd = [sys.executable, "-c", _BOOT, "app.py", "--server.port", str(self.port), "--server.address", "127.0.0.1",
               "--server.headless", "true", "--logger.level", "debug"]  # fmt: skip
        self._proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
        )
        self._threads = [
            threading.Thread(target=self._read_output, daemon=True),
            threading.Thread(target=self._sample_memory, daemon=True),
        ]
        for t in self._threads:
            t.start()
        try:
            self._wait_healthy()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=5)
        for t in self._threads:
            t.join(timeout=5)

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + SERVER_START_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"streamlit exited with {self._proc.returncode}:\n{self.tail()}")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(self.url + "_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        return
            time.sleep(0.3)
        raise RuntimeError(f"streamlit did not become healthy in {SERVER_START_S} s:\n{self.tail()}")

    def _read_output(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def _sample_memory(self) -> None:
        assert self._proc is not None
        while not self._stop.is_set() and self._proc.poll() is None:
            rss = _proc_status_kb(self._proc.pid, "VmRSS")
            if rss is not None:
                self.rss_samples.append((time.time(), rss))
                self.peak_rss_kb = max(self.peak_rss_kb, rss)
            self._stop.wait(self._sample_every_s)

    # ---- what the server did
    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def rss_kb(self) -> int | None:
        """The server's resident memory now (kB)."""
        return _proc_status_kb(self.pid, "VmRSS")

    def hwm_kb(self) -> int | None:
        """The server's resident-memory high-water mark since it started (kB), from the kernel."""
        return _proc_status_kb(self.pid, "VmHWM")

    def log(self) -> str:
        """Everything the server printed, except the audit lines (those are the test's instrument)."""
        return "\n".join(line for line in self.lines if not line.startswith("PNEUMO-AUDIT "))

    def tail(self, n: int = 60) -> str:
        return "\n".join(self.log().splitlines()[-n:])

    def audit(self, since: float = 0.0) -> list[AuditEvent]:
        """File operations of the server process from ``since`` (time.time()) on."""
        out = []
        for line in list(self.lines):
            m = _AUDIT_LINE.match(line)
            if m and float(m["t"]) >= since:
                flags = 0 if m["flags"] == "None" else int(m["flags"])
                out.append(AuditEvent(float(m["t"]), m["event"], flags, _unrepr(m["path"])))
        return out


def _unrepr(text: str) -> str:
    """The path from its repr (a str, bytes or int fd)."""
    import ast

    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text
    return os.fsdecode(value) if isinstance(value, (bytes, str)) else str(value)


async def launch_chromium(playwright):
    """Headless Debian Chromium with the flags a CI container needs."""
    return await playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)


async def wait_for_result(page, timeout_ms: int) -> None:
    """Wait until the Analyze page shows a probability, its images and report button, and the script run has ended."""
    await output_line(page).wait_for(timeout=timeout_ms)
    await page.get_by_role("button", name="Create the report").wait_for(timeout=timeout_ms)  # end of the detail
    await page.get_by_test_id("stImage").first.wait_for(timeout=timeout_ms)  # the heatmap
    await page.wait_for_timeout(300)  # the "running" indicator appears with a short delay
    await page.get_by_test_id("stStatusWidget").wait_for(state="detached", timeout=timeout_ms)


# The page's model-output line (pneumo.present.text.model_output_line): the probability and the threshold's side.
OUTPUT_LINE = re.compile(r"Model output(?:, [^:]+)?: P\(pneumonia\) (?:= )?(.+?%)[,.](?: .*the model's (\w+) side\.)?")


def output_line(page):
    """The locator of the Analyze page's model-output line (one paragraph, ordinary type)."""
    return page.get_by_test_id("stMarkdown").filter(has_text="Model output").first


async def shown_probability(page) -> str:
    """The probability the model-output line shows, e.g. '43.2%'."""
    return OUTPUT_LINE.search(await output_line(page).inner_text()).group(1)


async def shown_side(page) -> str | None:
    """The threshold side the model-output line names ('NORMAL' or 'PNEUMONIA'); None out of scope."""
    return OUTPUT_LINE.search(await output_line(page).inner_text()).group(2)


def shows_probability(shown: str, p: float) -> bool:
    """True when ``shown`` (a page's text for a probability: pneumo.present.text.format_probability, one decimal of a
    percentage, '> 99.9%' / '< 0.1%' at the ends) is what ``p`` gives, ``p`` being rounded to 6 decimals (the CLI)."""
    from pneumo.present.text import format_probability

    return shown.strip() in {format_probability(p + d) for d in (-5e-7, 0.0, 5e-7)}


async def upload(page, files: list[tuple[str, bytes]], timeout_ms: int) -> None:
    """Put files into the page's file uploader, from memory (Playwright sends the bytes; no file is written)."""
    field = page.locator('input[type="file"]')
    await field.wait_for(state="attached", timeout=timeout_ms)
    await field.set_input_files([{"name": n, "mimeType": "application/octet-stream", "buffer": d} for n, d in files])
