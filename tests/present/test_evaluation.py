"""Independent evaluations: shipped in the repository, matched to a model file by its SHA-256, never to another."""

from __future__ import annotations

import json
import shutil

from pneumo import config
from pneumo.nets.modelfile import file_sha256
from pneumo.present import evaluation as ev


def test_every_shipped_evaluation_belongs_to_a_committed_model():
    assert ev.check() == []
    models = ev.committed_models()
    for file in config.EVALUATIONS_DIR.glob("*.json"):
        assert file.stem in models and json.loads(file.read_text())["model_sha256"] == file.stem


def test_committed_model_has_its_evaluation_or_says_it_has_none():
    """The committed model gets exactly the evaluation filed under its hash (none for a freshly committed model that
    the maintainers have not scored yet), and the headline says which case it is."""
    sha = file_sha256(config.DEFAULT_MODEL_PATH)
    filed = config.EVALUATIONS_DIR / f"{sha}.json"
    found = ev.load_evaluation(config.DEFAULT_MODEL_PATH)
    assert found == (json.loads(filed.read_text()) if filed.is_file() else None)
    assert ("On new patients" in ev.headline(found)) == filed.is_file()
    assert ("not yet been independently evaluated" in ev.headline(found)) == (not filed.is_file())


def test_a_model_with_another_hash_has_no_evaluation(tmp_path, tiny_model_path):
    """A retrained model (other bytes) never shows the figures of the model it replaces, even under the same name."""
    real = json.loads(next(config.EVALUATIONS_DIR.rglob("*.json")).read_text())  # a maintainers' evaluation
    model = tmp_path / "pneumo_cnn.keras"  # the committed model's name, the tiny model's bytes
    shutil.copy(tiny_model_path, model)
    replaced = tmp_path / "evaluations"  # the figures of the committed model, filed under its hash
    replaced.mkdir()
    sha = file_sha256(config.DEFAULT_MODEL_PATH)
    (replaced / f"{sha}.json").write_text(json.dumps({**real, "model_sha256": sha}))
    assert ev.load_evaluation(model, replaced) is None
    assert "not yet been independently evaluated" in ev.headline(ev.load_evaluation(model, replaced), markdown=False)
    own = tmp_path / "own"  # the same figures filed under the tiny model's hash: found
    own.mkdir()
    tiny = file_sha256(model)
    (own / f"{tiny}.json").write_text(json.dumps({**real, "model_sha256": tiny}))
    assert ev.load_evaluation(model, own)["model_sha256"] == tiny
    assert "On new patients" in ev.headline(ev.load_evaluation(model, own))
    (own / f"{sha}.json").write_text(json.dumps({**real, "model_sha256": tiny}))  # a file naming another model
    assert ev.load_evaluation(config.DEFAULT_MODEL_PATH, own) is None


def test_sync_copies_by_hash_and_retires_stale_files(tmp_path, tiny_model_path):
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(tiny_model_path, models / "tiny.keras")
    digest = file_sha256(models / "tiny.keras")
    source = tmp_path / "shared"
    source.mkdir()
    block = {"n": 10, "n_normal": 5, "n_pneumonia": 5, "threshold": 0.5, "sensitivity": 0.8, "specificity": 0.6}
    (source / f"{digest}.json").write_text(json.dumps({"model_sha256": digest, "sets": {"official_test": block}}))
    (source / f"{'0' * 64}.json").write_text(json.dumps({"model_sha256": "0" * 64, "sets": {}}))  # another model
    dest = models / "evaluations"
    dest.mkdir()
    (dest / f"{'1' * 64}.json").write_text("{}")  # a stale file of a model that is gone
    assert ev.main(["--sync", str(source), "--models", str(models)]) == 0
    assert sorted(p.name for p in dest.glob("*.json")) == [f"{digest}.json"]
    assert (dest / "previous" / f"{'1' * 64}.json").is_file(), "a replaced model's evaluation is kept as context"
    found = ev.load_evaluation(models / "tiny.keras", dest)
    assert found is not None and "sensitivity 80.0%" in ev.headline(found)
    (dest / f"{'2' * 64}.json").write_text("{}")
    assert ev.main(["--models", str(models)]) == 1  # --check fails on a file that belongs to no model


def test_previous_model_figures_are_quoted_as_another_models(tmp_path):
    """A retrained model may quote the replaced model's evaluation, labelled as another model's, matched by hash."""
    sha = "ab" * 32
    block = {"n": 624, "auc": 0.9788, "auc_ci95": [0.9682, 0.9875], "sensitivity": 0.9769,
             "sensitivity_ci95": [0.9567, 0.9878], "specificity": 0.8675, "specificity_ci95": [0.8181, 0.9051],
             "ece": 0.137, "threshold": 0.97}  # fmt: skip
    (tmp_path / "previous").mkdir()
    (tmp_path / "previous" / f"{sha}.json").write_text(
        json.dumps({"model_sha256": sha, "sets": {"official_test": block}})
    )
    meta = {"previous_model": {"sha256": sha, "description": "the whole-image model"}}
    prev = ev.load_previous(meta, tmp_path)
    text = ev.previous_sentence(meta, prev)
    assert "the whole-image model" in text and "AUC 0.979 (95% CI 0.968–0.988)" in text
    assert "specificity 86.8%" in text and "not this model's figures" in text
    assert ev.load_previous({}, tmp_path) is None and ev.previous_sentence({}, None) == ""
    assert ev.load_previous({"previous_model": {"sha256": "cd" * 32}}, tmp_path) is None


def test_a_gate_newer_than_the_evaluation_is_said_to_have_other_refusals():
    evaluation = {"evaluated": "2026-12-02", "sets": {}}
    text = ev.gate_sentence(evaluation, {"created": "2026-12-06T19:36:54+00:00"})
    assert "made on 2026-12-06, after this evaluation (2026-12-02)" in text and "earlier gate" in text
    assert ev.gate_sentence(evaluation, {"created": "2026-11-26T01:07:41+00:00"}) == ""  # the gate it was scored with
    assert ev.gate_sentence(None, {"created": "2026-12-06"}) == ev.gate_sentence(evaluation, None) == ""


def test_refused_share_and_forced_rows_are_shown_with_their_set():
    """The headline says how many images of the set the gate refused; the table adds, for a set outside the intended
    use, the figures with every image forced through, labelled so (the in-scope set gets no forced row)."""
    block = {"n": 90, "n_normal": 40, "n_pneumonia": 50, "threshold": 0.5, "auc": 0.9, "sensitivity": 0.9,
             "specificity": 0.8, "ece": 0.02, "n_total": 100, "n_out_of_scope": 10}  # fmt: skip
    forced = {**block, "n": 100, "auc": 0.5}
    evaluation = {"model_sha256": "x", "sets": {"official_test": {**block, "all_images_forced": forced},
                                                "external_nih": {**block, "all_images_forced": forced}}}  # fmt: skip
    assert "The scope gate refused 10 of the set's 100 images (10.0%)" in ev.headline(evaluation)
    assert "refused" not in ev.headline({"sets": {"official_test": {**block, "n_out_of_scope": 0}}})
    rows = ev.table_rows(evaluation)
    assert [r["set"] for r in rows] == ["New patients (official test split)"]  # the main table: intended use only
    assert rows[0]["refused by the gate"] == "10 of 100 (10.0%)"
    outside = ev.table_rows(evaluation, intended_use=False)
    assert [r["set"] for r in outside] == [
        "Adults, other hospitals (NIH ChestX-ray14): the images the gate let through",
        "Adults, other hospitals (NIH ChestX-ray14): every image forced through",
    ]
    assert outside[1]["AUC"] == "0.500" and outside[1]["images"].startswith("100 images")


def test_sets_outside_the_intended_use_are_apart_and_small_figures_say_so():
    """Adult sets never share the main table; a figure resting on fewer than config.FEW_IMAGES images is not shown
    as a number (the NIH set's in-scope subset had 15 images: 4 normal, 11 pneumonia)."""
    from pneumo import config

    big = {"n": 610, "n_normal": 221, "n_pneumonia": 389, "threshold": 0.49, "auc": 0.99, "sensitivity": 0.98,
           "specificity": 0.88, "ece": 0.03}  # fmt: skip
    nih = {"n": 15, "n_normal": 4, "n_pneumonia": 11, "auc": 0.43, "sensitivity": 0.64, "specificity": 0.0,
           "ece": 0.42, "n_total": 1000, "n_out_of_scope": 985,
           "all_images_forced": {"n": 1000, "n_normal": 500, "n_pneumonia": 500, "auc": 0.5, "sensitivity": 0.6,
                                 "specificity": 0.4, "ece": 0.3}}  # fmt: skip
    adults = {"n": 12, "n_normal": 12, "n_pneumonia": 0, "specificity": 1.0}
    evaluation = {"sets": {"external_nih": nih, "official_test": big, "external_adult_normals": adults}}
    main = ev.table_rows(evaluation)
    assert [r["set"] for r in main] == ["New patients (official test split)"]
    assert main[0]["AUC"] == "0.990" and main[0]["sensitivity"].startswith("98.0%")  # enough images: figures
    assert ev.outside_keys(evaluation) == ["external_nih", "external_adult_normals"]
    assert "outside the intended use (adults)" in ev.OUTSIDE_TITLE.lower() and "must not be used" in ev.OUTSIDE_TITLE
    rows = {r["set"].split(":")[0] + ("*" if "forced" in r["set"] else ""): r for r in ev.table_rows(evaluation, False)}
    gate, forced = (
        rows["Adults, other hospitals (NIH ChestX-ray14)"],
        rows["Adults, other hospitals (NIH ChestX-ray14)*"],
    )
    assert gate["AUC"] == gate["ECE"] == "too few images to mean much (n = 15)"
    assert gate["sensitivity"] == "too few images to mean much (n = 11)"
    assert gate["specificity"] == "too few images to mean much (n = 4)"
    assert forced["AUC"] == "0.500" and forced["specificity"] == "40.0%"  # 1000 images: shown as figures
    normals = rows["Normal adults (PA views)"]
    assert normals["specificity"] == "too few images to mean much (n = 12)" and normals["AUC"] == "–"
    # the limit is the config's: one image more than it is shown as a figure
    assert ev.too_few(config.FEW_IMAGES - 1) and not ev.too_few(config.FEW_IMAGES) and not ev.too_few(None)
