"""The presentation modules on one analysed upload: wording (text), report (PNG/PDF), stages (timeline) and modelcard.

The uploads run through the tiny fixture model, whose output depends on the picture (a chest with an opacity scores
~0.78, a clear one ~0.07), so a report that printed another image's number or label would fail here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import re
import shutil
import subprocess
from datetime import UTC, datetime

import numpy as np
import pytest
from PIL import Image

from pneumo import config
from pneumo import pipeline as an
from pneumo.present import text as pr
from tests.conftest import synthetic_xray


def real_evaluation() -> dict:
    """The maintainers' evaluation of an earlier committed classifier (the longest real one shipped): its sets, n and
    intervals exercise every line of the report."""
    files = sorted((config.MODELS_DIR / "evaluations").rglob("*.json"), key=lambda f: f.stat().st_size)
    return json.loads(files[-1].read_text())


def png_bytes(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def chest_png(opacity: bool) -> bytes:
    return png_bytes(synthetic_xray(320, 240, seed=3, opacity=opacity))


@pytest.fixture(scope="module")
def models(tiny_model):
    return an.Models(tiny_model)


@pytest.fixture(scope="module")
def analysed(models):
    """A chest with an opacity: PNEUMONIA at the tiny model's threshold 0.5."""
    return an.analyze_bytes(chest_png(opacity=True), "chest.png", models)


@pytest.fixture(scope="module")
def clear(models):
    """The same chest without the opacity: NORMAL."""
    return an.analyze_bytes(chest_png(opacity=False), "clear.png", models)


def test_the_two_uploads_get_different_answers(analysed, clear):
    """The premise of the report tests below: the tiny model tells the two pictures apart, by a margin."""
    assert analysed.label == "PNEUMONIA" and analysed.probability > 0.65
    assert clear.label == "NORMAL" and clear.probability < 0.3
    assert pr.format_probability(analysed.probability) != pr.format_probability(clear.probability)


def test_analyze_bytes_matches_the_prediction_path(analysed, tiny_model):
    from pneumo.io.preprocess import preprocess
    from pneumo.pipeline import predict_proba

    x = preprocess(preprocess(synthetic_xray(320, 240, seed=3, opacity=True), 224)[..., 0], tiny_model.image_size)
    assert analysed.probability == pytest.approx(float(predict_proba(tiny_model.model, x)[0]), abs=1e-6)
    assert analysed.pixels.shape == (240, 320) and not analysed.pixels.flags.writeable
    assert analysed.cam224.shape == (224, 224) and not analysed.cam224.flags.writeable
    assert analysed.facts == {"Format": "PNG", "Size": "320 × 240 pixels"}
    assert analysed.digest == hashlib.sha256(chest_png(opacity=True)).hexdigest()
    assert not analysed.error and analysed.in_scope and analysed.warnings == () and analysed.has_probability


def test_unreadable_bytes_give_an_error_not_an_exception(models):
    res = an.analyze_bytes(b"%PDF-1.7 not an x-ray", "letter.pdf", models)
    assert res.label == an.LABEL_ERROR and res.error == "Not an image: this is a PDF document."
    assert not res.has_probability and res.pixels is None and res.name == "letter.pdf"


def test_overlay_is_full_resolution_and_class_dependent(analysed, clear, tiny_model):
    """Each class's overlay shows that class's evidence only: the opacity is tinted for PNEUMONIA and left grey for
    NORMAL, the clear chest the other way round."""
    from pneumo.explain.draw import result_overlay

    meta = tiny_model.metadata
    pneu = result_overlay(analysed, meta, 1, 0.5)
    norm = result_overlay(analysed, meta, 0, 0.5)
    assert pneu.shape == (240, 320, 3) and pneu.dtype == np.uint8
    plain = result_overlay(analysed, meta, 1, 0.0)
    assert np.array_equal(plain[..., 0], analysed.pixels)  # opacity 0 leaves the radiograph untouched
    assert not np.array_equal(pneu[..., 0], pneu[..., 2]), "PNEUMONIA evidence on the opacity: tinted"
    assert np.array_equal(norm, plain), "no NORMAL evidence on the opacity: the radiograph as it is"
    clear_pneu, clear_norm = result_overlay(clear, meta, 1, 0.5), result_overlay(clear, meta, 0, 0.5)
    assert np.array_equal(clear_pneu[..., 0], clear.pixels) and not np.array_equal(clear_norm[..., 0], clear.pixels)


def test_format_probability_never_claims_certainty():
    assert pr.format_probability(0.999995) == "> 99.9%" and pr.format_probability(0.00001) == "< 0.1%"
    assert pr.format_probability(0.4567) == "45.7%" and pr.format_probability(0.9994) == "99.9%"


def test_format_threshold_never_hides_a_third_decimal():
    assert pr.format_threshold(0.5, percent=False) == "0.50" and pr.format_threshold(0.435, percent=False) == "0.435"
    assert pr.format_threshold(0.42) == "42%" and pr.format_threshold(0.435) == "43.5%"  # like the probabilities
    assert "the 43.5% threshold" in pr.plain_verdict(0.9, 0.435)


def test_explained_class_follows_the_label_at_the_threshold():
    from pneumo.explain.cam import explained_class

    assert explained_class("Predicted class", 0.7, 0.5) == 1
    assert explained_class("Predicted class", 0.7, 0.8) == 0
    assert explained_class("NORMAL", 0.9, 0.5) == 0
    assert explained_class("PNEUMONIA", 0.1, 0.5) == 1


def test_operating_point_lookup(tiny_model):
    op = pr.operating_point(tiny_model.metadata, 0.3)
    assert (op.threshold, op.sensitivity, op.specificity) == (0.3, 0.7, 0.3)
    assert pr.operating_point({"operating_points": []}, 0.3) is None
    far = {"operating_points": [{"threshold": 0.5, "sensitivity": 1, "specificity": 0}]}
    assert pr.operating_point(far, 0.3) is None  # nothing stored near 0.3


@pytest.mark.parametrize(
    ("p", "t", "label", "words"),
    [
        # the cases of issue 10 at the committed model's threshold 0.97
        (0.237, 0.97, "NORMAL", "far below the 97% threshold"),
        (0.995, 0.97, "PNEUMONIA", "clearly above the 97% threshold"),
        (0.928, 0.97, "NORMAL", "just below the 97% threshold (borderline)"),
        # and at other thresholds
        (0.52, 0.5, "PNEUMONIA", "just above the 50% threshold (borderline)"),
        (0.9, 0.5, "PNEUMONIA", "clearly above"),
        (0.999, 0.5, "PNEUMONIA", "far above"),
        (0.01, 0.5, "NORMAL", "far below"),
        (0.237, 0.1, "PNEUMONIA", "clearly above the 10% threshold"),
        (0.05, 0.01, "PNEUMONIA", "clearly above the 1% threshold"),
        (0.2, 0.01, "PNEUMONIA", "far above the 1% threshold"),
    ],
)
def test_verdict_never_contradicts_the_number(p, t, label, words):
    v = pr.verdict(p, t)
    text = pr.plain_verdict(p, t)
    assert v.label == label and words in text and text.startswith(f"**P(pneumonia) {pr.format_probability(p)} is")
    assert "confident" not in text.lower()  # no claim about certainty, at any threshold
    # a number above 50 % labelled NORMAL, or below 50 % labelled PNEUMONIA, always comes with the reason
    contradicts = (label == "NORMAL") == (p >= 0.5)
    assert ("yet the label is" in v.caution) == contradicts
    # the colour follows the label, amber near the threshold: never green for PNEUMONIA or red for NORMAL
    assert v.colour == (pr.COLOURS["near"] if v.position == "near" else pr.COLOURS[label])


def test_probability_meaning_says_what_it_is_not():
    meta = {"training": {"data": {"train_images": 5216, "train_pneumonia": 3875}}}
    text = pr.probability_meaning(meta, ece=0.137, ece_set="official test split")
    assert "74% of images show pneumonia" in text and "**not** this child's chance" in text and "ECE 0.137" in text
    assert "74%" not in pr.probability_meaning({})
    assert "poorly calibrated (ECE 0.137" in text  # a large error is called so
    good = pr.probability_meaning(meta, ece=0.028, ece_set="official test split")
    assert "poorly" not in good and "within 2.8% of the observed frequencies (ECE 0.028" in good


def test_wilson_interval_and_operating_point_counts(tiny_model):
    lo, hi = pr.wilson(203, 234)  # the official test split's specificity: 203 of 234 normals
    assert (round(lo, 4), round(hi, 4)) == (0.8181, 0.9051)  # the maintainers' Wilson interval
    assert pr.wilson(0, 0) is None
    op = pr.operating_point(tiny_model.metadata, 0.3)
    assert (op.n_pneumonia, op.n_normal) == (2, 2) and op.sensitivity_ci[0] < 0.7 < op.sensitivity_ci[1]


def test_warning_codes_and_scope_hooks(analysed):
    from types import SimpleNamespace

    from pneumo.checks.scope import WARNING_CODES

    assert pr.warning_sentences(("low_resolution", "A sentence as it is.")) == [
        WARNING_CODES["low_resolution"], "A sentence as it is."]  # fmt: skip
    assert pr.is_out_of_scope(SimpleNamespace(label=an.LABEL_OUT_OF_SCOPE, in_scope=True))
    assert pr.is_out_of_scope(SimpleNamespace(label="NORMAL", in_scope=False))  # forced: a label, yet out of scope
    assert not pr.is_out_of_scope(SimpleNamespace(label="NORMAL", in_scope=True))
    assert not pr.is_out_of_scope(analysed)
    assert pr.is_out_of_scope(dataclasses.replace(analysed, in_scope=False, label=an.LABEL_OUT_OF_SCOPE))


def test_results_rows_and_csv(analysed, clear, models):
    from pneumo.present.table import COLUMNS, display_rows, result_row, to_csv

    bad = an.analyze_bytes(b"junk", "junk.bin", models)
    rows = display_rows([analysed, clear, bad], 0.5)
    assert [r["label"] for r in rows] == ["PNEUMONIA", "NORMAL", "ERROR"]
    assert rows[0]["shown"] == pr.format_probability(analysed.probability) and rows[2]["shown"] == "–"
    assert rows[1]["shown"] == pr.format_probability(clear.probability)
    assert [r["probability"] for r in rows] == [analysed.probability, clear.probability, None]
    csv_text = to_csv(result_row(r, 0.5) for r in (analysed, clear, bad)).decode()
    lines = csv_text.strip().split("\n")
    assert lines[0] == ",".join(COLUMNS) == "path,probability,label,threshold,error,warnings,note"
    assert lines[1].startswith(f"chest.png,{analysed.probability:.6f},PNEUMONIA,0.5000,")
    assert lines[2].startswith(f"clear.png,{clear.probability:.6f},NORMAL,0.5000,")
    assert lines[3].startswith("junk.bin,,ERROR,0.5000,")
    # the user's threshold relabels: the same schema row at another threshold
    assert result_row(analysed, 0.99).label == "NORMAL" and result_row(analysed, 0.99).threshold == 0.99


def test_json_record_has_numbers_and_a_warning_list(analysed):
    """JSON gets the probability as a number with 6 decimals and the warnings as a list, not a joined string."""
    from pneumo.present.table import result_row

    row = result_row(dataclasses.replace(analysed, warnings=("rotated", "low_resolution")), 0.5)
    rec = row.record()
    assert rec["probability"] == round(analysed.probability, 6) and isinstance(rec["probability"], float)
    assert rec["warnings"] == ["rotated", "low_resolution"] and rec["threshold"] == 0.5
    assert row.csv_cells()[5] == "rotated;low_resolution"
    assert pr.WARNING_CODES["rotated"] in rec["note"]


def test_samples_are_listed_with_their_split():
    from pneumo.io.samples import list_samples

    samples = list_samples()
    assert len(samples) == 4 and all(s.path.is_file() for s in samples)
    seen = [s for s in samples if s.split == "training"]
    assert len(seen) == 1 and "seen in training" in seen[0].title
    # the others were never trained on, but their split chose the threshold: never called "held out"
    assert all("validation split" in s.title and "held out" not in s.title for s in samples if s.split == "validation")
    assert list_samples(config.ROOT_DIR / "no_such_folder") == []


def probability_line(result, threshold_words: str) -> str:
    """The report's model-output line, built from the Result's own probability."""
    return f"Model output: P(pneumonia) = {pr.format_probability(result.probability)}, {threshold_words}"


def test_report_png_and_pdf(analysed, clear, tiny_model):
    from pneumo.present.report import DISCLAIMER, build_report, report_lines

    when = datetime(2026, 1, 2, 3, 4, tzinfo=UTC)
    user_t = "the chosen threshold 30% (the model's stored threshold is 50%)"
    lines = report_lines(analysed, 0.3, tiny_model.metadata, 1, when)
    text = "\n".join(lines)
    # no file name unless asked for; the disclaimer first; then what the model computed, then the label
    no_name = "Image reference: none given (the file name is printed only on request)"
    above = probability_line(analysed, f"at or above {user_t}: the model's PNEUMONIA side.")
    assert lines[:4] == [no_name, DISCLAIMER, above, "Label at this threshold: PNEUMONIA"]
    other = report_lines(clear, 0.3, tiny_model.metadata, 0, when, show_name=True, reference="study 7")
    below = probability_line(clear, f"below {user_t}: the model's NORMAL side.")
    assert other[:4] == ["Image reference: study 7 · File: clear.png", DISCLAIMER, below,
                         "Label at this threshold: NORMAL"]  # fmt: skip
    own = report_lines(analysed, 0.5, tiny_model.metadata, 1, when)
    assert own[2] == probability_line(analysed, "at or above the stored threshold 50%: the model's PNEUMONIA side.")
    assert "sensitivity 70.0% (95% CI" in text and "specificity 30.0% (95% CI" in text and "4 images" in text
    assert "not yet been independently evaluated" in text  # no evaluation given
    assert "Model: tiny, trained 2026-01-01" in text and "2026-01-02 03:04 UTC" in text
    png = build_report(analysed, 0.3, tiny_model.metadata, fmt="png", when=when)
    im = Image.open(io.BytesIO(png))
    assert im.format == "PNG" and im.size[1] / im.size[0] == pytest.approx(11.69 / 8.27, rel=0.01)
    assert im.size[0] >= 8.27 * 200 - 2  # print resolution: at least 200 dpi on A4
    pdf = build_report(analysed, 0.3, tiny_model.metadata, fmt="pdf", when=when)
    assert pdf.startswith(b"%PDF") and b"chest.png" not in pdf  # the metadata never names the file
    assert b"/MediaBox [0 0 595.28 841.89]" in pdf and pdf.count(b"/Type /Page\n") + pdf.count(b"/Type /Page ") <= 2
    assert "not a medical device" in DISCLAIMER
    with pytest.raises(ValueError):
        build_report(analysed, 0.3, tiny_model.metadata, fmt="gif")
    with pytest.raises(ValueError, match="needs an analysed image"):
        build_report(an.analyze_bytes(b"junk", "junk.bin", an.Models(tiny_model)), 0.3, tiny_model.metadata)


@pytest.mark.skipif(not (shutil.which("pdftotext") and shutil.which("pdftoppm")), reason="no poppler-utils")
def test_rendered_pdf_says_this_images_result(analysed, clear, tiny_model, tmp_path):
    """The PDF as a reader's viewer shows it (poppler): one A4 page with ink, and the label and probability of the
    image it was made for, not another's."""
    from pneumo.present.report import build_report

    for res, label in ((analysed, "PNEUMONIA"), (clear, "NORMAL")):
        pdf = tmp_path / f"{label}.pdf"
        pdf.write_bytes(build_report(res, 0.5, tiny_model.metadata, fmt="pdf"))
        words = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True)
        text = " ".join(words.stdout.split())
        assert f"Model output: P(pneumonia) = {pr.format_probability(res.probability)}," in text
        assert f"Label at this threshold: {label}" in text
        other = "NORMAL" if label == "PNEUMONIA" else "PNEUMONIA"
        assert f"Label at this threshold: {other}" not in text
        subprocess.run(["pdftoppm", "-png", "-r", "40", str(pdf), str(tmp_path / label)], check=True)
        (page,) = sorted(tmp_path.glob(f"{label}*.png"))  # one page
        grey = np.asarray(Image.open(page).convert("L"))
        assert grey.shape[0] / grey.shape[1] == pytest.approx(297 / 210, rel=0.02) and grey.min() < 60


def test_report_png_text_stays_inside_the_page(analysed, tiny_model):
    """Every line wraps before the right margin, also the bold probability line at a user's threshold with a long
    file name and warnings (it once ran off the page)."""
    from pneumo.present.report import build_report

    long = dataclasses.replace(analysed, name="x" * 40 + "_a_long_file_name.png", warnings=("lung_field_short",))
    png = build_report(long, 0.435, tiny_model.metadata, fmt="png")
    page = np.asarray(Image.open(io.BytesIO(png)).convert("L"))  # (H, W)
    margin = page[:, int(0.95 * page.shape[1]) :]  # the right 5 % of the page
    assert margin.min() > 245, "ink in the right margin: a line was not wrapped"
    assert page[:, : int(0.9 * page.shape[1])].min() < 50  # and the page does carry text


def test_report_quotes_the_independent_evaluation_and_marks_out_of_scope(analysed, tiny_model):

    from pneumo.present.report import report_lines

    # a real one: the whole-image model's, whose official-test figures cover all 624 images (its time had no gate)
    evaluation = json.loads(
        (
            config.MODELS_DIR
            / "evaluations"
            / "previous"
            / f"{'16bf2ae5f85eaf0dfb415b30b18a18e8f057eeefba357962583330ad0308a50b'}.json"
        ).read_text()
    )
    when = datetime(2026, 1, 2, tzinfo=UTC)
    text = "\n".join(report_lines(analysed, 0.5, tiny_model.metadata, 1, when, evaluation))
    assert "On new patients (official test split, 624 images" in text
    assert "specificity 86.8% (95% CI 81.8–90.5%)" in text
    assert "no better than chance" in text and "OUTSIDE INTENDED USE" not in text
    assert "a target that was met, not a measurement" in text  # the validation sensitivity is not sold as measured
    odd = dataclasses.replace(analysed, in_scope=False, label=an.LABEL_OUT_OF_SCOPE, warnings=("adult",))
    lines = report_lines(odd, 0.5, tiny_model.metadata, 1, when, evaluation)
    assert lines[2].startswith("OUTSIDE INTENDED USE")  # the refusal leads, right under the disclaimer
    assert lines[3] == ("Model output, shown on request and meaningless for this image: P(pneumonia) = "
                        f"{pr.format_probability(analysed.probability)}.")  # fmt: skip
    talk = r"(above|below) the ([\d.]+% |stored |chosen )?threshold|the model's \w+ side"
    assert not any(re.search(talk, x) for x in lines)  # no threshold talk
    assert any(re.search(talk, x) for x in report_lines(analysed, 0.5, tiny_model.metadata, 1, when))  # control
    assert not any("Label at this" in x for x in lines)


def test_stages_content_and_timeline():
    from pneumo.present import pneumonia_stages as stages

    assert [s.name for s in stages.STAGES] == ["Congestion", "Red hepatization", "Grey hepatization", "Resolution"]
    for a, b in zip(stages.STAGES, stages.STAGES[1:], strict=False):
        assert a.end_day == b.start_day  # a continuous timeline
    assert all(s.lung and s.radiograph and s.symptoms and s.timing for s in stages.STAGES)
    assert "does not stage" in stages.NOT_STAGED and len(stages.SOURCES) >= 3
    im = Image.open(io.BytesIO(stages.timeline_png(dpi=50)))
    assert im.format == "PNG" and im.size[0] > im.size[1]


def test_modelcard_rows_label_every_split(tiny_model):
    from pneumo.present import modelcard

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


def test_out_of_scope_rows_and_report_say_why_in_words(analysed, tiny_model):
    """The table/CSV note and the report explain an out-of-scope image with the codes' sentences, not raw codes."""
    from pneumo.checks.scope import WARNING_CODES
    from pneumo.present.report import report_lines

    adult = dataclasses.replace(analysed, in_scope=False, label=an.LABEL_OUT_OF_SCOPE, warnings=("adult",))
    from pneumo.present.table import display_rows

    (row,) = display_rows([adult], 0.5)
    assert row["label"] == "OUT_OF_SCOPE" and row["probability"] is None  # the CLI's label: one schema
    assert row["note"] == WARNING_CODES["adult"]
    when = datetime(2026, 1, 2, tzinfo=UTC)
    text = "\n".join(report_lines(adult, 0.5, tiny_model.metadata, 1, when, None))
    assert "OUTSIDE INTENDED USE" in text and WARNING_CODES["adult"] in text and "adult" not in text.split()
    with_scale = {**tiny_model.metadata, "cam_scale": {"NORMAL": 1.0, "PNEUMONIA": 1.0}}
    text = "\n".join(report_lines(analysed, 0.5, with_scale, 0, when, None))
    assert "on one scale for all images" in text and "own maximum" not in text


def test_report_follows_the_outline_switch(analysed, tiny_model):
    from pneumo.present.report import _images

    mask = np.zeros((224, 224), bool)
    mask[40:180, 30:100] = mask[40:180, 124:194] = True
    res = dataclasses.replace(analysed, lung_mask=mask)
    with_line, _ = _images(res, 1, 0.45, tiny_model.metadata, outline=True)
    without, _ = _images(res, 1, 0.45, tiny_model.metadata, outline=False)
    assert not np.array_equal(with_line, without)
    assert np.array_equal(without[..., 0], without[..., 1]), "no outline: the radiograph stays grey"


def test_probability_line_for_an_out_of_scope_image_does_not_speak_of_a_child():
    meta = {"training": {"data": {"train_images": 100, "train_pneumonia": 74}}}
    normal = pr.probability_meaning(meta)
    odd = pr.probability_meaning(meta, out_of_scope=True)
    assert "child's chance" in normal and "child's chance" not in odd
    assert "outside that use" in odd and "means nothing" in odd
    # one readable sentence on what the model learnt from (a new user found "pneumonia of young children's films")
    assert odd.startswith("The probability is the model's score for this image, learnt on frontal chest films of "
                          "young children (74% of them showing pneumonia).")  # fmt: skip
    assert pr.probability_meaning({}, out_of_scope=True).startswith(
        "The probability is the model's score for this image, learnt on frontal chest films of young children. "
    )


def test_a_faint_map_is_said_in_words(analysed):
    """A map whose peak is well below the class's typical peak gets a sentence, in the app and in the report; so does
    a stronger map of the other class."""
    from pneumo.explain.cam import faint_note
    from pneumo.present.report import report_lines

    cam = np.zeros((224, 224), np.float32)
    cam[100:120, 60:90] = 0.12  # PNEUMONIA evidence at 60 % of the scale's 'typical peak' of 0.2
    cam[140:160, 130:150] = -0.02  # a little NORMAL evidence
    meta = {"cam_scale": {"NORMAL": 0.2, "PNEUMONIA": 0.2}, "threshold": 0.5}
    strong = dataclasses.replace(analysed, cam224=cam)
    faint = dataclasses.replace(analysed, cam224=cam * 0.5)  # PNEUMONIA peak 0.30, NORMAL 0.05
    assert faint_note(strong, meta, 1) == ""
    note = faint_note(faint, meta, 1)
    assert note.startswith("The map is faint (peak 0.30)") and "typical PNEUMONIA image" in note
    assert "stronger" not in note  # the NORMAL map is weaker still
    assert "The PNEUMONIA map is stronger on this image (peak 0.30)." in faint_note(faint, meta, 0)
    assert faint_note(faint, {"threshold": 0.5}, 1) == ""  # no absolute scale: every map is stretched, never faint
    text = " ".join(" ".join(report_lines(faint, 0.5, meta, 1, datetime(2026, 1, 2, tzinfo=UTC))).split())
    assert note in text


@pytest.mark.skipif(not (shutil.which("pdfinfo") and shutil.which("pdftotext")), reason="no poppler-utils")
@pytest.mark.parametrize("long_name", [False, True])
@pytest.mark.parametrize("scope", ["in", "out"])
@pytest.mark.parametrize("user_threshold", [False, True])
def test_report_is_always_one_page_with_the_disclaimer(analysed, tiny_model, tmp_path, long_name, scope,
                                                       user_threshold):  # fmt: skip
    """With the real shipped evaluation (its text is the longest), a 120-character name, every warning of the
    out-of-scope path and a user's threshold: the PDF is one A4 page that still ends with the disclaimer, and the
    PNG keeps a blank bottom margin (nothing pushed off the page)."""

    from pneumo.checks.scope import WARNING_CODES
    from pneumo.present.report import build_report

    evaluation = real_evaluation()
    res = analysed
    if long_name:
        res = dataclasses.replace(res, name="n" * 116 + ".png")
    if scope == "out":
        res = dataclasses.replace(res, in_scope=False, label=an.LABEL_OUT_OF_SCOPE, warnings=tuple(WARNING_CODES))
    else:
        res = dataclasses.replace(res, warnings=tuple(c for c in WARNING_CODES if c != "adult")[:4])
    t = 0.3 if user_threshold else 0.5
    pdf = tmp_path / "r.pdf"
    pdf.write_bytes(build_report(res, t, tiny_model.metadata, fmt="pdf", evaluation=evaluation))
    info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True).stdout
    assert re.search(r"^Pages:\s+1$", info, re.M), info
    text = " ".join(subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True).stdout.split())
    assert "not a medical device" in text and "Intended use" in text
    png = build_report(res, t, tiny_model.metadata, fmt="png", evaluation=evaluation)
    grey = np.asarray(Image.open(io.BytesIO(png)).convert("L"))
    assert grey[int(0.975 * grey.shape[0]) :].min() > 245, "ink in the bottom margin: the page overflowed"


def test_a_refusal_leads_with_its_most_specific_reason_and_one_remark():
    """'small' never leads; another modality wins over looks; at most one supporting remark; nothing for an image
    that no code refuses."""
    words = pr.WARNING_CODES
    assert pr.refusal_sentences(["low_resolution", "not_chest", "not_radiograph"]) == [
        words["not_radiograph"], words["low_resolution"]]  # fmt: skip
    assert pr.refusal_sentences(["not_chest", "not_radiograph"]) == [words["not_radiograph"]]  # no contradiction
    assert pr.refusal_sentences(["low_resolution", "adult"]) == [words["adult"], words["low_resolution"]]
    assert pr.refusal_sentences(["adult"]) == [words["adult"]]
    assert pr.refusal_sentences(["low_resolution", "rotated"]) == []
    assert pr.refusal_sentences(["possibly_mirrored"]) == []  # a warning: the film is analysed as it is


def test_a_possibly_mirrored_film_keeps_its_label_with_the_warning_in_the_row(analysed):
    from pneumo.present.table import result_row

    row = result_row(dataclasses.replace(analysed, warnings=("possibly_mirrored",)), 0.5)
    assert row.label == "PNEUMONIA" and row.probability == analysed.probability
    assert row.warnings == ("possibly_mirrored",) and row.note == pr.WARNING_CODES["possibly_mirrored"]
    assert "may be mirrored" in row.note


HOSTILE_NAMES = ["$$.png", "price_$x_$y.png", r"\frac{a}{b}.png", "**bold**.png", "<b>x</b>.png", "a--b__c.png"]


@pytest.mark.skipif(not shutil.which("pdftotext"), reason="no poppler-utils")
@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_report_draws_a_hostile_name_as_plain_text(analysed, tiny_model, tmp_path, name):
    """'$' is not mathtext in the PNG (matplotlib), and '**' or '<b>' is not markup in the PDF (fpdf2): both reports
    build, and the PDF's text layer holds the name exactly as it was."""
    from pneumo.present.report import build_report

    res = dataclasses.replace(analysed, name=name, facts={**analysed.facts, "View position": "$AP$ **x**"})
    png = build_report(res, 0.5, tiny_model.metadata, fmt="png", show_name=True)
    im = Image.open(io.BytesIO(png))
    assert im.format == "PNG" and name not in im.info.get("Title", "")  # never in the metadata
    pdf = tmp_path / "r.pdf"
    pdf.write_bytes(build_report(res, 0.5, tiny_model.metadata, fmt="pdf", show_name=True))
    out = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    assert f"File: {name}" in out
    assert "View position $AP$ **x**" in " ".join(out.split())


def test_report_colour_bar_shows_the_scale_of_the_class_shown(clear, tiny_model, monkeypatch):
    """The colour bar of a NORMAL heatmap is cool (no red anywhere), a PNEUMONIA one warm; both formats draw the bar
    of the class the report shows."""
    from pneumo.present import report

    def reds(png: bytes) -> int:
        rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)  # (h, w, 3)
        r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
        return int(((r > g + 60) & (r > b + 60)).sum())  # clearly red or orange pixels

    def cools(png: bytes) -> int:
        rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
        return int(((rgb[..., 2] > rgb[..., 0] + 60) | (rgb[..., 1] > rgb[..., 0] + 60)).sum())

    normal, pneumonia = report.colourbar_png("NORMAL", 0), report.colourbar_png("PNEUMONIA", 1)
    assert reds(normal) == 0 and cools(normal) > 1000
    assert reds(pneumonia) > 1000
    drawn: list[int] = []
    real = report.heat_lut
    monkeypatch.setattr(report, "heat_lut", lambda cls: drawn.append(cls) or real(cls))
    for fmt in ("png", "pdf"):
        drawn.clear()
        report.build_report(clear, 0.3, tiny_model.metadata, fmt=fmt, target_class=0)
        assert drawn and set(drawn) == {0}, fmt


def test_model_output_line_states_number_threshold_and_side():
    """The one sentence the app and the report lead with: the number, the threshold and its side, no headline."""
    line = pr.model_output_line(0.781, 0.5, 0.5)
    assert (
        line == "Model output: P(pneumonia) = 78.1%, at or above the stored threshold 50%: the model's PNEUMONIA side."
    )
    assert pr.model_output_line(0.5, 0.5, 0.5).startswith("Model output: P(pneumonia) = 50.0%, at or above")  # >=
    low = pr.model_output_line(0.2, 0.3, 0.5)
    assert low == ("Model output: P(pneumonia) = 20.0%, below the chosen threshold 30% (the model's stored threshold "
                   "is 50%): the model's NORMAL side.")  # fmt: skip
    assert (
        pr.model_output_line(0.2, 0.3)
        == "Model output: P(pneumonia) = 20.0%, below the threshold 30%: the model's NORMAL side."
    )
    assert pr.model_output_line(0.99999, 0.5, 0.5).startswith("Model output: P(pneumonia) > 99.9%, at or above")
    odd = pr.model_output_line(0.9, 0.5, 0.5, out_of_scope=True)
    assert "meaningless" in odd and "threshold" not in odd and "PNEUMONIA" not in odd
