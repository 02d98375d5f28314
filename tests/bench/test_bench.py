"""The benchmark: its JSON contract (quick mode on the tiny model, as CI runs it) and its reference Grad-CAM.

No timing thresholds here: the targets are measured by `python -m pneumo.bench`, never asserted in a test.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from pneumo.bench import run as bench
from tests.conftest import ROOT

MODELS = ("pneumo", *bench.REFERENCES)


def _positive(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


def test_stats_ms_median_and_p95():
    s = bench.stats_ms([float(i) for i in range(1, 101)])  # 1..100 ms
    assert s["median"] == pytest.approx(50.5)
    assert s["p95"] == pytest.approx(95.05)
    assert s["min"] == 1.0 and s["n"] == 100


def test_count_macs_by_hand():
    """Each kind of layer counted as its arithmetic says, also inside a nested model."""
    import keras
    from keras import layers

    inp = keras.Input((8, 8, 2))
    x = layers.Conv2D(4, 3, padding="same")(inp)  # 8*8 positions * 3*3*2*4 = 4608
    x = layers.SeparableConv2D(6, 3, padding="same")(x)  # 64 * (3*3*4 + 4*6) = 3840
    x = layers.Conv2DTranspose(2, 2, strides=2)(x)  # 16*16 * 2*2*6*2 / 4 = 3072
    x = layers.BatchNormalization()(x)  # not counted
    inner = keras.Model(inp, x)
    outer_in = keras.Input((8, 8, 2))
    y = layers.GlobalAveragePooling2D()(inner(outer_in))
    out = layers.Dense(3)(y)  # 2*3 = 6
    assert bench.count_macs(keras.Model(outer_in, out)) == 4608 + 3840 + 3072 + 6


def test_time_ms_runs_warmup_untimed():
    calls = []
    s = bench.time_ms(lambda: calls.append(1), reps=4, warmup=2)
    assert len(calls) == 6 and s["n"] == 4
    assert 0 <= s["median"] <= s["p95"]


def test_fullres_jpeg_has_the_requested_size():
    from pneumo.io.decode import load_image

    img = load_image(bench.fullres_jpeg((640, 480)))
    assert img.size == (640, 480)


def test_seed_ensemble_gradcam_agrees_with_its_prediction():
    """The generic Grad-CAM returns the model's own probability and one 8x8 map per image."""
    import keras

    from pneumo.pipeline import predict_proba

    keras.utils.set_random_seed(0)
    cand = bench.build_seed_ensemble(members=2)  # the averaging over members is exercised with two (cheaper)
    x = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 1)).astype(np.float32)
    probs, cams = cand.cam(x)
    assert cams.shape == (3, 8, 8) and np.isfinite(cams).all()
    np.testing.assert_allclose(probs, predict_proba(cand.model, x), atol=1e-5)
    overlay = bench.explain_one(cand, x[0, :, :, 0].astype(np.uint8))
    assert overlay.shape == (64, 64, 3) and overlay.dtype == np.uint8


def test_stages_time_the_models_that_are_present(tiny_lung_model_path, tiny_model_path):
    """Segmentation is timed for a lungs-mode classifier, the gate when it lies beside the classifier."""
    plan = bench.Plan(warmup=0, reps=1, batch_reps=1, batch_warmup=0, import_reps=1, train_images=8)
    cand = bench.load_pneumo(tiny_lung_model_path)[0]
    st = bench.measure_stages(cand, bench.fullres_jpeg((640, 480)), plan)
    assert st["segmentation_ms"]["n"] == 1 and st["lung_input_ms"]["n"] == 1
    assert st["scope_ms"] == {"status": "not present", "path": str(tiny_lung_model_path.parent / "pneumo_scope.keras")}
    for stage in ("decode_display_ms", "preprocess_ms", "classifier_ms", "explanation_ms", "overlay_ms", "app_path_ms"):
        assert st[stage]["n"] == 1, stage
    full = bench.measure_stages(bench.load_pneumo(tiny_model_path)[0], bench.fullres_jpeg((640, 480)), plan)
    assert full["segmentation_ms"]["status"] == "not present"


def test_stages_and_macs_of_the_two_network_path(tiny_shared_model_path):
    """With a gate that finds the lungs: the gate's pass is timed once (segmentation is its post-processing only),
    its cost counts twice (the film and its mirror image), and its file once."""
    plan = bench.Plan(warmup=0, reps=1, batch_reps=1, batch_warmup=0, import_reps=1, train_images=8)
    cand = bench.load_pneumo(tiny_shared_model_path)[0]
    assert cand.engine == "classifier TFLite, gate and lungs TFLite" and "one network" in cand.description
    st = bench.measure_stages(cand, bench.fullres_jpeg((640, 480)), plan)
    assert st["scope_ms"]["n"] == 1 and st["segmentation_ms"]["n"] == 1 and "post-processing" in st["segmentation_note"]
    macs = bench.candidate_mmacs(cand)
    assert set(macs) == {"classifier", "scope_gate_and_lungs", "total"}
    from pneumo.training.networks import load_keras_with_metadata

    one_pass = bench.count_macs(load_keras_with_metadata(cand.models.gate.path)[0]) / 1e6
    assert macs["scope_gate_and_lungs"] == pytest.approx(2 * one_pass, rel=1e-3)
    assert len(bench.model_files(cand.models)) == 2


def test_pneumo_runs_on_its_tflite_copies(tiny_lung_model_path, tiny_model_path, tmp_path):
    """The bench times pneumo as the app and the CLI run it: every network on its TFLite copy, no TensorFlow
    fallback (a model without its copy is refused, naming the export command)."""
    from pneumo.nets.lite import LiteModel
    from pneumo.nets.modelfile import ModelFileError

    cand, loaded, load_s = bench.load_pneumo(tiny_lung_model_path)
    assert cand.engine == "classifier TFLite, lungs TFLite" and load_s > 0
    assert isinstance(cand.model, LiteModel) and isinstance(cand.models.lungs.model, LiteModel)
    assert loaded is cand.models.classifier and cand.size == 32 and cand.models.gate is None
    assert bench.load_pneumo(tiny_model_path)[0].engine == "classifier TFLite"
    bare = tmp_path / "tiny.keras"  # the .keras and .json, without the .tflite
    bare.write_bytes(tiny_model_path.read_bytes())
    bare.with_suffix(".json").write_text(tiny_model_path.with_suffix(".json").read_text())
    with pytest.raises(ModelFileError, match="python -m pneumo.training.export"):
        bench.load_pneumo(bare)


def test_cli_paths_agree(tiny_model_path):
    """pneumo's decoding (thread pool, reduced JPEG) and the seed notebook's give the same labels here."""
    cand = bench.load_pneumo(tiny_model_path)[0]
    blobs = [bench.fullres_jpeg((900, 700))] * 3
    fast, slow = bench.predict_files(cand, blobs, 2, "pneumo"), bench.predict_files(cand, blobs, 2, "seed")
    assert len(fast) == 3 and fast == slow
    with pytest.raises(ValueError):
        bench.predict_files(cand, blobs, 2, "other")


@pytest.fixture(scope="module")
def quick_result(tiny_model_path) -> dict:
    """`python -m pneumo.bench --quick --json --training` on the tiny model, as CI runs it."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    cmd = [sys.executable, "-m", "pneumo.bench", "--quick", "--json", "--training", "--model", str(tiny_model_path)]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=600, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout)  # stdout is exactly one JSON object


@pytest.mark.slow
def test_quick_json_contract(quick_result, tiny_model_path):
    r = quick_result
    assert r["mode"] == "quick"
    assert set(MODELS) <= r.keys()
    for name in MODELS:
        m = r[name]
        for item in ("predict_ms", "explain_ms", "batch_ms"):
            assert _positive(m[item]["median"]) and _positive(m[item]["p95"]), (name, item, m[item])
            assert m[item]["p95"] >= m[item]["median"] >= m[item]["min"]
        assert _positive(m["batch_images_per_s"])
        per_s = r["plan"]["batch_size"] / (m["batch_ms"]["median"] / 1000)
        assert m["batch_images_per_s"] == pytest.approx(per_s, rel=0.01)
        assert _positive(m["model_params"]) and _positive(m["model_file_mb"])
        assert _positive(m["model_mmacs"]["total"]) and m["model_mmacs"]["total"] >= m["model_mmacs"]["classifier"]
    pn = r["pneumo"]
    assert _positive(pn["decode_ms"]["median"]) and _positive(pn["decode_ms"]["p95"])
    for item in ("peak_rss_mb", "import_s", "load_model_s", "cold_start_s"):
        assert _positive(pn[item]), item
    assert pn["cold_start_s"] > pn["import_s"]  # import + load + the first result
    st = pn["stages"]
    assert set(bench.STAGES) <= st.keys()
    for stage in bench.STAGES:  # each stage timed, or an optional model marked absent
        assert _positive(st[stage].get("median")) or st[stage]["status"] == "not present", (stage, st[stage])
    for stage in ("decode_display_ms", "decode_model_ms", "preprocess_ms", "classifier_ms", "explanation_ms"):
        assert _positive(st[stage]["median"]), stage
    assert _positive(st["app_path_ms"]["median"]) and st["explanation_method"].startswith("CAM")
    for name in bench.REFERENCES:
        assert r[name]["batch_pipeline"] == "seed" and _positive(r[name]["batch_images_per_s_pneumo_pipeline"])
    assert r["input"]["display_width"] <= 1200 and r["input"]["display_height"] <= 1200
    assert pn["peak_rss_mb"] < 100_000  # MiB, not KiB or bytes
    assert pn["input_size"] == 32 and pn["engine"] == "classifier TFLite"  # the TFLite copy, as the app runs it
    assert all(r[name]["engine"] == "TensorFlow" for name in bench.REFERENCES)
    assert pn["model_params"] == json.loads(tiny_model_path.with_suffix(".json").read_text())["parameters"]
    assert r["densenet121_224"]["input_size"] == 224 and r["densenet121_224"]["model_params"] > 7_000_000
    assert r["seed_ensemble_64"]["input_size"] == 64
    assert r["input"]["width"] >= 1400 and r["input"]["height"] >= 1100  # a full-resolution JPEG


@pytest.mark.slow
def test_quick_json_ratios_are_pneumo_over_reference(quick_result):
    r = quick_result
    for name in bench.REFERENCES:
        ratios = r["ratios"][name]
        for item in bench.TIMED_ITEMS:
            mine, theirs = r["pneumo"][item], r[name][item]
            if isinstance(mine, dict):
                mine, theirs = mine["median"], theirs["median"]
            assert _positive(ratios[item])
            assert ratios[item] == pytest.approx(mine / theirs, rel=1e-3), (name, item)
    assert set(r["targets"]) == {
        "explain_ms_le_half_seed_ensemble",
        "batch_images_per_s_ge_2x_seed_ensemble",
        "peak_rss_mb_le_900_all_models",
    }
    assert all(isinstance(v, bool) for v in r["targets"].values())


@pytest.mark.slow
def test_quick_training_extrapolation(quick_result):
    t = quick_result["training"]
    assert t["synthetic_images"] == bench.PLANS["quick"].train_images and t["image_size"] == 32
    assert _positive(t["epoch_s"]) and _positive(t["first_epoch_s"]) and _positive(t["extrapolated_epoch_s"])
    # the tiny model's metadata records no split or epochs: the public split's sizes are used, no total is made up
    assert (t["train_split_images"], t["validation_images"]) == (4432, 784)
    assert t["epochs_run"] is None and t["extrapolated_training_s"] is None
    expected = t["epoch_s"] * 4432 / t["synthetic_images"] + t["validation_ms_per_image"] / 1000 * 784
    assert t["extrapolated_epoch_s"] == pytest.approx(expected, rel=0.05)


@pytest.mark.slow
def test_table_shows_every_item_and_ratio(quick_result):
    table = bench.format_table(quick_result)
    for word in (*MODELS, "decode_ms", "predict_ms", "explain_ms", "batch_images_per_s", "peak_rss_mb", "training"):
        assert word in table
    ratio = quick_result["ratios"]["densenet121_224"]["explain_ms"]
    assert f"{ratio:.3g}" in table


def test_fullres_agreement_finds_copies_by_name(tiny_lung_model_path, tmp_path):
    import cv2

    from tests.conftest import synthetic_xray

    for i, cls in enumerate(("NORMAL", "PNEUMONIA")):
        big = synthetic_xray(width=1000, height=800, seed=i, opacity=cls == "PNEUMONIA")
        (tmp_path / "full" / cls).mkdir(parents=True)
        (tmp_path / "data" / "train" / cls).mkdir(parents=True)
        cv2.imwrite(str(tmp_path / "full" / cls / f"x{i}.jpeg"), big)
        small = cv2.resize(big, (224, 224), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(tmp_path / "data" / "train" / cls / f"x{i}.jpeg"), small)
    out = bench.fullres_agreement(tiny_lung_model_path, tmp_path / "full", tmp_path / "data")
    assert out["images"] == 2
    for way in ("full", "app_and_cli"):
        assert 0 <= out[way]["mean_abs_dp"] <= out[way]["max_abs_dp"] <= 1
    with pytest.raises(ValueError):
        bench.fullres_agreement(tiny_lung_model_path, tmp_path / "full", tmp_path / "nothing")


@pytest.mark.slow
def test_browser_timing_on_the_committed_app():
    """`python -m pneumo.bench --browser`: a fresh server, cold start stages in order, one timed upload per file."""
    from pneumo.bench import browser as bench_browser

    if not os.path.exists(bench_browser.CHROMIUM):
        pytest.skip("no Debian chromium")
    files = sorted((ROOT / "assets" / "samples").glob("*.jpeg"))[:2]
    r = bench_browser.measure_browser(files)
    for cold in (r["cold_start"], r["cold_start_after_a_pause"]):
        assert 0 < cold["health_s"] <= cold["first_page_s"] < cold["first_result_s"]
        assert cold["first_page_s"] + cold["pause_s"] + cold["first_upload_to_result_s"] <= cold["first_result_s"] + 0.5
    assert r["cold_start_after_a_pause"]["pause_s"] == bench_browser.COLD_PAUSE_S > 0
    for key, n in (("upload_to_probability_s", 1), ("new_visitor_upload_to_probability_s", 2)):
        up = r[key]
        assert up["n"] == n and len(up["each"]) == n and 0 < up["median"] <= up["max"]
    assert r["files"] == [f.name for f in files]
