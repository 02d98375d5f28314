"""The prediction CLI's contract: csv/json output, folders, errors, exit status, heatmaps."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pneumo.pipeline import Models, analyze_bytes
from pneumo.predict import main
from pneumo.present.table import COLUMNS
from tests.conftest import ROOT, synthetic_xray


@pytest.fixture()
def image_dir(tmp_path) -> Path:
    d = tmp_path / "imgs"
    (d / "sub").mkdir(parents=True)
    Image.fromarray(synthetic_xray(seed=1)).save(d / "a.png")
    Image.fromarray(synthetic_xray(seed=2, opacity=True)).save(d / "sub" / "b.jpeg")
    Image.fromarray(synthetic_xray(seed=3)).save(d / "sub" / "a.png")  # same name, other folder
    (d / "notes.txt").write_text("not picked up from a folder")
    return d


def _run(capsys, *args: str) -> tuple[int, str]:
    code = main(list(args))
    return code, capsys.readouterr().out


def test_csv_contract_and_exit_zero(capsys, tiny_model, tiny_model_path, image_dir):
    code, out = _run(capsys, "--model", str(tiny_model_path), str(image_dir))
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert out.splitlines()[0] == "path,probability,label,threshold,error,warnings,note"  # the app's CSV header too
    assert sorted(Path(r["path"]).name for r in rows) == ["a.png", "a.png", "b.jpeg"]
    for r in rows:
        assert len(r["probability"].split(".")[1]) == 6
        p = float(r["probability"])
        assert 0.0 <= p <= 1.0
        exact = analyze_bytes(Path(r["path"]).read_bytes(), "x", Models(tiny_model)).probability  # the app's entry
        assert r["probability"] == f"{exact:.6f}"
        assert r["label"] == ("PNEUMONIA" if exact >= tiny_model.threshold else "NORMAL")
        assert r["error"] == ""
        assert r["warnings"] == "" and r["note"] == ""  # synthetic radiographs with no gate: no rule fires
        assert r["threshold"] == f"{tiny_model.threshold:.4f}"


def test_unreadable_file_gives_error_row_and_exit_two(capsys, tiny_model_path, image_dir, tmp_path):
    bad = tmp_path / "broken.jpeg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    code, out = _run(capsys, "--model", str(tiny_model_path), str(bad), str(image_dir / "a.png"))
    assert code == 2
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [Path(r["path"]).name for r in rows] == ["broken.jpeg", "a.png"]
    assert rows[0]["label"] == "ERROR" and rows[0]["probability"] == "" and rows[0]["error"]
    assert rows[1]["label"] in ("NORMAL", "PNEUMONIA") and rows[1]["probability"]


def test_json_format_and_heatmaps(capsys, tiny_model_path, image_dir, tmp_path):
    hm = tmp_path / "heat"
    code, out = _run(capsys, "--model", str(tiny_model_path), "--format", "json", "--heatmaps", str(hm), str(image_dir))
    assert code == 0
    rows = json.loads(out)
    assert len(rows) == 3 and list(rows[0]) == [*COLUMNS, "heatmap"]
    for r in rows:  # numbers as numbers (6 decimals), warnings as a list
        assert isinstance(r["probability"], float) and r["probability"] == round(r["probability"], 6)
        assert isinstance(r["warnings"], list) and isinstance(r["threshold"], float)
    pngs = sorted(hm.glob("*.png"))
    assert len(pngs) == 3  # one per image, the two a.png do not overwrite each other
    assert sorted(Path(r["heatmap"]) for r in rows) == pngs  # each row names its overlay
    overlay = np.asarray(Image.open(pngs[0]))
    assert overlay.ndim == 3 and overlay.shape[2] == 3
    assert overlay.shape[:2] == synthetic_xray().shape  # at the original resolution


def test_batching_gives_same_results(capsys, tiny_model_path, image_dir):
    _, out1 = _run(capsys, "--model", str(tiny_model_path), "--batch-size", "1", str(image_dir))
    _, out32 = _run(capsys, "--model", str(tiny_model_path), str(image_dir))
    p1 = [float(r["probability"]) for r in csv.DictReader(io.StringIO(out1))]
    p32 = [float(r["probability"]) for r in csv.DictReader(io.StringIO(out32))]
    np.testing.assert_allclose(p1, p32, atol=2e-6)


def test_usage_errors(tmp_path, tiny_model_path):
    with pytest.raises(SystemExit) as e:
        main(["--model", str(tiny_model_path), str(tmp_path)])  # empty folder
    assert e.value.code == 2
    with pytest.raises(SystemExit):
        main(["--model", str(tmp_path / "missing.keras"), str(tmp_path)])
    for bad in (["--batch-size", "0"], ["--workers", "0"]):
        with pytest.raises(SystemExit) as e:
            main(["--model", str(tiny_model_path), *bad, str(tmp_path)])
        assert e.value.code == 2


@pytest.mark.slow
def test_cli_subprocess_exit_code(tmp_path, tiny_model_path):
    """As a user runs it: python -m pneumo.predict, csv on stdout, status 2 for a missing file."""
    img = tmp_path / "x.png"
    Image.fromarray(synthetic_xray()).save(img)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    cmd = [sys.executable, "-m", "pneumo.predict", "--model", str(tiny_model_path), str(img), str(tmp_path / "no.png")]
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stderr
    lines = res.stdout.strip().splitlines()
    assert lines[0] == "path,probability,label,threshold,error,warnings,note" and len(lines) == 3
    assert lines[2].endswith("ERROR,0.5000,File not found.,,The file could not be read.")


def _colour_photo(path: Path) -> Path:
    rng = np.random.default_rng(5)
    rgb = np.zeros((240, 320, 3), np.uint8)
    rgb[..., 0] = np.linspace(0, 255, 320)[None, :]
    rgb[..., 1] = np.linspace(255, 0, 240)[:, None]
    rgb[..., 2] = rng.integers(0, 255, (240, 320))
    Image.fromarray(rgb).save(path)
    return path


def test_out_of_scope_gets_no_probability_unless_forced(capsys, tiny_model_path, tmp_path):
    photo = _colour_photo(tmp_path / "holiday.jpeg")
    flat = tmp_path / "flat.png"
    Image.fromarray(np.full((300, 300), 128, np.uint8)).save(flat)
    code, out = _run(capsys, "--model", str(tiny_model_path), str(photo), str(flat))
    assert code == 0  # OUT_OF_SCOPE is an answer, not a failure
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["label"] for r in rows] == ["OUT_OF_SCOPE", "OUT_OF_SCOPE"]
    assert [r["probability"] for r in rows] == ["", ""]
    assert "colour" in rows[0]["warnings"].split(";") and "uniform" in rows[1]["warnings"].split(";")

    code, out = _run(capsys, "--model", str(tiny_model_path), "--force", str(photo))
    row = next(csv.DictReader(io.StringIO(out)))
    assert code == 0 and row["label"] in ("NORMAL", "PNEUMONIA") and 0 <= float(row["probability"]) <= 1
    assert "colour" in row["warnings"].split(";"), "--force keeps the warnings"


def test_folder_scan_names_skipped_files_with_a_count(capsys, tiny_model_path, image_dir):
    (image_dir / "anim.gif").write_bytes(b"GIF89a")
    code = main(["--model", str(tiny_model_path), str(image_dir)])
    err = capsys.readouterr().err
    assert code == 0
    assert "skipped 2 file(s)" in err
    assert "notes.txt" in err and "anim.gif" in err


def test_cli_and_app_give_the_same_answer(capsys, tiny_model_path, image_dir):
    from pneumo.pipeline import analyze_bytes, load_models

    models = load_models(tiny_model_path)
    _, out = _run(capsys, "--model", str(tiny_model_path), str(image_dir))
    for row in csv.DictReader(io.StringIO(out)):
        res = analyze_bytes(Path(row["path"]).read_bytes(), Path(row["path"]).name, models)
        assert res.label == row["label"]
        assert f"{res.probability:.6f}" == row["probability"]
        assert ";".join(res.warnings) == row["warnings"]


@pytest.mark.slow
def test_cli_on_the_committed_models_prints_nothing_but_its_answer(tmp_path):
    """The committed models' TFLite copies run without LiteRT's 'Created TensorFlow Lite XNNPACK delegate' line."""
    from pneumo import config

    sample = sorted((config.ASSETS_DIR / "samples").glob("*.jpeg"))[0]
    cmd = [sys.executable, "-m", "pneumo.predict", str(sample)]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "XNNPACK" not in res.stderr and "INFO:" not in res.stderr, res.stderr
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 2 and lines[1].split(",")[2] in ("NORMAL", "PNEUMONIA")


def test_missing_tflite_copy_exits_1_naming_the_export(tiny_model_path, tmp_path, image_dir, caplog):
    import shutil

    for f in tiny_model_path.parent.glob("tiny.*"):
        shutil.copy2(f, tmp_path / f.name)
    (tmp_path / "tiny.tflite").unlink()
    assert main(["--model", str(tmp_path / "tiny.keras"), str(image_dir)]) == 1
    assert "python -m pneumo.training.export" in caplog.text


def test_version(capsys):
    import pneumo

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"pneumo-predict {pneumo.__version__}"


def test_help_gives_formats_exit_codes_and_examples(capsys):
    """--help is the CLI's contract: the columns, the formats, every exit status and runnable examples."""
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert "path,probability,label,threshold,error,warnings,note" in text and "jsonl" in text
    assert "Exit status: 0" in text and "130 on SIGINT" in text and "141" in text
    assert "Examples:" in text and "python -m pneumo.predict --heatmaps out/ folder/" in text


@pytest.mark.slow
def test_heatmaps_say_what_they_skipped_and_library_warnings_stay_off_stderr(tiny_model_path, tmp_path):
    """An out-of-scope image gets no overlay, and the CLI says so (and how to get one); a DICOM that makes pydicom
    warn ("Expected explicit VR") leaves no raw library warning, with its install path, on stderr."""
    from tests.corpus import unreadable_cases

    photo = _colour_photo(tmp_path / "holiday.jpeg")
    odd = next(c for c in unreadable_cases() if c.name == "dicom_bad_syntax.dcm")
    bad = tmp_path / odd.name
    bad.write_bytes(odd.data)
    cmd = [sys.executable, "-m", "pneumo.predict", "--model", str(tiny_model_path), "--heatmaps", str(tmp_path / "hm"),
           str(photo), str(bad)]  # fmt: skip
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)  # the real stderr
    err = res.stderr
    assert res.returncode == 2, err  # the DICOM is unreadable
    assert "no heatmap for 1 file(s) outside the intended use (--force draws them)" in err
    assert "no heatmap for 1 unreadable file(s)" in err
    assert "Warning" not in err and "site-packages" not in err and "explicit VR" not in err, err
    assert not list((tmp_path / "hm").glob("*.png"))


def test_heatmap_overlays_draw_normal_evidence_cool_and_pneumonia_evidence_warm(capsys, tiny_model_path, tmp_path):
    """--heatmaps draws each film's predicted class in that class's colour scale: no red on a NORMAL film's map."""
    films, out = tmp_path / "films", tmp_path / "maps"
    films.mkdir()
    for name, opacity in (("clear.png", False), ("opacity.png", True)):
        Image.fromarray(synthetic_xray(320, 240, seed=3, opacity=opacity)).save(films / name)
    code, text = _run(capsys, "--model", str(tiny_model_path), "--heatmaps", str(out), str(films))
    assert code == 0
    rows = {Path(r["path"]).name: r for r in csv.DictReader(io.StringIO(text))}
    assert rows["clear.png"]["label"] == "NORMAL" and rows["opacity.png"]["label"] == "PNEUMONIA"  # control

    def tinted(name: str) -> tuple[int, int]:
        rgb = np.asarray(Image.open(rows[name]["heatmap"]).convert("RGB")).astype(int)  # (h, w, 3)
        r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
        red = (r > g + 40) & (r > b + 40)  # clearly red or orange (the magenta outline has b = r)
        cool = ((b > r + 40) | (g > r + 40)) & ~((r > 150) & (b > 150))  # blue, cyan, aqua (not the outline)
        return int(red.sum()), int(cool.sum())

    normal_red, normal_cool = tinted("clear.png")
    pneumonia_red, _ = tinted("opacity.png")
    assert normal_red == 0 and normal_cool > 500  # the NORMAL map is drawn, in cool colours only
    assert pneumonia_red > 500
