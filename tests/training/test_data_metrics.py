"""Patient ids, the patient-level split, and the metrics / threshold rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pneumo.training import data, metrics


def test_patient_id_patterns():
    assert data.patient_id("person123_bacteria_456.jpeg") == "person123"
    assert data.patient_id("person123_virus_7.jpeg") == "person123"
    assert data.patient_id("person447_virus_921_1.jpeg") == "person447"
    assert data.patient_id("IM-0115-0001.jpeg") == "IM-0115"
    assert data.patient_id("NORMAL2-IM-0383-0001.jpeg") == "NORMAL2-IM-0383"
    assert data.patient_id("NORMAL2-IM-1294-0001-0002.jpeg") == "NORMAL2-IM-1294"
    assert data.patient_id("IM-0383-0001.jpeg") != data.patient_id("NORMAL2-IM-0383-0001.jpeg")
    assert data.patient_id("scan.png") == "scan"


def _fake_listing() -> tuple[list[Path], np.ndarray]:
    rng = np.random.default_rng(0)
    paths, labels = [], []
    for i in range(60):
        for k in range(int(rng.integers(1, 4))):  # 1-3 images per patient
            paths.append(Path(f"NORMAL/IM-{i:04d}-000{k}.jpeg"))
            labels.append(0)
    for i in range(150):
        for k in range(int(rng.integers(1, 4))):
            paths.append(Path(f"PNEUMONIA/person{i}_{'bacteria' if k % 2 else 'virus'}_{i * 10 + k}.jpeg"))
            labels.append(1)
    return paths, np.array(labels)


def test_patient_split_has_no_leak_and_is_stratified():
    paths, labels = _fake_listing()
    tr, va = data.patient_split(paths, labels, 0.2, seed=1)
    assert len(set(tr) | set(va)) == len(paths) and not set(tr) & set(va)
    tr_p = {data.patient_id(paths[i].name) for i in tr}
    va_p = {data.patient_id(paths[i].name) for i in va}
    assert not tr_p & va_p
    for c in (0, 1):
        share = np.mean(labels[va] == c) / np.mean(labels == c)
        assert 0.8 < share < 1.25  # class balance of the validation split follows the whole
    assert 0.17 < len(va) / len(paths) < 0.25
    # fixed by the seed
    tr2, va2 = data.patient_split(paths, labels, 0.2, seed=1)
    np.testing.assert_array_equal(va, va2)
    _, va3 = data.patient_split(paths, labels, 0.2, seed=2)
    assert set(va) != set(va3)


def test_metrics_at_threshold():
    y = np.array([0, 0, 0, 1, 1, 1, 1])
    p = np.array([0.1, 0.4, 0.6, 0.55, 0.7, 0.9, 0.3])
    m = metrics.metrics_at(y, p, 0.5)
    assert m["confusion"] == {"tp": 3, "fn": 1, "tn": 2, "fp": 1}
    assert m["sensitivity"] == 0.75 and m["specificity"] == round(2 / 3, 4)
    assert m["accuracy"] == round(5 / 7, 4)
    assert 0.0 <= m["auc"] <= 1.0 and 0.0 <= m["ece"] <= 1.0


def test_ece_perfectly_calibrated_is_zero():
    y = np.array([0] * 8 + [1] * 2 + [0] * 2 + [1] * 8)
    p = np.array([0.2] * 10 + [0.8] * 10)
    assert metrics.expected_calibration_error(y, p) < 1e-9
    assert metrics.expected_calibration_error(np.ones(4), np.zeros(4)) == 1.0


def test_threshold_rule_keeps_sensitivity_floor():
    # perfectly separable: the highest threshold that keeps every pneumonia case, i.e. the most specific one
    y = np.array([0] * 50 + [1] * 50)
    p = np.concatenate([np.linspace(0.0, 0.2, 50), np.linspace(0.815, 1.0, 50)])
    assert metrics.choose_threshold(y, p, 1.0) == 0.81
    # overlapping scores: sensitivity at the threshold reaches the floor, one step higher it does not
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    p = np.clip(rng.normal(0.35 + 0.3 * y, 0.15), 0, 1)
    for floor in (0.8, 0.95):
        t = metrics.choose_threshold(y, p, floor)
        assert metrics.metrics_at(y, p, t)["sensitivity"] >= floor
        assert metrics.metrics_at(y, p, t + 0.01)["sensitivity"] < floor
    # no threshold reaches an impossible floor: the lowest grid value
    assert metrics.choose_threshold(np.array([0, 1]), np.array([0.5, 0.0]), 0.99) == 0.01


def test_operating_points_monotone():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 200)
    pts = metrics.operating_points(y, rng.random(200))
    sens = [q["sensitivity"] for q in pts]
    spec = [q["specificity"] for q in pts]
    assert len(pts) == 99 and all(np.diff(sens) <= 0) and all(np.diff(spec) >= 0)
