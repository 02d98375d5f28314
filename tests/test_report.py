"""The app's library modules: analysis (one upload), report (PNG/PDF), stages (timeline) and modelcard (plots)."""

from __future__ import annotations

import io
from datetime import datetime, timezone

import numpy as np
import pytest
from PIL import Image

from pneumo import analysis as an
from pneumo import config
from tests.conftest import synthetic_xray


def png_bytes(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def analysed(tiny_model):
    return an.analyze_bytes(png_bytes(synthetic_xray(320, 240, seed=3, opacity=True)), "chest.png", tiny_model)


def test_analyze_bytes_matches_the_prediction_path(analysed, tiny_model):
    from pneumo.inference import predict_proba
    from pneumo.preprocess import preprocess

    x = preprocess(synthetic_xray(320, 240, seed=3, opacity=True), tiny_model.image_size)
    assert analysed.probability == pytest.approx(float(predict_proba(tiny_model.model, x)[0]), abs=1e-6)
    assert analysed.pixels.shape == (240, 320) and not analysed.pixels.flags.writeable
    assert analysed.signed_cam.ndim == 2 and not analysed.signed_cam.flags.writeable
    assert analysed.facts == {"Format": "PNG", "Size": "320 × 240 pixels"}
    assert analysed.digest == an.file_digest(png_bytes(synthetic_xray(320, 240, seed=3, opacity=True)))
    assert not analysed.error and not analysed.refusal and not analysed.doubtful


def test_unreadable_bytes_give_an_error_not_an_exception(tiny_model):
    res = an.analyze_bytes(b"%PDF-1.7 not an x-ray", "letter.pdf", tiny_model)
    assert res.error == "Not an image: this is a PDF document."
    assert not res.has_result and res.pixels is None


def test_overlay_is_full_resolution_and_class_dependent(analysed, tiny_model):
    pneu = an.heatmap_overlay(analysed, 1, 0.5, tiny_model.image_size)
    norm = an.heatmap_overlay(analysed, 0, 0.5, tiny_model.image_size)
    assert pneu.shape == (240, 320, 3) and pneu.dtype == np.uint8
    plain = an.heatmap_overlay(analysed, 1, 0.0, tiny_model.image_size)
    assert np.array_equal(plain[..., 0], analysed.pixels)  # opacity 0 leaves the radiograph untouched
    cam = analysed.signed_cam
    if cam.max() > 0 and cam.min() < 0:  # both classes have evidence somewhere: the overlays differ
        assert not np.array_equal(pneu, norm)


def test_format_probability_never_claims_certainty():
    assert an.format_probability(0.999995) == "> 99.9%" and an.format_probability(0.00001) == "< 0.1%"
    assert an.format_probability(0.4567) == "45.7%" and an.format_probability(0.9994) == "99.9%"


def test_format_threshold_never_hides_a_third_decimal():
    assert an.format_threshold(0.5) == "0.50" and an.format_threshold(0.435) == "0.435"
    assert an.format_threshold(0.42, percent=True) == "42%" and an.format_threshold(0.435, percent=True) == "43.5%"
    assert "threshold of 43.5%" in an.plain_verdict(0.9, 0.435)


def test_explained_class_follows_the_label_at_the_threshold():
    assert an.explained_class("Predicted class", 0.7, 0.5) == 1
    assert an.explained_class("Predicted class", 0.7, 0.8) == 0
    assert an.explained_class("NORMAL", 0.9, 0.5) == 0
    assert an.explained_class("PNEUMONIA", 0.1, 0.5) == 1


def test_operating_point_lookup(tiny_model):
    op = an.operating_point(tiny_model.metadata, 0.3)
    assert (op.threshold, op.sensitivity, op.specificity) == (0.3, 0.7, 0.3)
    assert an.operating_point({"operating_points": []}, 0.3) is None
    far = {"operating_points": [{"threshold": 0.5, "sensitivity": 1, "specificity": 0}]}
    assert an.operating_point(far, 0.3) is None  # nothing stored near 0.3


@pytest.mark.parametrize(
    ("p", "t", "word"),
    [(0.52, 0.5, "borderline"), (0.9, 0.5, "moderate"), (0.999, 0.5, "confident"), (0.01, 0.5, "confident")],
)
def test_plain_verdict_words(p, t, word):
    text = an.plain_verdict(p, t)
    assert word in text
    assert ("above" if p >= t else "below") in text


def test_results_rows_and_csv(analysed, tiny_model):
    bad = an.analyze_bytes(b"junk", "junk.bin", tiny_model)
    rows = an.results_rows([analysed, bad], 0.5)
    assert [r["label"] for r in rows] == [("PNEUMONIA" if analysed.probability >= 0.5 else "NORMAL"), "ERROR"]
    csv_text = an.rows_to_csv(rows, 0.5).decode()
    lines = csv_text.strip().split("\n")
    assert lines[0] == "file,probability,label,threshold,note"
    assert lines[1].startswith(f"chest.png,{analysed.probability:.6f},")
    assert lines[2].startswith("junk.bin,,ERROR,0.5000,")


def test_samples_are_listed_with_their_split():
    samples = an.list_samples()
    assert len(samples) == 4 and all(s.path.is_file() for s in samples)
    seen = [s for s in samples if s.split == "training"]
    assert len(seen) == 1 and "seen in training" in seen[0].title
    assert an.list_samples(config.ROOT_DIR / "no_such_folder") == []


def test_report_png_and_pdf(analysed, tiny_model):
    from pneumo.report import DISCLAIMER, build_report, report_lines

    when = datetime(2026, 1, 2, 3, 4, tzinfo=timezone.utc)
    lines = report_lines(analysed, 0.3, tiny_model.metadata, 1, when)
    text = "\n".join(lines)
    assert an.format_probability(analysed.probability) in text
    assert "threshold 0.30 (chosen by the user; the model's default is 0.50)" in text
    assert "sensitivity 70.0%, specificity 30.0%" in text
    assert "Model: tiny, trained 2026-01-01" in text and "2026-01-02 03:04 UTC" in text
    png = build_report(analysed, 0.3, tiny_model.metadata, fmt="png", when=when)
    im = Image.open(io.BytesIO(png))
    assert im.format == "PNG" and im.size[1] / im.size[0] == pytest.approx(11.69 / 8.27, rel=0.01)
    pdf = build_report(analysed, 0.3, tiny_model.metadata, fmt="pdf", when=when)
    assert pdf.startswith(b"%PDF") and b"pneumo report: chest.png" in pdf
    assert "not a medical device" in DISCLAIMER
    with pytest.raises(ValueError):
        build_report(analysed, 0.3, tiny_model.metadata, fmt="gif")


def test_stages_content_and_timeline():
    from pneumo import stages

    assert [s.name for s in stages.STAGES] == ["Congestion", "Red hepatization", "Grey hepatization", "Resolution"]
    for a, b in zip(stages.STAGES, stages.STAGES[1:], strict=False):
        assert a.end_day == b.start_day  # a continuous timeline
    assert all(s.lung and s.radiograph and s.symptoms and s.timing for s in stages.STAGES)
    assert "does not stage" in stages.NOT_STAGED and len(stages.SOURCES) >= 3
    im = Image.open(io.BytesIO(stages.timeline_png(dpi=50)))
    assert im.format == "PNG" and im.size[0] > im.size[1]


def test_modelcard_rows_label_every_split(tiny_model):
    from pneumo import modelcard

    meta = {**tiny_model.metadata, "metrics": {**tiny_model.metadata["metrics"], "test": {"auc": 0.9, "n": 624},
                                                "custom_set": {"auc": 0.7}}}  # fmt: skip
    rows = modelcard.metric_rows(meta)
    assert [r["data"] for r in rows] == ["Validation split", "Official test folder", "Custom set"]
    assert "never used" in modelcard.split_description("test")
    assert rows[1]["ROC AUC"] == 0.9
    fig = modelcard.evaluation_figure(meta, "validation")
    assert len(fig.axes) == 3  # ROC, confusion, operating points
    assert modelcard.evaluation_figure(meta, "custom_set") is None
    assert modelcard.figure_png(fig).startswith(b"\x89PNG")
