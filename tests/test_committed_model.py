"""The committed models: they load, their metadata agrees with them, and the whole analysis path gives sane results
on the shipped samples (turned, inverted and mirrored copies too)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pneumo import config
from pneumo.checks import lungs
from pneumo.io.decode import LoadedImage, load_image
from pneumo.nets.lite import stale_reason
from pneumo.nets.modelfile import metadata_path, read_metadata
from pneumo.pipeline import analyze_images, load_models
from pneumo.training.networks import load_keras_network, load_keras_with_metadata


def test_model_file_is_light_and_has_metadata():
    path = config.DEFAULT_MODEL_PATH
    assert path.exists(), "models/pneumo_cnn.keras must be committed"
    assert path.stat().st_size < 5 * 2**20
    meta = json.loads(metadata_path(path).read_text())
    model, _ = load_keras_with_metadata(path)  # as saved (load_keras_network folds batch norm)
    assert meta["parameters"] == model.count_params() < 1_000_000
    assert meta["input_size"] == model.input_shape[1] == model.input_shape[2]
    assert meta["input_mode"] == "lungs" and (path.parent / meta["lung_model"]["file"]).is_file()
    assert meta["class_names"] == list(config.CLASS_NAMES)
    assert meta["gradcam_layer"] == config.GRADCAM_LAYER and model.get_layer(meta["gradcam_layer"]) is not None
    assert 0.0 < meta["threshold"] < 1.0
    val = meta["metrics"]["validation"]
    assert val["threshold"] == meta["threshold"]
    c = val["confusion"]
    assert c["tp"] + c["fn"] == val["n_pneumonia"] and c["tn"] + c["fp"] == val["n_normal"]
    assert abs(val["sensitivity"] - c["tp"] / val["n_pneumonia"]) < 1e-3
    assert abs(val["specificity"] - c["tn"] / val["n_normal"]) < 1e-3
    # the stored operating point at the threshold agrees with the stored metrics
    op = next(p for p in meta["operating_points"] if abs(p["threshold"] - meta["threshold"]) < 1e-9)
    assert abs(op["sensitivity"] - val["sensitivity"]) < 1e-3 and abs(op["specificity"] - val["specificity"]) < 1e-3
    assert len(meta["training"]["data"]["fingerprint_sha256"]) == 64
    assert meta["training"]["command"].startswith("python -m pneumo.train")  # as recorded when it was trained
    assert "test" not in meta["metrics"], "the sequestered test split must not be used here"


def test_committed_models_on_samples():
    models = load_models()
    assert models.lungs is not None and models.gate is not None
    samples = json.loads((config.ASSETS_DIR / "samples" / "samples.json").read_text())
    images = [load_image(config.ASSETS_DIR / "samples" / s["file"]) for s in samples]
    results = analyze_images(models, images)
    for s, r in zip(samples, results, strict=True):
        assert r.in_scope and r.label == s["label"], (s["file"], r.label, r.probability, r.warnings)
        assert lungs.plausible(r.lung_mask), s["file"]
    # turned and inverted copies are put upright and get (nearly) the upright answer
    turned = [LoadedImage(np.rot90(images[0].pixels)), LoadedImage(255 - images[-1].pixels)]
    t_rot, t_inv = analyze_images(models, turned)
    assert "rotated" in t_rot.warnings and abs(t_rot.probability - results[0].probability) < 0.05
    assert "inverted" in t_inv.warnings and abs(t_inv.probability - results[-1].probability) < 0.05
    # a uniform grey square is no chest X-ray: out of scope, and no crash or NaN when forced
    (grey,) = analyze_images(models, [LoadedImage(np.full((300, 300), 128, np.uint8))], force=True)
    assert "uniform" in grey.warnings and np.isfinite(grey.probability)


def test_mirrored_samples_are_flipped_back_or_keep_the_upright_answer():
    """The four samples mirrored left-right (heart on the right; in memory): a film flipped back (`mirrored`) gets
    exactly the upright answer, and any other is warned or within 0.05 of it (the target for mirrored films). The two
    normal ones, which a mirror turns into PNEUMONIA (P 0.2 % -> 86.8 %, 8.9 % -> 84.0 %), are flipped back."""
    models = load_models()
    images = [load_image(SAMPLES / name) for name in PINNED]
    mirrored = analyze_images(models, [LoadedImage(np.ascontiguousarray(im.pixels[:, ::-1])) for im in images])
    for (name, p), m in zip(PINNED.items(), mirrored, strict=True):
        assert m.in_scope, (name, m.warnings)
        if "mirrored" in m.warnings:
            assert abs(m.probability - p) < 1e-6, (name, m.probability)
        else:
            assert "possibly_mirrored" in m.warnings or abs(m.probability - p) < 0.05, (name, m.probability)
    assert [m.warnings for m in mirrored[:2]] == [("mirrored",), ("mirrored",)]


def test_committed_lung_and_gate_metadata():
    """Two networks: the gate finds the lungs with its lung head, and the classifier was trained behind exactly it."""
    lung_file = load_keras_network(config.DEFAULT_MODEL_PATH).metadata["lung_model"]
    assert lung_file["file"] == config.SCOPE_MODEL_PATH.name
    assert lung_file["sha256"] == __import__("hashlib").sha256(config.SCOPE_MODEL_PATH.read_bytes()).hexdigest()
    gate = json.loads(config.SCOPE_MODEL_PATH.with_suffix(".json").read_text())
    m = gate["metrics"]
    assert m["lungs_validation"]["dice_mean"] >= 0.94 and m["lungs_validation"]["n"] >= 700
    assert "lung_probability" in gate["tflite"]["outputs"] and gate["parameters"] < 200_000
    assert m["in_scope_validation"]["flagged_out_of_scope"] <= 0.01
    assert all(v["flagged"] <= 0.02 for v in m["in_scope_validation"]["flagged_by_class"].values())
    assert m["scope_held_out"]["adult_frontal_cxr"]["caught"] >= 0.98
    assert not list(config.MODELS_DIR.glob("pneumo_lungs.*")), "the separate U-Net is gone: two networks ship"


SAMPLES = config.ASSETS_DIR / "samples"
# P(pneumonia) of the four samples on the committed models (measured when the two-network models landed): the
# app, the CLI and every refactoring must give exactly these.
PINNED = {
    "normal_NORMAL2-IM-0640-0001.jpeg": 0.002974150236696005,
    "normal_NORMAL2-IM-0826-0001.jpeg": 0.1977914273738861,
    "pneumonia_person1619_bacteria_4261.jpeg": 0.9999914169311523,
    "pneumonia_person724_virus_1343.jpeg": 0.9999989867210388,
}


def test_every_committed_tflite_copy_is_fresh():
    for path in (config.DEFAULT_MODEL_PATH, config.SCOPE_MODEL_PATH):
        assert stale_reason(path, read_metadata(path)) is None, f"run python -m pneumo.training.export {path}"


def test_the_app_entry_gives_the_pinned_probabilities():
    from pneumo.pipeline import analyze_bytes

    models = load_models()
    for name, p in PINNED.items():
        res = analyze_bytes((SAMPLES / name).read_bytes(), name, models)
        assert res.in_scope and abs(res.probability - p) < 1e-6, (name, res.probability)


def test_the_cli_gives_the_app_entrys_answer(capsys):
    """The CLI and the app's entry (analyze_bytes) on the same files: the same probability and label."""
    import csv
    import io

    from pneumo.pipeline import analyze_bytes
    from pneumo.predict import main

    assert main([str(SAMPLES)]) == 0
    rows = {r["path"].rsplit("/", 1)[-1]: r for r in csv.DictReader(io.StringIO(capsys.readouterr().out))}
    models = load_models()
    for name, p in PINNED.items():
        app = analyze_bytes((SAMPLES / name).read_bytes(), name, models)
        assert rows[name]["probability"] == f"{app.probability:.6f}" and rows[name]["label"] == app.label, name
        assert abs(float(rows[name]["probability"]) - p) <= 5e-7, name


def test_cli_and_app_decode_alike_to_the_last_digit(tmp_path):
    """Both decode with pipeline.ANALYSIS_DECODE: analyze_bytes equals the CLI's own path (load_many + stream), also
    on a large JPEG that the decoder reduces in the DCT domain (the samples themselves are too small for that)."""
    import cv2

    from pneumo.io import load_many
    from pneumo.pipeline import ANALYSIS_DECODE, analyze_bytes, analyze_stream

    models = load_models()
    big = tmp_path / "big.jpeg"
    film = load_image(SAMPLES / "pneumonia_person1619_bacteria_4261.jpeg").pixels
    cv2.imwrite(str(big), cv2.resize(film, (2400, 1800), interpolation=cv2.INTER_CUBIC), [cv2.IMWRITE_JPEG_QUALITY, 92])
    files = [SAMPLES / n for n in PINNED] + [big]
    cli = {f.name: r.probability for f, r in analyze_stream(models, load_many(files, **ANALYSIS_DECODE))}
    for f in files:
        assert analyze_bytes(f.read_bytes(), f.name, models).probability == pytest.approx(cli[f.name], abs=1e-9)
    full = analyze_images(models, [load_image(big)])[0].probability  # decoded in full: a (slightly) other answer
    assert abs(full - cli["big.jpeg"]) > 1e-9
