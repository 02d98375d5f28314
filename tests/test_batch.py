"""Batch scoring on Ray Data (pneumo.batch): the CLI's rows, bad files as rows, manifests, nothing lost or twice.

The tests that run Ray share one embedded local Ray session (module fixture): starting it costs about 10 s here.
"""

from __future__ import annotations

import csv
import io
import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pneumo import __version__
from pneumo.batch import (
    SCHEMA,
    BatchError,
    check_output,
    commit_part,
    committed_paths,
    expand_inputs,
    iter_results,
    main,
    part_files,
    read_results,
    rows_table,
    run_batch,
    write_csv,
)
from pneumo.nets.modelfile import file_sha256
from pneumo.predict import collect_files, run, write_rows
from pneumo.present.table import Row
from tests.conftest import ROOT, synthetic_xray

pytest.importorskip("ray")


def _colour_photo(path: Path) -> Path:
    rgb = np.zeros((240, 320, 3), np.uint8)  # (H, W, 3) a gradient: colourful, out of scope
    rgb[..., 0] = np.linspace(0, 255, 320)[None, :]
    rgb[..., 1] = np.linspace(255, 0, 240)[:, None]
    Image.fromarray(rgb).save(path)
    return path


@pytest.fixture()
def archive(tmp_path) -> Path:
    """A small archive: radiograph-like PNG/JPEG in sub-folders, one broken file, one out of scope, one non-image."""
    d = tmp_path / "archive"
    (d / "sub" / "deeper").mkdir(parents=True)
    for i in range(6):
        Image.fromarray(synthetic_xray(seed=i, opacity=i % 2 == 1)).save(d / ("sub" if i % 2 else "") / f"im{i}.png")
    Image.fromarray(synthetic_xray(seed=9, opacity=True)).save(d / "sub" / "deeper" / "im9.jpeg")
    (d / "sub" / "broken.jpeg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    _colour_photo(d / "photo.jpeg")
    (d / "notes.txt").write_text("skipped in a folder")
    return d


@pytest.fixture(scope="module")
def ray_local():
    """One embedded local Ray for the module (run_batch then leaves it running)."""
    import ray

    from pneumo.batch import _start_ray

    saved = os.environ.get("PYTHONPATH")
    started = _start_ray(None)
    yield
    if started:
        ray.shutdown()
    if saved is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = saved


def _by_path(table: pa.Table) -> dict[str, dict]:
    return {r["path"]: r for r in table.to_pylist()}


# ----------------------------------------------------------------------------------------------- without Ray
def test_inputs_follow_the_cli_rules_and_manifests_are_read(archive, tmp_path):
    cli_files, cli_skipped = collect_files([str(archive)])
    files, skipped = expand_inputs([str(archive)])
    assert files == [str(f) for f in cli_files] and skipped == cli_skipped
    assert archive / "notes.txt" in [s.path for s in skipped]

    txt = tmp_path / "list.txt"
    txt.write_text(f"# a comment\n{archive / 'im0.png'}\n\n{archive / 'sub'}\n{archive / 'im0.png'}\n")
    files, _ = expand_inputs([str(txt)])
    assert files[0] == str(archive / "im0.png") and files.count(str(archive / "im0.png")) == 1  # duplicate dropped
    assert str(archive / "sub" / "deeper" / "im9.jpeg") in files  # a folder entry is expanded
    table = tmp_path / "list.csv"
    table.write_text(f"id,path\n1,{archive / 'im2.png'}\n2,{archive / 'missing.png'}\n")
    assert expand_inputs([str(table)])[0] == [str(archive / "im2.png"), str(archive / "missing.png")]
    (tmp_path / "bad.csv").write_text("id,file\n1,x.png\n")
    with pytest.raises(BatchError, match="no 'path' column"):
        expand_inputs([str(tmp_path / "bad.csv")])


def test_file_uri_folders_are_listed_through_pyarrow(archive):
    files, skipped = expand_inputs([archive.as_uri()])
    assert files == [f"file://{f}" for f in sorted(map(str, collect_files([str(archive)])[0]))]
    assert [str(s.path) for s in skipped] == [str(Path((archive / "notes.txt").as_uri()))]


def test_parts_are_committed_atomically_and_read_once_per_path(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    x, z = Row("x.png", 0.25, "NORMAL", 0.5), Row("z.png", 0.9, "PNEUMONIA", 0.5, warnings=("rotated",), note="Turned.")
    y = Row("y.png", None, "ERROR", 0.5, "File not found.", note="The file could not be read.")
    a = rows_table([x, y], [b"x.png", b"y.png"], "s" * 64)
    b = rows_table([y, z], [b"y.png", b"z.png"], "s" * 64)
    commit_part(out, a, "part-1-000000.parquet")
    commit_part(out, b, "part-1-000001.parquet")  # y.png committed twice
    commit_part(out, a.slice(0, 1), "part-1-000002.parquet")  # a part of nothing but a repeat
    (out / ".tmp-part-2-000000.parquet").write_bytes(b"PAR1 half written")  # a killed job's unfinished part
    assert [p.name for p in part_files(out)] == [f"part-1-00000{i}.parquet" for i in range(3)]
    assert pads.dataset(out, format="parquet").count_rows() == 5  # pyarrow skips the hidden temporary file
    assert read_results(out).column("path").to_pylist() == ["x.png", "y.png", "z.png"]
    assert sum(len(t) for t in iter_results(out, ["label"])) == 3
    assert committed_paths(out, "s" * 64) == {b"x.png", b"y.png", b"z.png"}
    assert not list(out.glob(".tmp-*")), "the unfinished part is removed on resume"
    with pytest.raises(BatchError, match="another model"):
        committed_paths(out, "t" * 64)
    with pytest.raises(BatchError, match="not empty"):
        check_output(out, resume=False)
    check_output(out, resume=True)
    check_output(tmp_path / "new", resume=False)

    buf, ref = io.StringIO(), io.StringIO()
    write_csv(out, buf)
    write_rows([x, y, z], "csv", ref)
    assert buf.getvalue() == ref.getvalue()


def test_resume_of_a_finished_job_does_nothing(tmp_path, tiny_model_path, caplog):
    """Every input has a row: no Ray, no new part, and it says so."""
    img = tmp_path / "a.png"
    Image.fromarray(synthetic_xray()).save(img)
    out = tmp_path / "out"
    out.mkdir()
    row = Row(str(img), 0.5, "PNEUMONIA", 0.5)
    commit_part(out, rows_table([row], [os.fsencode(img)], file_sha256(tiny_model_path)), "part-0.parquet")
    before = [(p.name, p.stat().st_mtime_ns) for p in out.iterdir()]
    with caplog.at_level("INFO", logger="pneumo.batch"):
        summary = run_batch([str(img)], out, tiny_model_path, resume=True)
    assert summary.scored == 0 and summary.parts == 0 and summary.labels == {"PNEUMONIA": 1}
    assert "nothing to do" in caplog.text
    assert [(p.name, p.stat().st_mtime_ns) for p in out.iterdir() if p.name.startswith("part")] == before
    with pytest.raises(BatchError, match="not empty"):
        run_batch([str(img)], out, tiny_model_path)


def test_ray_is_the_batch_extra_and_ci_installs_it():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    extras = project["tool"]["setuptools"]["dynamic"]["optional-dependencies"]
    assert extras["batch"]["file"] == ["requirements-batch.txt"]
    assert "requirements-batch.txt" in extras["dev"]["file"]
    assert "ray[data]==" in (ROOT / "requirements-batch.txt").read_text()
    assert "ray" not in (ROOT / "requirements.txt").read_text().lower()
    assert project["project"]["scripts"]["pneumo-batch"] == "pneumo.batch:main"


# ---------------------------------------------------------------------------------------------------- with Ray
@pytest.mark.slow
def test_same_rows_as_the_cli_and_a_bad_file_is_a_row(ray_local, archive, tmp_path, tiny_model_path):
    files, _ = collect_files([str(archive)])
    cli = {r.path: r for r in run(files, tiny_model_path)}
    out = tmp_path / "out"
    summary = run_batch([str(archive)], out, tiny_model_path, batch_size=3, commit_seconds=0, progress=False)
    table = pads.dataset(out, format="parquet").to_table()
    assert set(SCHEMA.names) <= set(table.column_names)
    rows = _by_path(table)
    assert len(rows) == table.num_rows == len(files) == summary.scored  # each once
    assert set(rows) == set(cli)
    for path, c in cli.items():
        r = rows[path]
        assert (r["label"], r["threshold"], r["error"], tuple(r["warnings"]), r["note"]) == (
            c.label, c.threshold, c.error, c.warnings, c.note), path  # fmt: skip
        assert r["source"] == os.fsencode(path)
        if c.probability is None:
            assert r["probability"] is None
        else:
            assert abs(r["probability"] - c.probability) <= 1e-6
        assert r["model_sha256"] == file_sha256(tiny_model_path) and r["pneumo_version"] == __version__
    assert rows[str(archive / "sub" / "broken.jpeg")]["label"] == "ERROR"
    assert rows[str(archive / "photo.jpeg")]["label"] == "OUT_OF_SCOPE"
    assert {c.label for c in cli.values()} >= {"NORMAL", "PNEUMONIA"}, "the fixture model must give both labels"
    assert summary.errors == 1 and summary.labels["OUT_OF_SCOPE"] == 1 and summary.parts >= 2

    forced = run_batch([str(archive / "photo.jpeg")], tmp_path / "forced", tiny_model_path, force=True, progress=False)
    row = read_results(tmp_path / "forced").to_pylist()[0]
    assert forced.scored == 1 and row["label"] in ("NORMAL", "PNEUMONIA") and "colour" in row["warnings"]
    buf = io.StringIO()
    write_rows(run([archive / "photo.jpeg"], tiny_model_path, force=True), "csv", buf)
    mine = io.StringIO()
    write_csv(tmp_path / "forced", mine)
    assert mine.getvalue() == buf.getvalue()  # the CLI's CSV, byte for byte


@pytest.mark.slow
def test_a_manifest_with_a_file_uri_and_a_missing_file(ray_local, archive, tmp_path, tiny_model_path):
    manifest = tmp_path / "list.csv"
    uri = (archive / "im0.png").resolve().as_uri()
    manifest.write_text(f"path\n{archive / 'im0.png'}\n{uri}\n{archive / 'gone.png'}\n")
    out = tmp_path / "out"
    args = ["--out", str(out), "--model", str(tiny_model_path), "--csv", str(tmp_path / "rows.csv"), str(manifest)]
    assert main(args) == 2  # a file could not be read: the CLI's status; its row is in the dataset
    rows = _by_path(read_results(out))
    assert sorted(rows) == sorted([str(archive / "im0.png"), uri, str(archive / "gone.png")])
    assert abs(rows[uri]["probability"] - rows[str(archive / "im0.png")]["probability"]) <= 1e-6
    assert rows[uri]["label"] == rows[str(archive / "im0.png")]["label"]
    assert (rows[str(archive / "gone.png")]["label"], rows[str(archive / "gone.png")]["error"]) == (
        "ERROR", "File not found.")  # fmt: skip
    written = list(csv.DictReader(open(tmp_path / "rows.csv")))
    assert [r["path"] for r in written] == list(rows)
    assert written[0]["probability"] == f"{rows[str(archive / 'im0.png')]['probability']:.6f}"


@pytest.mark.slow
def test_kill_the_driver_then_resume_gives_every_input_exactly_once(ray_local, tmp_path, tiny_model_path):
    """SIGKILL the batch command once parts are committed; --resume scores the rest; no path twice, none lost."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        Image.fromarray(synthetic_xray(seed=i, opacity=i == 1)).save(src / f"s{i}.png")
    archive = tmp_path / "archive"
    archive.mkdir()
    for i in range(240):
        (archive / f"f{i:04d}.png").symlink_to(src / f"s{i % 3}.png")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "pneumo.batch", "--out", str(out), "--model", str(tiny_model_path), "--workers", "1",
           "--batch-size", "2", "--commit-seconds", "0", str(archive)]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while len(part_files(out)) < 3 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)  # the driver only, as a crash would
        proc.wait(timeout=30)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # then the local Ray it started
        except ProcessLookupError:
            pass
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    before = pa.concat_tables([pq.read_table(p) for p in part_files(out)]).column("path").to_pylist()
    assert 0 < len(before) < 240, "the job must be killed halfway"

    summary = run_batch([str(archive)], out, tiny_model_path, resume=True, progress=False)
    assert summary.scored == 240 - len(before)
    raw = pa.concat_tables([pq.read_table(p) for p in part_files(out)]).column("path").to_pylist()  # no dedupe
    assert sorted(raw) == sorted(str(p) for p in archive.iterdir())  # every input exactly once
    names = [p.name for p in part_files(out)]
    again = run_batch([str(archive)], out, tiny_model_path, resume=True, progress=False)
    assert again.scored == 0 and [p.name for p in part_files(out)] == names


def test_the_command_refuses_a_non_empty_output_folder(tmp_path, archive):
    out = tmp_path / "out"
    out.mkdir()
    (out / "other.txt").write_text("someone else's file")
    res = subprocess.run([sys.executable, "-m", "pneumo.batch", "--out", str(out), str(archive)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert res.returncode == 2 and "not empty" in res.stderr and "--resume" in res.stderr
