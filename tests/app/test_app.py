"""AppTest checks of every page of the Streamlit app, run against the tiny fixture model (via $PNEUMO_MODEL)."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pneumo import config
from pneumo.present.text import format_probability, literal, model_output_line
from tests.conftest import ROOT, synthetic_xray

streamlit_testing = pytest.importorskip("streamlit.testing.v1")
AppTest = streamlit_testing.AppTest

APP = str(ROOT / "app.py")
TIMEOUT = 120  # the first run imports TensorFlow and loads the model


def png_bytes(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def dicom_bytes(modality: str = "DX", width: int = 300, height: int = 260, seed: int = 0, view: str = "PA") -> bytes:
    """A small DICOM with patient fields that the app must never show."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("x.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "SECRET-4711"
    ds.PatientBirthDate = "19800101"
    ds.Modality = modality
    ds.ViewPosition = view
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = height, width
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    pixels = synthetic_xray(width, height, seed=seed).astype(np.uint16) * 16  # (H, W) 12-bit
    ds.PixelData = pixels.tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def all_text(at) -> str:
    """Every piece of text the page shows (for checks that something never appears)."""
    parts = []
    for kind in ("markdown", "caption", "error", "warning", "info", "title", "subheader", "header", "metric"):
        for el in getattr(at, kind):
            parts.append(str(getattr(el, "value", "")))
            parts.append(str(getattr(el, "label", "")))
    for img in at.image:
        parts += list(img.captions)
    return "\n".join(parts)


def frame_with(at, column: str):
    """The first dataframe or static table on the page that has ``column``."""
    return next(d.value for d in [*at.dataframe, *at.table] if column in d.value.columns)


OUTPUT_LINE = re.compile(
    r"^Model output(?:, [^:]+)?: P\(pneumonia\) (?:= )?(.+?%)[,.](?: .*the model's (\w+) side\.)?$"
)


def model_output(at) -> re.Match | None:
    """The page's model-output line (pneumo.present.text.model_output_line), parsed; None when there is none."""
    lines = [m for m in at.markdown if m.value.startswith("Model output")]
    assert len(lines) <= 1, [m.value for m in lines]
    return OUTPUT_LINE.match(lines[0].value) if lines else None


def shown_probability(at) -> str | None:
    """The P(pneumonia) the page's model-output line shows, e.g. '43.2%'; None when the page shows no result."""
    line = model_output(at)
    return line.group(1) if line else None


def shown_side(at) -> str | None:
    """The side of the threshold the model-output line names ('NORMAL' or 'PNEUMONIA'); None when it names none."""
    line = model_output(at)
    return line.group(2) if line else None


def metric(at, label: str) -> str | None:
    for m in at.metric:
        if m.label == label:
            return m.value
    return None


@pytest.fixture
def app(tiny_model_path, monkeypatch):
    """A fresh AppTest of app.py that uses the tiny model, after its first run."""
    monkeypatch.setenv("PNEUMO_MODEL", str(tiny_model_path))
    return AppTest.from_file(APP, default_timeout=TIMEOUT).run()


@pytest.fixture
def pipeline_p(tiny_model):
    """P(pneumonia) of a file's bytes as pneumo.pipeline computes it with the tiny model, without the app (the app
    loads the same model from $PNEUMO_MODEL; the tiny model's folder has no scope gate)."""
    from pneumo.pipeline import Models, analyze_bytes

    models = Models(tiny_model)

    def predict(data: bytes, name: str = "chest.png") -> float:
        res = analyze_bytes(data, name, models)
        assert res.probability is not None, res.error
        return float(res.probability)

    return predict


def upload(at, files: list[tuple[str, bytes]]):
    at.file_uploader(key="uploads").set_value([(name, data, "application/octet-stream") for name, data in files])
    return at.run()


def test_analyze_start_page_shows_disclaimer_and_uploader(app):
    assert not app.exception
    assert app.title[0].value == "Analyze a chest X-ray"
    assert any("not a medical device" in w.value for w in app.warning)
    assert len(app.file_uploader) == 1
    assert shown_probability(app) is None
    assert not app.slider  # nothing to set before there is a result


def test_start_page_paints_before_tensorflow_is_needed():
    """The Analyze page's first run (nothing uploaded) does not import TensorFlow: its first paint is fast.

    The background warm-up (which does import it, after the paint) is replaced by a recorder here: the question is
    what the page's own run needs, and a process must not exit while a thread is half-way through importing TF.
    """
    import subprocess
    import sys

    code = (
        "import sys; from streamlit.testing.v1 import AppTest; import app_pages.common as common; "
        "calls = []; common.start_warm_up = lambda: calls.append(1); "
        f"at = AppTest.from_file({APP!r}, default_timeout=120).run(); "
        "assert not at.exception, at.exception; print(len(calls), 'tensorflow' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "1 False"  # the warm-up was asked for; TF was not imported


def test_an_upload_on_the_committed_models_never_imports_tensorflow():
    """The deployed app analyses an upload with the networks' TFLite copies alone: in a fresh process, after the
    result is on the page (and the background warm-up has finished), TensorFlow and Keras were never imported."""
    import subprocess
    import sys

    from pneumo.pipeline import analyze_bytes, load_models

    sample = ROOT / "assets" / "samples" / "pneumonia_person724_virus_1343.jpeg"
    expected = format_probability(analyze_bytes(sample.read_bytes(), sample.name, load_models()).probability)
    code = (
        "import sys; from streamlit.testing.v1 import AppTest; import app_pages.common as common; "
        f"at = AppTest.from_file({APP!r}, default_timeout=120).run(); "
        "at.file_uploader(key='uploads').set_value([('s" + sample.suffix + "', open(" + repr(str(sample)) + ", 'rb')"
        ".read(), 'application/octet-stream')]); at.run(); "
        "common._WARM_UP is not None and common._WARM_UP.join(120); "
        "assert not at.exception, at.exception; "
        "print([m.value for m in at.markdown if m.value.startswith('Model output')], 'tensorflow' in sys.modules, "
        "'keras' in sys.modules)"
    )
    env = {k: v for k, v in os.environ.items() if k != "PNEUMO_MODEL"}  # the committed models
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    last = out.stdout.strip().splitlines()[-1]
    assert last.endswith("] False False"), out.stdout[-500:]
    shown = expected if expected[0] in "<>" else "= " + expected  # '> 99.9%' is not preceded by '='
    assert f"Model output: P(pneumonia) {shown}," in last, (expected, last)  # the result is on the page


def test_upload_shows_probability_label_and_overlay(app, pipeline_p, tiny_model):
    from pneumo.pipeline import label_for

    data = png_bytes(synthetic_xray(seed=11, opacity=True))
    upload(app, [("chest.png", data)])
    assert not app.exception and not app.error
    p = pipeline_p(data)
    # the tiny model answers differently for a clear chest: a page that showed another image's number would fail
    assert format_probability(pipeline_p(png_bytes(synthetic_xray(seed=11)))) != format_probability(p)
    assert shown_probability(app) == format_probability(p)
    assert shown_side(app) == label_for(p, tiny_model.threshold)
    # the report's sentence, in ordinary type; the label is no headline (no metric, no heading shows it)
    t = tiny_model.threshold
    assert model_output(app).group(0) == model_output_line(p, t, t)
    assert not [m for m in app.metric if m.value in ("NORMAL", "PNEUMONIA")]
    assert not [h for h in (*app.header, *app.subheader, *app.title) if h.value in ("NORMAL", "PNEUMONIA")]
    big = [m.value for m in app.markdown if m.value.startswith(("#", "**")) and re.search("NORMAL|PNEUMONIA", m.value)]
    assert not big, big
    # the legend under the heatmap shows the overlay's own colour scale for the class shown
    from pneumo.explain.draw import heat_css_stops

    legends = [h.proto.body for h in app.get("html") if "linear-gradient" in h.proto.body]
    shown = 1 if label_for(p, t) == "PNEUMONIA" else 0
    assert len(legends) == 1 and heat_css_stops(shown) in legends[0] and heat_css_stops(1 - shown) not in legends[0]
    app.radio(key="explain").set_value(config.CLASS_NAMES[1 - shown]).run()
    legends = [h.proto.body for h in app.get("html") if "linear-gradient" in h.proto.body]
    assert len(legends) == 1 and heat_css_stops(1 - shown) in legends[0]
    app.radio(key="explain").set_value("Predicted class").run()
    captions = [c for img in app.image for c in img.captions]
    assert len(app.image) == 1 and captions[0].startswith("Heatmap of evidence for")  # only the image in view is sent
    app.radio(key="view").set_value("Radiograph").run()
    captions = [c for img in app.image for c in img.captions]
    assert len(captions) == 1 and captions[0].startswith(
        "The radiograph as analysed, at display size (300 × 260 px, shown enlarged)"
    )
    app.radio(key="view").set_value("Heatmap").run()
    assert "300 × 260" in all_text(app)  # the size, once, in the facts
    assert not app.get("download_button")  # reports are made on request, for the settings of that moment
    app.button(key="make_report").click().run()
    labels = {b.label for b in app.get("download_button")}
    assert labels >= {"Report (PDF)", "Report (PNG, 200 dpi)", "Overlay (300 × 260 px)"}
    app.slider(key="opacity").set_value(80).run()  # settings changed: the old files are not offered any more
    assert not app.get("download_button")


def test_threshold_relabels_and_shows_validation_operating_point(app, pipeline_p):
    data = png_bytes(synthetic_xray(seed=12))
    upload(app, [("chest.png", data)])
    p = pipeline_p(data)
    assert 0.02 < p < 0.98, "the tiny model should give a probability away from the slider ends"
    app.slider(key="threshold_pct").set_value(1.0).run()
    assert shown_side(app) == "PNEUMONIA"
    text = all_text(app)
    # fixture: sens = 1 - t, spec = t on 2 + 2 validation images: counts and Wilson intervals are shown
    assert "Validation split, optimistic" in text and "sensitivity 99.0% (95% CI" in text
    assert "a target that was met, not a measurement" in text  # the split that chose the threshold says so
    assert "specificity 1.0% (95% CI" in text
    assert "not yet been independently evaluated" in text  # the tiny model has no shipped evaluation
    assert any(b.label.startswith("Reset to the model's threshold") for b in app.button)
    app.slider(key="threshold_pct").set_value(99.0).run()
    assert shown_side(app) == "NORMAL"
    assert shown_probability(app) == format_probability(p)  # the probability itself does not move
    next(b for b in app.button if b.label.startswith("Reset")).click().run()
    assert app.slider(key="threshold_pct").value == pytest.approx(50.0)


def test_widget_changes_reuse_the_cached_analysis(app, monkeypatch):
    """Opacity, explained class and threshold never re-run the network: one analysis-path call per new image."""
    import pneumo.pipeline

    calls = []
    real = pneumo.pipeline.analyze_images
    monkeypatch.setattr(pneumo.pipeline, "analyze_images", lambda *a, **k: calls.append(1) or real(*a, **k))
    data = png_bytes(synthetic_xray(seed=1234, opacity=True))  # bytes no other test uses: not cached yet
    upload(app, [("fresh.png", data)])
    assert len(calls) == 1
    before = app.image[0].value
    app.slider(key="opacity").set_value(90).run()
    after_opacity = app.image[0].value
    app.radio(key="view").set_value("Radiograph").run()
    plain = app.image[0].value
    app.radio(key="explain").set_value("NORMAL").run()
    app.slider(key="threshold_pct").set_value(30.0).run()
    assert not app.exception
    assert len(calls) == 1
    assert (
        len({str(before), str(after_opacity), str(plain)}) == 3
    )  # the heatmap follows the opacity; the radiograph is another image


def test_out_of_scope_result_on_request_says_under_each_number_that_it_means_nothing(app):
    rng = np.random.default_rng(5)
    photo = np.zeros((240, 320, 3), np.uint8)
    photo[..., 0] = np.linspace(0, 255, 320)[None, :]
    photo[..., 1] = np.linspace(255, 0, 240)[:, None]
    photo[..., 2] = rng.integers(0, 255, (240, 320))  # a colour photograph: outside the intended use
    upload(app, [("holiday.png", png_bytes(photo))])
    assert not app.exception
    assert any("outside the intended use" in e.value for e in app.error)
    assert shown_probability(app) is None  # no result unless asked for
    next(t for t in app.toggle if t.label.startswith("Show the result anyway")).set_value(True).run()
    line = model_output(app)
    assert line is not None and line.group(0).startswith("Model output, shown on request and meaningless")
    assert shown_side(app) is None and not app.metric  # no side of a threshold, no headline number
    verdicts = [
        m.value for m in app.markdown if re.search(r"^\*{0,2}(NORMAL|PNEUMONIA): .+ the [\d.]+% threshold", m.value)
    ]
    assert not verdicts, verdicts  # no "just below the threshold" talk for an image the model was not made for
    assert not re.search(r"(above|below) the (stored |chosen )?threshold|the model's \w+ side", all_text(app))
    # nor the operating point and its figures, which say nothing about such an image
    assert not [sl for sl in app.slider if sl.key == "threshold_pct"] and "Operating point" not in all_text(app)


def test_bad_upload_shows_error_and_app_keeps_running(app, pipeline_p):
    upload(app, [("notes.txt", b"this is not an image")])
    assert not app.exception
    assert any("could not be read" in e.value and "Not an image" in e.value for e in app.error)
    assert shown_probability(app) is None
    data = png_bytes(synthetic_xray(seed=13))
    upload(app, [("chest.png", data)])
    assert not app.exception and not app.error
    assert shown_probability(app) == format_probability(pipeline_p(data))


def test_several_uploads_give_a_table_csv_and_detail(app, pipeline_p):
    good = [png_bytes(synthetic_xray(seed=21)), png_bytes(synthetic_xray(seed=22, opacity=True))]
    shown = [format_probability(pipeline_p(d)) for d in good]
    assert shown[0] != shown[1], "control: the two files' details can be told apart by their probability"
    upload(app, [("a.png", good[0]), ("b.png", good[1]), ("broken.jpg", b"\xff\xd8\xff\xe0 truncated")])
    assert not app.exception
    table = app.dataframe[0].value
    assert list(table["file"]) == ["a.png", "b.png", "broken.jpg"]
    # the table shows the probability exactly as the detail does: one formatting function
    assert list(table["P(pneumonia)"])[:2] == shown
    assert list(table["label"])[2] == "ERROR" and list(table["notes"])[2] == "unreadable: open the row"
    # the unreadable file is counted above the table, where it is seen
    assert any("2 analysed" in w.value and "1 could not be read" in w.value for w in app.warning)
    assert any(b.label == "Download the table (CSV)" for b in app.get("download_button"))
    # the newest readable file's detail by default, not an error box; the name as literal markdown
    assert app.main.subheader[-1].value == literal("b.png")
    assert shown_probability(app) == shown[1]
    # selecting a row opens its detail (the browser test clicks the row itself)
    app.session_state["table"] = {"selection": {"rows": [2], "columns": [], "cells": []}}
    app.run()
    # the name reaches the error box escaped (literal text, never markdown): broken\.jpg
    assert app.main.subheader[-1].value == literal("broken.jpg")
    assert any(literal("broken.jpg") in e.value for e in app.error)
    app.session_state["table"] = {"selection": {"rows": [0], "columns": [], "cells": []}}
    app.run()
    assert app.main.subheader[-1].value == literal("a.png")
    assert shown_probability(app) == shown[0]


def test_sample_picker_analyses_samples_and_says_which_were_seen_in_training(app, pipeline_p):
    from pneumo.io.samples import list_samples

    app.radio(key="source").set_value("Try a sample image").run()
    assert not app.exception
    box = app.selectbox(key="sample")
    titles = [o for o in box.options]
    assert len(titles) == 5  # four samples + "all samples"
    assert sum("seen in training" in t for t in titles) == 1  # samples.json marks one as pneumo_split=training
    samples = {s.file: s for s in list_samples()}
    first = samples[box.value]
    assert shown_probability(app) == format_probability(pipeline_p(first.path.read_bytes(), first.file))
    box.set_value("all").run()
    table = app.dataframe[0].value
    assert len(table) == 4
    assert sorted(table["file"]) == sorted(samples)
    assert list(table["notes"]).count("seen in training") == 1  # the table says it too, not only the menu


def test_dicom_shows_safe_facts_only(app, pipeline_p):
    data = dicom_bytes("DX")
    upload(app, [("scan.dcm", data)])
    assert not app.exception and not app.error
    text = all_text(app)
    assert "Modality: DX" in text and "View position: PA" in text and "300 × 260" in text
    assert "Doe" not in text and "SECRET" not in text and "1980" not in text
    assert shown_probability(app) == format_probability(pipeline_p(data, "scan.dcm"))


def test_non_xray_dicom_is_refused_with_a_reason(app):
    upload(app, [("ct.dcm", dicom_bytes("CT"))])
    assert not app.exception
    assert any("outside the intended use" in e.value and "another modality" in e.value for e in app.error)
    assert not any("modality" in w.value for w in app.warning)  # said once, as the reason for no result
    assert shown_probability(app) is None
    assert "Doe" not in all_text(app)


def test_colour_photo_is_not_given_a_result_unless_asked(app, pipeline_p):
    rng = np.random.default_rng(0)
    photo = png_bytes(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8))  # (H, W, 3) colourful noise
    upload(app, [("holiday.png", photo)])
    assert not app.exception
    assert any("in colour" in e.value and "outside the intended use" in e.value for e in app.error)
    assert shown_probability(app) is None
    app.toggle[0].set_value(True).run()
    assert shown_probability(app) == format_probability(pipeline_p(photo, "holiday.png"))


def test_stages_page(app):
    app.switch_page("app_pages/stages.py").run()
    assert not app.exception
    assert app.title[0].value == "The four stages of pneumonia"
    md = " ".join(m.value for m in app.markdown)
    for i, name in enumerate(("Congestion", "Red hepatization", "Grey hepatization", "Resolution"), start=1):
        assert f"#### {i}. {name}" in md
    assert any("does not stage pneumonia" in i.value for i in app.info)
    assert len(app.image) == 1  # the timeline
    assert "radiopaedia.org" in md


def test_model_card_page_reads_metadata(app, tiny_model, tiny_keras):
    app.switch_page("app_pages/model_card.py").run()
    assert not app.exception
    assert metric(app, "Parameters") == f"{tiny_model.metadata['parameters']:,}"
    table = frame_with(app, "data")
    assert table["data"][0] == "Validation split"
    # the tiny model's validation split has 4 images: its figures are not presented as figures
    assert table["ROC AUC"][0] == table["sensitivity"][0] == "too few images to mean much (n = 4)"
    layers = frame_with(app, "parameters")
    assert int(layers["parameters"].sum()) == tiny_keras.model.count_params()  # the layer table has every parameter
    text = all_text(app)
    assert "not yet been independently evaluated" in text  # the tiny model's hash has no shipped evaluation
    assert "../" not in " ".join(c.value for c in app.code) and "cache_dir" not in str(app.json[0].value)
    assert any(c.value == "tests/conftest.py make_tiny_model" for c in app.code)
    assert len(app.image) >= 1  # ROC, confusion and operating points


def test_model_card_labels_test_metrics_and_shows_training_plot(tmp_path, tiny_model_path, monkeypatch):
    model = tmp_path / "card.keras"
    shutil.copy(tiny_model_path, model)
    meta = json.loads(tiny_model_path.with_suffix(".json").read_text())
    shutil.copy(tiny_model_path.parent / meta["tflite"]["file"], tmp_path)  # the copy the app runs, as named
    meta["metrics"]["test"] = {**meta["metrics"]["validation"], "auc": 0.875, "n": 624}
    meta["files"] = {"plot": "card_training.png"}
    model.with_suffix(".json").write_text(json.dumps(meta))
    Image.fromarray(synthetic_xray(200, 100)).save(tmp_path / "card_training.png")
    monkeypatch.setenv("PNEUMO_MODEL", str(model))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    at.switch_page("app_pages/model_card.py").run()
    assert not at.exception and not at.error
    table = frame_with(at, "data")
    test_row = table[table["data"] == "Official test folder"]
    assert test_row["ROC AUC"].iloc[0] == "0.875"
    assert any(h.value == "Training curves" for h in at.subheader)


def test_committed_model_without_an_evaluation_quotes_the_previous_models_as_that_models(monkeypatch):
    """Until the maintainers score the committed classifier, the card says so and quotes the replaced model's
    figures as that model's, never as this one's."""
    from pneumo import config
    from pneumo.present import evaluation as ev

    monkeypatch.delenv("PNEUMO_MODEL", raising=False)
    if ev.load_evaluation(config.DEFAULT_MODEL_PATH) is not None:
        pytest.skip("the committed classifier has been evaluated: the next test covers it")
    previous = ev.load_previous(json.loads(config.DEFAULT_MODEL_PATH.with_suffix(".json").read_text()))
    assert previous is not None, "the replaced model's evaluation is shipped in models/evaluations/previous/"
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    at.switch_page("app_pages/model_card.py").run()
    assert not at.exception
    text = all_text(at)
    assert "not yet been independently evaluated" in text
    assert "These are not this model's figures" in text
    assert f"{previous['sets']['official_test']['auc']:.3f}" in text
    # the committed classifier pools over the lungs: the card says so and shows its deletion test with n
    assert "Evidence inside the lungs by construction" in text and "Is the heatmap faithful?" in text
    deletion = [t.value for t in at.table if "most evidence first" in t.value.columns]
    assert deletion and deletion[0]["validation images"].iloc[0].startswith("PNEUMONIA (n = ")


def test_model_card_shows_the_independent_evaluation_of_the_committed_model(monkeypatch, tmp_path):
    """The committed model's evaluation (matched by hash; until the maintainers score the committed classifier, the
    previous model's real file re-keyed to it): the official-test AUC, sensitivity and specificity with n, intervals
    and the share the gate refused; the adult sets with their refused share and, labelled outside the intended use,
    the figures with every image forced through."""
    from pneumo import config
    from pneumo.nets.modelfile import file_sha256
    from pneumo.present import evaluation as ev

    monkeypatch.delenv("PNEUMO_MODEL", raising=False)
    if ev.load_evaluation(config.DEFAULT_MODEL_PATH) is None:
        digest = file_sha256(config.DEFAULT_MODEL_PATH)
        real = json.loads(next((config.EVALUATIONS_DIR / "previous").glob("dee1158b*.json")).read_text())
        (tmp_path / f"{digest}.json").write_text(json.dumps({**real, "model_sha256": digest}))
        monkeypatch.setattr(config, "EVALUATIONS_DIR", tmp_path)
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    at.switch_page("app_pages/model_card.py").run()
    assert not at.exception
    text = all_text(at)
    assert "How the app runs the networks: classifier TFLite, gate and lungs TFLite" in text
    training = json.loads(config.DEFAULT_MODEL_PATH.with_suffix(".json").read_text())["training"]
    members = training["settings"].get("members", 1)
    assert members == 3 and "ensemble of 3 such networks" in text  # the card says what the app runs
    evaluation = ev.load_evaluation(config.DEFAULT_MODEL_PATH)
    assert evaluation is not None, "the committed model's evaluation is shipped in models/evaluations/"
    test = evaluation["sets"]["official_test"]
    assert "not yet been independently evaluated" not in text
    assert metric(at, "Test AUC") == f"{test['auc']:.3f}"
    refused = f"refused {test['n_out_of_scope']} of the set's {test['n_total']} images"
    assert f"On new patients (official test split, {test['n']} images" in text and refused in text
    rows = frame_with(at, "set")  # the main table: the intended use only
    assert list(rows["set"]) == ["New patients (official test split)"]
    official = rows.iloc[0]
    assert official["refused by the gate"].startswith(f"{test['n_out_of_scope']} of {test['n_total']}")
    # the adult sets: apart, in a folded table whose title says why they are shown
    (outside,) = [e for e in at.expander if e.label == ev.OUTSIDE_TITLE]
    assert "outside the intended use (adults)" in outside.label.lower()
    adults = outside.table[0].value
    forced = adults[adults["set"].str.endswith("every image forced through")]
    assert len(forced) == 2 and len(adults) == 4  # the two adult sets, each as let through and as forced through
    nih = evaluation["sets"]["external_nih"]
    let_through = adults[adults["set"] == "Adults, other hospitals (NIH ChestX-ray14): the images the gate let through"]
    if nih["n"] < config.FEW_IMAGES:  # 15 images passed the gate: no figure is shown as a number
        assert set(let_through.iloc[0][["AUC", "ECE"]]) == {f"too few images to mean much (n = {nih['n']})"}
    assert f"refused {nih['n_out_of_scope']} of {nih['n_total']}" in text and "no better than chance" in text
    assert "These are not this model's figures" not in text  # the replaced model's figures are not needed now
    # the committed gate is newer than the evaluation: its refusals are said to be the earlier gate's
    assert "after this evaluation (2026-12-02)" in text and "those of the earlier gate" in text
    mirrored = json.loads(config.SCOPE_MODEL_PATH.with_suffix(".json").read_text())["metrics"]["mirror_validation"]
    m = mirrored["mirrored"]  # the committed gate's own figures, as its metadata records them
    said = f"of the {m['n']} validation films mirrored, {m['flipped']:.1%} were flipped back and "
    assert said + f"{m['warned_possibly_mirrored']:.1%} warned" in text.lower()


def test_model_card_and_analyze_page_show_a_shipped_evaluation(tmp_path, tiny_model_path, pipeline_p, monkeypatch):
    """A model whose SHA-256 has an evaluation file: the card tables its sets, the Analyze page quotes the figures
    on new patients next to the operating point (and says they are unknown at another threshold)."""
    from pneumo import config
    from pneumo.nets.modelfile import file_sha256

    digest = file_sha256(tiny_model_path)
    block = {"n": 624, "n_normal": 234, "n_pneumonia": 390, "threshold": 0.5, "auc": 0.8123, "auc_ci95": [0.78, 0.84],
             "sensitivity": 0.9, "sensitivity_ci95": [0.87, 0.93], "specificity": 0.6, "specificity_ci95": [0.54, 0.66],
             "ece": 0.05}  # fmt: skip
    evaluation = {"model_sha256": digest, "evaluated": "2026-12-01", "evaluator": "the test", "protocol": "made up",
                  "sets": {"official_test": block}}  # fmt: skip
    (tmp_path / f"{digest}.json").write_text(json.dumps(evaluation))
    monkeypatch.setattr(config, "EVALUATIONS_DIR", tmp_path)
    monkeypatch.setenv("PNEUMO_MODEL", str(tiny_model_path))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    at.switch_page("app_pages/model_card.py").run()
    assert not at.exception
    text = all_text(at)
    assert "not yet been independently evaluated" not in text
    assert metric(at, "Test AUC") == "0.812"
    first = frame_with(at, "set").iloc[0]
    assert first["set"] == "New patients (official test split)" and first["AUC"] == "0.812 (0.780–0.840)"
    assert first["specificity"] == "60.0% (95% CI 54.0–66.0%)"
    assert "On new patients (official test split, 624 images" in text

    at.switch_page("app_pages/analyze.py").run()
    data = png_bytes(synthetic_xray(seed=31))
    upload(at, [("chest.png", data)])
    assert not at.exception and not at.error
    assert shown_probability(at) == format_probability(pipeline_p(data))
    quoted = [s.value for s in at.success if "On new patients (official test split, 624 images" in s.value]
    assert len(quoted) == 1 and "specificity 60.0%" in quoted[0] and "not known" not in quoted[0]
    at.slider(key="threshold_pct").set_value(30.0).run()
    assert any("At 30% they are not known." in s.value for s in at.success)


def test_about_page(app):
    import pneumo

    app.switch_page("app_pages/about.py").run()
    assert not app.exception
    assert any("not a medical device" in w.value for w in app.warning)
    assert any(f"pneumo {pneumo.__version__}" in m.value for m in app.markdown)
    links = [str(link.proto) for link in app.get("page_link")]
    assert any("model-card" in p or "model_card" in p for p in links), links


def test_missing_model_is_explained_not_a_crash(tmp_path, monkeypatch):
    monkeypatch.setenv("PNEUMO_MODEL", str(tmp_path / "nothing.keras"))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert not at.exception
    assert any(f"No model file at `{tmp_path / 'nothing.keras'}`" in e.value for e in at.error)  # $PNEUMO_MODEL
    at.switch_page("app_pages/about.py").run()
    assert not at.exception


def test_app_model_path_comes_from_config_unless_overridden(monkeypatch, tmp_path):
    """app_pages.common.model_path, the resolver every page calls: $PNEUMO_MODEL when set, else the committed model."""
    from app_pages.common import model_path
    from pneumo import config

    monkeypatch.delenv("PNEUMO_MODEL", raising=False)
    assert model_path() == config.DEFAULT_MODEL_PATH
    monkeypatch.setenv("PNEUMO_MODEL", str(tmp_path / "m.keras"))
    assert model_path() == tmp_path / "m.keras"
    monkeypatch.setenv("PNEUMO_MODEL", "")  # set but empty: as if unset
    assert model_path() == config.DEFAULT_MODEL_PATH


def test_streamlit_config_suits_xrays_and_sends_no_statistics():
    tomllib = pytest.importorskip("tomllib")

    from pneumo import config

    cfg = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert cfg["server"]["maxUploadSize"] == config.APP_MAX_UPLOAD_MB >= 50
    assert cfg["browser"]["gatherUsageStats"] is False
    assert Path(ROOT / "app.py").read_text().count("st.Page(") == 5  # four pages and the /analyze alias


def test_first_page_starts_the_model_warm_up(tiny_model_path, monkeypatch):
    """The Analyze page ends with st.stop() before any upload; the warm-up must start all the same."""
    from app_pages import common

    monkeypatch.setattr(common, "_WARM_UP", None)
    monkeypatch.setattr(common, "_LOADED", {})
    monkeypatch.setenv("PNEUMO_MODEL", str(tiny_model_path))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()  # the landing page, nothing uploaded
    assert not at.exception
    assert common._WARM_UP is not None
    common._WARM_UP.join(timeout=120)
    assert list(common._LOADED) == [(str(tiny_model_path), tiny_model_path.stat().st_mtime)]


# File names a visitor's browser must show as they are: markdown images (an outside fetch), coloured directives, maths,
# HTML and links.
HOSTILE_NAMES = (
    "![b](http://127.0.0.1:9/x.png)",
    ":red-background[**PNEUMONIA CONFIRMED - start antibiotics**].png",
    "$x^2$.png",
    "<img src=x onerror=alert(1)>.png",
    "[link](http://x).png",
)
# Every element whose text Streamlit renders as markdown (image captions and metric labels are markdown too).
MARKDOWN_ELEMENTS = ("markdown", "caption", "error", "warning", "info", "success", "title", "subheader", "header",
                     "toast")  # fmt: skip


def markdown_texts(at) -> list[str]:
    """The source text of every markdown-rendering element on the page."""
    texts = [str(el.value) for kind in MARKDOWN_ELEMENTS for el in getattr(at, kind)]
    texts += [c for img in at.image for c in img.captions]
    texts += [str(m.label) for m in at.metric]
    return texts


def assert_only_literal(at, raw: str) -> None:
    """``raw`` reaches markdown only in its escaped form (and does reach it: the positive control)."""
    texts = markdown_texts(at)
    assert any(literal(raw) in t for t in texts), f"control: {raw!r} is not shown at all"
    assert not [t for t in texts if raw in t], f"{raw!r} reaches markdown unescaped"


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_a_hostile_file_name_is_shown_literally(app, name):
    """The heading, the facts and an out-of-scope image's caption: the name is never markdown; the report builds."""
    upload(app, [(name, png_bytes(synthetic_xray(seed=31)))])
    assert not app.exception
    assert f"#### {literal(name)}" in [m.value for m in app.markdown]  # the one-file heading
    assert_only_literal(app, name)
    app.button(key="make_report").click().run()
    labels = {b.label for b in app.get("download_button")}
    assert not app.exception and labels >= {"Report (PDF)", "Report (PNG, 200 dpi)"}
    upload(app, [(name, png_bytes(np.zeros((260, 300), np.uint8)))])  # uniform: outside the intended use
    assert any("outside the intended use" in e.value for e in app.error)
    assert [c for img in app.image for c in img.captions] == [literal(name)]  # the image, captioned with its name
    assert_only_literal(app, name)


def test_hostile_names_in_a_table_an_error_and_dicom_facts_stay_literal(app):
    names = [*HOSTILE_NAMES[:3], HOSTILE_NAMES[3], HOSTILE_NAMES[4] + ".dcm"]
    data = [png_bytes(synthetic_xray(seed=40 + i)) for i in range(3)]
    data += [b"\xff\xd8\xff\xe0 truncated", dicom_bytes("DX", view=":red[**X**]$a$")]
    upload(app, list(zip(names, data, strict=True)))
    assert not app.exception
    assert list(app.dataframe[0].value["file"]) == names  # table cells are plain text
    for row, name in enumerate(names):
        app.session_state["table"] = {"selection": {"rows": [row], "columns": [], "cells": []}}
        app.run()
        assert app.main.subheader[-1].value == literal(name)
        assert_only_literal(app, name)
        assert ":red[**X**]$a$" not in "\n".join(markdown_texts(app))  # a DICOM value is never markdown either
        if row == 3:  # the broken file: its name and the loader's message in the error box
            assert any(e.value.startswith(literal(name) + " could not be read") for e in app.error)
