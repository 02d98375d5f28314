"""The prediction CLI on the whole hostile/odd corpus in one run (tests/corpus.py).

Unreadable files must come out as ERROR rows with the loader's message and exit status 2, while every valid file in the
same run is still predicted, within 0.02 of the same picture saved as a plain 8-bit grayscale PNG. The tiny fixture
model's output is constant (0.5 for everything), so the runs use a small random model whose logit weights are scaled
up until its probability moves with the picture, and the test checks that the 0.02 tolerance catches a wrong picture
(inverted, or rotated 90 degrees) and that the model inputs themselves agree. With the committed model present the run
is repeated with it. The CLI runs in-process (``pneumo.predict.main``, what ``python -m pneumo.predict`` calls) to
spare a second TensorFlow start; tests/test_predict_cli.py checks the real process's exit status.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pneumo import config
from pneumo.io.decode import load_image
from pneumo.io.preprocess import preprocess
from pneumo.predict import main
from tests.corpus import Case, base_picture, matches, write_corpus

TOLERANCE = 0.02  # |P(file) - P(plain 8-bit PNG of the same picture)|


def _ref_name(case: Case) -> str:
    return f"ref__{Path(case.name).stem}.png"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, list[Case]]:
    """The corpus plus, for every valid file, its expected picture as a plain 8-bit grayscale PNG."""
    d = tmp_path_factory.mktemp("corpus")
    cases = write_corpus(d)
    for c in cases:
        if c.valid:
            Image.fromarray(c.expected).save(d / _ref_name(c))
    Image.fromarray(255 - base_picture()).save(d / "ref__inverted.png")  # wrong pictures the tolerance must catch
    Image.fromarray(np.ascontiguousarray(np.rot90(base_picture()))).save(d / "ref__rotated.png")
    return d, cases


@pytest.fixture(scope="module")
def sensitive_model_path(tmp_path_factory, tiny_model_path) -> Path:
    """A 32 px random model (one block) whose probability visibly depends on the picture; fixture metadata."""
    import keras

    from pneumo.nets.modelfile import metadata_path
    from pneumo.training.export import export
    from pneumo.training.networks import build_model

    keras.utils.set_random_seed(3)
    model = build_model(32, stem_width=4, widths=(8,))
    kernel, bias = model.get_layer("logit").get_weights()
    model.get_layer("logit").set_weights([kernel * 200.0, bias])  # spreads P over ~0.3..0.6 for these pictures
    path = tmp_path_factory.mktemp("sensitive") / "sensitive.keras"
    model.save(path)
    meta = json.loads(metadata_path(tiny_model_path).read_text())
    meta.update(name="sensitive", parameters=int(model.count_params()))
    meta.pop("tflite", None)
    metadata_path(path).write_text(json.dumps(meta))
    export(path)  # the CLI runs the TFLite copy
    return path


def _run_cli(model: Path, d: Path, cases: list[Case]) -> tuple[int, dict[str, dict[str, str]]]:
    """One CLI run over every corpus file and every reference PNG; returns (exit status, rows by file name)."""
    files = [str(d / c.name) for c in cases] + sorted(str(p) for p in d.glob("ref__*.png"))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["--model", str(model), "--quiet", *files])
    rows = {Path(r["path"]).name: r for r in csv.DictReader(io.StringIO(out.getvalue()))}
    assert len(rows) == len(files)
    return code, rows


def _check_run(code: int, rows: dict[str, dict[str, str]], cases: list[Case]) -> dict[str, float]:
    assert code == 2, "some files are unreadable: exit status must be 2"
    gaps = {}
    for c in cases:
        r = rows[c.name]
        if c.valid:
            assert r["label"] in ("NORMAL", "PNEUMONIA") and r["error"] == "", (c.name, r)
            p, ref = float(r["probability"]), float(rows[_ref_name(c)]["probability"])
            gaps[c.name] = abs(p - ref)
        else:
            assert r["label"] == "ERROR" and r["probability"] == "", (c.name, r)
            assert matches(c, r["error"]), (c.name, r["error"])
    worst = max(gaps, key=gaps.get)
    assert gaps[worst] <= TOLERANCE, f"{worst}: |P - P(plain PNG)| = {gaps[worst]:.4f}"
    return gaps


def test_model_inputs_match_plain_png(corpus):
    """Independent of any model: every valid file gives (nearly) the model input of its plain 8-bit PNG."""
    d, cases = corpus
    for c in cases:
        if c.valid:
            x = preprocess(load_image(d / c.name).pixels, config.IMAGE_SIZE).astype(np.int16)  # (224, 224, 1)
            ref = preprocess(load_image(d / _ref_name(c)).pixels, config.IMAGE_SIZE).astype(np.int16)
            diff = np.abs(x - ref)
            assert diff.mean() < (1.0 if c.lossy else 1e-9) and diff.max() <= 8, c.name


def test_cli_on_corpus(corpus, sensitive_model_path):
    d, cases = corpus
    code, rows = _run_cli(sensitive_model_path, d, cases)
    _check_run(code, rows, cases)
    # The tolerance must be able to fail: wrong pictures get clearly different probabilities.
    plain = float(rows["ref__plain_gray8.png"]["probability"])
    for wrong in ("ref__inverted.png", "ref__rotated.png"):
        assert abs(float(rows[wrong]["probability"]) - plain) > 5 * TOLERANCE, wrong


@pytest.mark.skipif(not config.DEFAULT_MODEL_PATH.exists(), reason="no committed model at models/pneumo_cnn.keras yet")
def test_cli_on_corpus_with_committed_model(corpus):
    d, cases = corpus
    code, rows = _run_cli(config.DEFAULT_MODEL_PATH, d, cases)
    _check_run(code, rows, cases)
