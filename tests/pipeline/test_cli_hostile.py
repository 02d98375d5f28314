"""The prediction CLI under hostile names, files and conditions: formula and escape-code names, devices and FIFOs,
DICOMs without a suffix, signals, a closed pipe, full or unwritable outputs, and overlays that must never overwrite
a file or be analysed again. The subprocess tests run ``python -m pneumo.predict`` as a user does."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pneumo import predict
from pneumo.pipeline import Models, analyze_bytes
from pneumo.predict import HEATMAP_MARK, main
from pneumo.present.table import COLUMNS, result_row, to_csv
from pneumo.present.text import printable, spreadsheet_safe
from tests.conftest import ROOT, synthetic_xray
from tests.corpus import dicom_bytes

FORMULA_NAMES = ["=cmd|' -C calc'!A0.png", "+1+1.png", "-2+3.png", "@SUM(A1).png"]
CONTROLS = "\x1b\x07\x9b\x7f"


def _png(path: Path, seed: int = 0) -> Path:
    Image.fromarray(synthetic_xray(seed=seed)).save(path)
    return path


def _rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def _cli(*args: str, timeout: float = 180, **kw) -> subprocess.CompletedProcess:
    """``python -m pneumo.predict *args`` (stdout and stderr captured unless ``kw`` says otherwise)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    cmd = [sys.executable, "-m", "pneumo.predict", *args]
    kw = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, **kw}
    return subprocess.run(cmd, cwd=ROOT, env=env, timeout=timeout, **kw)


def _popen(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    cmd = [sys.executable, "-m", "pneumo.predict", *args]
    # bufsize=0: readline takes exactly one line, so communicate() (which reads the pipe itself) loses nothing
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0, **kw)


# ---- text: one rule for both CSVs ---------------------------------------------------------------------------------
def test_spreadsheet_safe_and_printable():
    for name in FORMULA_NAMES + ["\tTAB", "\rCR", "\uff1dFULLWIDTH"]:
        assert spreadsheet_safe(name).startswith("'"), name
    for name in ("a=b.png", "scan 1.png", "0.5", "'quoted"):
        assert spreadsheet_safe(name) == name  # nothing else changes
    assert printable("a\x1b[31mb\x07c\x7fd\x9be\u202ef") == "a\\x1b[31mb\\x07c\\x7fd\\x9be\\u202ef"
    assert printable(os.fsdecode(b"bad\xff.png")) == "bad\\xff.png"  # a byte that is not UTF-8: shown as that byte
    assert printable("Ünïcödé scan.png") == "Ünïcödé scan.png"
    assert spreadsheet_safe("=x\x1b") == "'=x\\x1b"


def test_app_csv_neutralises_formula_names(tiny_model):
    models = Models(tiny_model)
    buf = io.BytesIO()
    Image.fromarray(synthetic_xray(seed=4)).save(buf, "PNG")
    results = [analyze_bytes(buf.getvalue(), name, models) for name in FORMULA_NAMES]
    results.append(analyze_bytes(b"not an image", '=HYPERLINK("http://example.invalid").png', models))
    rows = list(csv.reader(io.StringIO(to_csv(result_row(r, 0.5) for r in results).decode())))
    assert rows[0] == list(COLUMNS)
    for (file, prob, label, threshold, *_rest), res in zip(rows[1:], results, strict=True):
        assert file == "'" + res.name  # a spreadsheet shows the name, does not run it
        if res.has_probability:
            assert prob == f"{res.probability:.6f}" and float(prob) >= 0  # the number is untouched
        assert label[0] not in "=+-@" and threshold == "0.5000"


# ---- the CLI's table ------------------------------------------------------------------------------------------------
def test_cli_csv_neutralises_formula_names_and_keeps_numbers(capsys, tiny_model_path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for i, name in enumerate(FORMULA_NAMES):
        _png(tmp_path / name, seed=i)
    (tmp_path / "=broken.png").write_bytes(b"not a png")
    code = main(["--model", str(tiny_model_path), "--", *FORMULA_NAMES, "=broken.png"])
    rows = _rows(capsys.readouterr().out)
    assert code == 2
    assert [r["path"] for r in rows] == ["'" + n for n in FORMULA_NAMES + ["=broken.png"]]
    for r in rows[:-1]:
        assert r["label"] in ("NORMAL", "PNEUMONIA") and 0 <= float(r["probability"]) <= 1
    assert rows[-1]["label"] == "ERROR" and rows[-1]["error"] and rows[-1]["error"][0] not in "=+-@"


def test_escape_codes_never_reach_the_terminal_or_the_table(tiny_model_path, tmp_path):
    d = tmp_path / "names"
    d.mkdir()
    names = [f"esc{CONTROLS}]0;title.png", os.fsdecode(b"latin1-\xe9.png")]
    for i, name in enumerate(names):
        _png(d / name, seed=i)
    (d / "note\x1b[2J.txt").write_text("skipped, and named escaped")
    res = _cli("--model", str(tiny_model_path), str(d))
    assert res.returncode == 0, res.stderr[-2000:]
    for stream in (res.stdout, res.stderr):
        assert not any(chr(c) in stream.decode("utf-8", "replace") for c in (0x1B, 0x07, 0x9B, 0x7F))
    out = res.stdout.decode()
    assert "esc\\x1b\\x07\\x9b\\x7f]0;title.png" in out and "latin1-\\xe9.png" in out
    assert "note\\x1b[2J.txt" in res.stderr.decode()
    res = _cli("--model", str(tiny_model_path), "--format", "json", str(d))
    paths = [Path(r["path"]).name for r in json.loads(res.stdout)]
    assert paths == sorted(["esc\\x1b\\x07\\x9b\\x7f]0;title.png", "latin1-\\xe9.png"])


def test_jsonl_format_one_object_per_line(capsys, tiny_model_path, tmp_path):
    for i in range(3):
        _png(tmp_path / f"{i}.png", seed=i)
    assert main(["--model", str(tiny_model_path), "--format", "jsonl", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and [Path(json.loads(x)["path"]).name for x in lines] == ["0.png", "1.png", "2.png"]


# ---- what is read ---------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_devices_fifos_and_sockets_are_refused_not_read(tiny_model_path, tmp_path):
    """/dev/zero never ends and a FIFO with no writer blocks its reader: both must be refused without being read
    (a regression hangs or eats memory, and the subprocess timeout fails the test)."""
    fifo = tmp_path / "scan.png"
    os.mkfifo(fifo)
    sock_path = tmp_path / "s.png"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(sock_path))
    try:
        res = _cli("--model", str(tiny_model_path), "/dev/zero", str(fifo), str(sock_path), timeout=120)
    finally:
        sock.close()
    rows = _rows(res.stdout.decode())
    assert res.returncode == 2, res.stderr[-2000:]
    assert [r["label"] for r in rows] == ["ERROR"] * 3
    assert "character device" in rows[0]["error"] and "FIFO" in rows[1]["error"] and "socket" in rows[2]["error"]


def test_folder_scan_names_fifos_links_and_devices_it_skips(capsys, tiny_model_path, tmp_path):
    d = tmp_path / "scan"
    d.mkdir()
    _png(d / "a.png")
    os.mkfifo(d / "pipe.png")
    (d / "dangling.png").symlink_to(tmp_path / "nowhere.png")
    (d / "zero.png").symlink_to("/dev/zero")
    (d / "folderlink").symlink_to(tmp_path, target_is_directory=True)
    assert main(["--model", str(tiny_model_path), str(d)]) == 0
    captured = capsys.readouterr()
    assert [Path(r["path"]).name for r in _rows(captured.out)] == ["a.png"]
    assert "skipped 4 file(s)" in captured.err
    lines = {ln.split()[0]: ln for ln in captured.err.splitlines() if ln.startswith("  ")}
    assert "FIFO" in lines[str(d / "pipe.png")] and "broken link" in lines[str(d / "dangling.png")]
    assert "character device" in lines[str(d / "zero.png")] and "folder" in lines[str(d / "folderlink")]


def test_folder_scan_finds_dicom_without_a_suffix(capsys, tiny_model_path, tmp_path):
    d = tmp_path / "export"
    d.mkdir()
    (d / "IM000001").write_bytes(dicom_bytes(synthetic_xray(seed=7), patient=False))
    (d / "image.dat").write_bytes(dicom_bytes(synthetic_xray(seed=8), patient=False))
    (d / "README").write_bytes(b"x" * 200)  # no suffix and no DICOM marker
    (d / "short").write_bytes(b"DICM")  # too short to hold the marker at byte 128
    assert main(["--model", str(tiny_model_path), str(d)]) == 0
    captured = capsys.readouterr()
    rows = _rows(captured.out)
    assert [Path(r["path"]).name for r in rows] == ["IM000001", "image.dat"]
    assert all(r["label"] in ("NORMAL", "PNEUMONIA") and r["probability"] for r in rows)
    assert "skipped 2 file(s)" in captured.err and "README" in captured.err and "short" in captured.err


# ---- outputs: checked first, never overwritten, never analysed ------------------------------------------------
def test_heatmaps_never_overwrite_and_are_never_analysed_again(capsys, caplog, tiny_model_path, tmp_path):
    d = tmp_path / "films"
    d.mkdir()
    _png(d / "scan.png", seed=1)
    mine = _png(d / "scan_heatmap.png", seed=2)  # the user's own file, by chance of the overlay's name
    (d / "notes_heatmap.png").write_bytes(b"the user's bytes")
    before = {p.name: p.read_bytes() for p in d.iterdir()}

    assert main(["--model", str(tiny_model_path), "--heatmaps", str(d), str(d)]) == 2  # notes_heatmap.png: ERROR
    first = capsys.readouterr()
    assert "heatmap folder is inside the input folder" in caplog.text
    for name, data in before.items():
        assert (d / name).read_bytes() == data, f"{name} was changed"
    rows = {Path(r["path"]).name: r for r in _rows(first.out)}
    assert set(rows) == {"scan.png", "scan_heatmap.png", "notes_heatmap.png"}  # the user's files are analysed
    assert Path(rows["scan.png"]["heatmap"]).name == "scan_heatmap-2.png"  # the taken name is left alone
    assert Path(rows[mine.name]["heatmap"]).name == "scan_heatmap_heatmap.png"

    assert main(["--model", str(tiny_model_path), "--heatmaps", str(d), str(d)]) == 2  # a rerun
    second = capsys.readouterr()
    assert {Path(r["path"]).name for r in _rows(second.out)} == set(rows)  # the overlays are not analysed
    assert "skipped 2 file(s)" in second.err and "heatmap overlay written by pneumo-predict" in second.err
    for name, data in before.items():
        assert (d / name).read_bytes() == data, f"{name} was changed"
    overlays = [p for p in d.glob("*.png") if HEATMAP_MARK.encode() in p.read_bytes()[:512]]
    assert len(overlays) == 4  # two per run, none replaced


def test_output_file_is_new_and_complete(capsys, tiny_model_path, tmp_path):
    _png(tmp_path / "a.png")
    out = tmp_path / "res" / "results.csv"
    out.parent.mkdir()
    assert main(["--model", str(tiny_model_path), "-o", str(out), str(tmp_path / "a.png")]) == 0
    assert capsys.readouterr().out == ""
    assert [Path(r["path"]).name for r in _rows(out.read_text())] == ["a.png"]
    before = out.read_bytes()
    with pytest.raises(SystemExit) as exc:
        main(["--model", str(tiny_model_path), "-o", str(out), str(tmp_path / "a.png")])
    assert exc.value.code == 2 and out.read_bytes() == before  # never written over


class _FillsUp(io.StringIO):
    """A stdout whose disk fills up after ``n`` writes."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.left = n

    def write(self, text: str) -> int:
        if self.left == 0:
            raise OSError(28, "No space left on device")
        self.left -= 1
        return super().write(text)


@pytest.fixture()
def no_analysis(monkeypatch):
    """Fails the test if the CLI gets as far as loading the models."""

    def refuse(*_a, **_k):
        raise AssertionError("the analysis started before the outputs were checked")

    monkeypatch.setattr(predict, "_load", refuse)


def test_unwritable_outputs_fail_before_any_analysis(
    capsys, caplog, monkeypatch, tiny_model_path, tmp_path, no_analysis
):
    img = _png(tmp_path / "a.png")
    blocker = tmp_path / "a_file"
    blocker.write_text("a file, not a folder")

    code = main(["--model", str(tiny_model_path), "-o", str(tmp_path / "missing" / "r.csv"), str(img)])
    assert code == 1 and "cannot create" in caplog.text
    code = main(["--model", str(tiny_model_path), "-o", str(tmp_path / "r.csv"), "--heatmaps", str(blocker / "x"),
                 str(img)])  # fmt: skip
    assert code == 1 and "cannot write heatmaps" in caplog.text
    assert not (tmp_path / "r.csv").exists()  # the run's own empty file is removed
    monkeypatch.setattr(sys, "stdout", _FillsUp(0))  # stdout on a full disk: the header cannot be written
    assert main(["--model", str(tiny_model_path), str(img)]) == 1 and "No space left on device" in caplog.text
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.slow
def test_full_stdout_fails_before_any_analysis_with_one_line(tiny_model_path, tmp_path):
    img = _png(tmp_path / "a.png")
    hm = tmp_path / "heat"
    with open("/dev/full", "w") as full:
        res = _cli("--model", str(tiny_model_path), "--heatmaps", str(hm), str(img), stdout=full)
    err = res.stderr.decode()
    assert res.returncode == 1 and "No space left on device" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and list(hm.iterdir()) == []  # no overlay: nothing was analysed


class _Recorder(io.StringIO):
    """A stdout that remembers what had been flushed."""

    flushed = ""

    def flush(self) -> None:
        self.flushed = self.getvalue()


def test_each_row_is_flushed_before_the_next_file_is_done(tiny_model_path, tmp_path, monkeypatch):
    for i in range(5):
        _png(tmp_path / f"{i}.png", seed=i)
    out = _Recorder()
    monkeypatch.setattr(sys, "stdout", out)
    seen: list[int] = []
    analyse = predict.analyse

    def watched(*args, **kwargs):
        for item in analyse(*args, **kwargs):
            seen.append(len(_rows(out.flushed)))  # rows out when the next file's row is ready
            yield item

    monkeypatch.setattr(predict, "analyse", watched)
    assert main(["--model", str(tiny_model_path), str(tmp_path)]) == 0
    assert seen == [0, 1, 2, 3, 4] and len(_rows(out.flushed)) == 5


def test_disk_full_mid_run_keeps_the_rows_written_and_exits_1(caplog, tiny_model_path, tmp_path, monkeypatch):
    for i in range(5):
        _png(tmp_path / f"{i}.png", seed=i)
    out = _FillsUp(3)  # the header and two rows
    monkeypatch.setattr(sys, "stdout", out)
    assert main(["--model", str(tiny_model_path), "--batch-size", "1", str(tmp_path)]) == 1
    assert "No space left on device" in caplog.text
    assert [Path(r["path"]).name for r in _rows(out.getvalue())] == ["0.png", "1.png"]


# ---- signals and pipes ----------------------------------------------------------------------------------------------
N_FILES = 300


@pytest.fixture(scope="module")
def many_films(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("many")
    base = synthetic_xray(seed=3)
    for i in range(N_FILES):
        Image.fromarray(np.roll(base, i, axis=1)).save(d / f"film_{i:03d}.png", compress_level=1)
    return d


def _stop_after_rows(proc: subprocess.Popen, n_lines: int, signum: int) -> tuple[bytes, bytes]:
    """Read ``n_lines`` lines of stdout, then send ``signum``; returns (all stdout, stderr)."""
    watchdog = threading.Timer(300, proc.kill)  # a hang fails the test instead of blocking it
    watchdog.start()
    try:
        head = b"".join(proc.stdout.readline() for _ in range(n_lines))
        proc.send_signal(signum)
        rest, err = proc.communicate()
    finally:
        watchdog.cancel()
    return head + rest, err


@pytest.mark.slow
def test_sigint_keeps_every_finished_row_and_overlay(tiny_model_path, many_films, tmp_path):
    hm = tmp_path / "heat"
    proc = _popen("--model", str(tiny_model_path), "--heatmaps", str(hm), "--batch-size", "4", str(many_films))
    out, err = _stop_after_rows(proc, 3, signal.SIGINT)
    err_text = err.decode()
    assert proc.returncode == 130, err_text[-2000:]
    assert "Traceback" not in err_text and "KeyboardInterrupt" not in err_text
    assert "stopped by SIGINT" in err_text
    text = out.decode()
    assert text.endswith("\n")
    rows = _rows(text)
    assert 2 <= len(rows) < N_FILES  # stopped early, and the rows seen before the signal are there
    for r in rows:  # whole rows only
        assert r["label"] in ("NORMAL", "PNEUMONIA") and len(r["probability"].split(".")[1]) == 6
    overlays = sorted(hm.glob("*.png"))
    assert sorted(Path(r["heatmap"]) for r in rows) == overlays  # no overlay without its row, none half-written
    for p in overlays:
        with Image.open(p) as im:
            im.load()


@pytest.mark.slow
def test_sigterm_exits_143_with_a_valid_json_array(tiny_model_path, many_films, tmp_path):
    proc = _popen("--model", str(tiny_model_path), "--heatmaps", str(tmp_path / "h"), "--batch-size", "4",
                  "--format", "json", str(many_films))  # fmt: skip
    out, err = _stop_after_rows(proc, 3, signal.SIGTERM)  # '[', the first row, the second
    assert proc.returncode == 143, err.decode()[-2000:]
    assert "Traceback" not in err.decode() and "stopped by SIGTERM" in err.decode()
    rows = json.loads(out)
    assert 2 <= len(rows) < N_FILES and all(r["label"] in ("NORMAL", "PNEUMONIA") for r in rows)


@pytest.mark.slow
def test_closed_pipe_ends_quietly(tiny_model_path, many_films, tmp_path):
    """``| head -1``: the reader goes away after the header; the CLI stops without a BrokenPipeError traceback."""
    proc = _popen("--model", str(tiny_model_path), "--heatmaps", str(tmp_path / "h"), "--batch-size", "4",
                  str(many_films))  # fmt: skip
    watchdog = threading.Timer(300, proc.kill)
    watchdog.start()
    try:
        assert proc.stdout.readline().startswith(b"path,")
        proc.stdout.close()
        err = proc.stderr.read().decode()
        proc.wait()
    finally:
        watchdog.cancel()
    assert proc.returncode == predict.EXIT_BROKEN_PIPE, err[-2000:]
    assert "Traceback" not in err and "BrokenPipe" not in err and err.strip() == ""
    assert len(list((tmp_path / "h").glob("*.png"))) < N_FILES  # it stopped, rather than analyse for nobody
