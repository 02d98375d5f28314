"""The scope gate: rules per warning code, orientation undo, the learned gate's API, and a smoke training run."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from pneumo import config
from pneumo.checks import scope
from pneumo.io.decode import LoadedImage
from pneumo.nets.lite import attach
from pneumo.nets.modelfile import Network
from tests.conftest import synthetic_xray

GATE_SIZE = 32


def _img(pixels: np.ndarray, colourfulness: float = 0.0, **info) -> LoadedImage:
    return LoadedImage(pixels=pixels, info=info, colourfulness=colourfulness)


# ---------------------------------------------------------------------------------------------------- rules
def test_every_code_is_documented_and_out_of_scope_codes_are_codes():
    assert scope.OUT_OF_SCOPE_CODES <= set(scope.WARNING_CODES)
    required = {"not_radiograph", "not_chest", "not_frontal", "adult", "inverted", "rotated", "mirrored"}
    assert required | {"colour", "uniform", "low_resolution"} <= set(scope.WARNING_CODES)
    assert all(s.endswith(".") and len(s) > 20 for s in scope.WARNING_CODES.values())
    assert not {"rotated", "inverted", "mirrored", "possibly_mirrored", "low_resolution"} & scope.OUT_OF_SCOPE_CODES
    # a right-sided heart may be real (dextrocardia): the text must say the flip was assumed
    assert (
        "assumed, not certain" in scope.WARNING_CODES["mirrored"] and "dextrocardia" in scope.WARNING_CODES["mirrored"]
    )
    # the warning band: analysed as it is, and the text says why the answer may not hold and what to check
    words = scope.WARNING_CODES["possibly_mirrored"]
    assert all(w in words for w in ("heart appears to be on the right", "mirrored", "dextrocardia", "may not hold"))
    assert "side marker" in words


def test_plausible_radiograph_passes_the_rules():
    r = scope.assess(_img(synthetic_xray(300, 260), modality="DX", body_part="CHEST", view_position="PA"), None)
    assert r.codes == () and r.in_scope and r.p_in_scope is None and r.orientation == "upright"
    assert "within the intended use" in r.explanation


@pytest.mark.parametrize(
    "info, code",
    [
        ({"modality": "CT"}, "not_radiograph"),
        ({"modality": "MR", "body_part": "HEAD"}, "not_radiograph"),
        ({"modality": "CR", "body_part": "HAND"}, "not_chest"),
        ({"modality": "DX", "body_part": "CHEST", "view_position": "LL"}, "not_frontal"),
        ({"modality": "DX", "view_position": "LATERAL"}, "not_frontal"),
    ],
)
def test_dicom_header_rules(info, code):
    r = scope.assess(_img(synthetic_xray(), **info), None)
    assert code in r.codes and not r.in_scope
    assert scope.WARNING_CODES[code] in r.explanation


@pytest.mark.parametrize("info", [{"modality": "unknown", "body_part": "unknown"}, {"body_part": "PORT CHEST"}])
def test_unknown_or_chest_header_is_not_a_code(info):
    assert scope.assess(_img(synthetic_xray(), **info), None).codes == ()


def test_colour_uniform_low_resolution_and_shape_rules():
    colour = scope.assess(_img(synthetic_xray(), colourfulness=config.MAX_COLOURFULNESS + 1), None)
    assert colour.codes == ("colour",) and not colour.in_scope
    flat = np.full((300, 300), 128, np.uint8) + np.random.default_rng(0).integers(0, 3, (300, 300), dtype=np.uint8)
    uniform = scope.assess(flat, None)
    assert uniform.codes == ("uniform",) and not uniform.in_scope
    small = scope.assess(synthetic_xray(120, 100), None)
    assert small.codes == ("low_resolution",) and small.in_scope  # a warning, still analysed
    wide = scope.assess(synthetic_xray(900, 250), None)
    assert wide.codes == ("unusual_shape",) and wide.in_scope


@pytest.mark.parametrize(
    "code", ["multi_frame", "burned_in_annotation", "dicom_bits_inconsistent", "dicom_sign_inconsistent"]
)
def test_what_decoding_noticed_becomes_a_remark_not_a_refusal(code):
    img = LoadedImage(pixels=synthetic_xray(), info={"modality": "DX"}, warnings=(code,))
    r = scope.assess(img, None)
    assert r.codes == (code,) and r.in_scope
    assert "with remarks" in r.explanation and scope.WARNING_CODES[code] in r.explanation
    lateral = scope.assess(LoadedImage(pixels=synthetic_xray(), info={"view_position": "LL"}, warnings=(code,)), None)
    assert lateral.codes == (code, "not_frontal") and not lateral.in_scope  # decoding's remarks first, then the rules


def test_every_warning_code_is_in_the_readme_table():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    missing = [c for c in scope.WARNING_CODES if f"| `{c}` |" not in readme]
    assert not missing, f"add a row to the README's warning-code table for {missing}"


def test_raw_pixels_must_be_uint8_2d():
    with pytest.raises(ValueError):
        scope.assess(np.zeros((10, 10, 3), np.uint8), None)


# ---------------------------------------------------------------------------------------------------- orientation
@pytest.mark.parametrize("index", range(16))
def test_orientation_round_trip_is_exact(index):
    x = synthetic_xray(300, 260, seed=index)
    t = scope.apply_orientation(x, index)
    assert t.shape == (x.shape[::-1] if index % 2 else x.shape)
    assert (index == 0) == np.array_equal(t, x)
    np.testing.assert_array_equal(scope.undo_orientation(t, index), x)


def test_orientation_names_match_transforms():
    x = synthetic_xray(seed=3)
    np.testing.assert_array_equal(scope.apply_orientation(x, scope.ORIENTATIONS.index("inverted")), 255 - x)
    np.testing.assert_array_equal(scope.apply_orientation(x, scope.ORIENTATIONS.index("rot180")), x[::-1, ::-1])
    np.testing.assert_array_equal(scope.apply_orientation(x, scope.ORIENTATIONS.index("mirrored")), x[:, ::-1])
    np.testing.assert_array_equal(scope.apply_orientation(x, scope.ORIENTATIONS.index("mirrored_rot180")), x[::-1])
    np.testing.assert_array_equal(
        scope.apply_orientation(x, scope.ORIENTATIONS.index("mirrored_inverted_rot90")), 255 - np.rot90(x[:, ::-1])
    )
    assert len(scope.ORIENTATIONS) == len(set(scope.ORIENTATIONS)) == 16
    # the 16 transforms are 16 different pictures (a square, asymmetric image)
    sq = synthetic_xray(64, 64, seed=5, opacity=True)
    assert len({scope.apply_orientation(sq, i).tobytes() for i in range(16)}) == 16


# ---------------------------------------------------------------------------------------------------- learned gate
class _Fixed:
    """A stand-in gate model with fixed outputs, so that the decision logic is tested exactly: it has the gate's
    output structure (with the mirror head when ``mirror_fn`` is given), and a runner attached as
    pneumo.nets.lite.forward expects one."""

    def __init__(self, kind: np.ndarray, orient_fn, mirror_fn=None):
        names = [scope.KIND_OUTPUT, scope.ORIENTATION_OUTPUT] + ([scope.MIRROR_OUTPUT] if mirror_fn else [])
        self.output = dict.fromkeys(names)
        self.output_names = names
        attach(self, "forward", _FixedRunner(kind, orient_fn, mirror_fn, names))


class _FixedRunner:
    def __init__(self, kind: np.ndarray, orient_fn, mirror_fn, names: list[str]):
        self.kind, self.orient_fn, self.mirror_fn, self.outputs = kind, orient_fn, mirror_fn, names

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        out = [np.tile(self.kind, (len(x), 1)), np.stack([self.orient_fn(a) for a in x])]
        return out + ([np.array([[self.mirror_fn(a)] for a in x])] if self.mirror_fn else [])  # (N, 1) scores


def _one_hot(i: int, n: int = 8, p: float = 0.97) -> np.ndarray:
    v = np.full(n, (1 - p) / (n - 1))
    v[i] = p
    return v


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and np.abs(a.astype(int) - b.astype(int)).max() <= 2


def _detects(upright_small: np.ndarray):
    """Orientation 'model': the turn/inversion that maps upright_small, mirrored or not, to the input, confidently."""

    def fn(a: np.ndarray) -> np.ndarray:
        for i in range(16):
            if _close(scope.apply_orientation(upright_small, i), a[..., 0]):
                return _one_hot(i % 8)
        return np.full(8, 1 / 8)

    return fn


def _handedness(upright_small: np.ndarray):
    """Mirror 'model': score h = -4 on the upright image, +4 on its mirror image, 0 on anything else."""

    def fn(a: np.ndarray) -> float:
        return -4.0 if _close(upright_small, a[..., 0]) else 4.0 if _close(upright_small[:, ::-1], a[..., 0]) else 0.0

    return fn


def _gate(model, thresholds=None) -> Network:
    t = {"in_scope": 0.5, "orientation": 0.9, "upright_min": 0.2, "mirror": 0.9, "mirror_unclear": 0.7}
    return Network(model, {"input_size": GATE_SIZE, "thresholds": {**t, **(thresholds or {})}}, Path("gate.keras"))


IN_SCOPE = np.array([0.9, 0.05, 0.02, 0.02, 0.01])


def _knowing(x: np.ndarray) -> Network:
    """A gate that knows the upright picture ``x``: it detects every turn, inversion and mirror of it."""
    small = scope.gate_input(x, GATE_SIZE)[..., 0]
    return _gate(_Fixed(IN_SCOPE, _detects(small), _handedness(small)))


@pytest.mark.parametrize("index", range(1, 16))
def test_confident_transform_is_undone_and_reported(index):
    x = synthetic_xray(260, 260, seed=1, opacity=True)  # the opacity makes left and right differ
    r = scope.assess(scope.apply_orientation(x, index), _knowing(x))
    np.testing.assert_array_equal(r.corrected, x)
    assert r.orientation == scope.ORIENTATIONS[index] and r.in_scope
    assert ("rotated" in r.codes) == bool(index % 4) and ("inverted" in r.codes) == bool((index // 4) % 2)
    assert ("mirrored" in r.codes) == (index >= 8) and set(r.codes) <= {"rotated", "inverted", "mirrored"}
    assert ("flipped back" in r.explanation) == (index >= 8)
    assert r.orientation_probs["mirrored"] == pytest.approx(1 / (1 + np.exp(-8)) if index >= 8 else 1 / (1 + np.exp(8)))


def test_a_mirrored_film_is_flipped_back_with_the_mirrored_code():
    x = synthetic_xray(300, 260, seed=6, opacity=True)
    gate = _knowing(x)
    r = scope.assess(np.ascontiguousarray(x[:, ::-1]), gate)
    assert r.codes == ("mirrored",) and r.in_scope and r.orientation == "mirrored"
    np.testing.assert_array_equal(r.corrected, x)
    assert scope.assess(x, gate).codes == ()
    # P(mirrored) compares the film with its mirror image: h(x) - h(flipped x) = 4 - (-4)
    assert r.orientation_probs["mirrored"] == pytest.approx(1 / (1 + np.exp(-8)))


def test_mirror_thresholds_flip_only_when_sure_and_refuse_the_unclear_band():
    x = synthetic_xray(300, 260, seed=7, opacity=True)
    small = scope.gate_input(x, GATE_SIZE)[..., 0]
    mirrored = np.ascontiguousarray(x[:, ::-1])

    def weak(a):  # h(mirror image) - h(upright) = 1.4: P(mirrored) = 0.80
        return {True: 0.7, False: -0.7}[_close(small[:, ::-1], a[..., 0])]

    gate = _gate(_Fixed(IN_SCOPE, _detects(small), weak))
    r = scope.assess(mirrored, gate)  # between mirror_unclear 0.7 and mirror 0.9: refused as unclear
    assert r.codes == ("orientation_unclear",) and not r.in_scope and r.orientation == "upright"
    np.testing.assert_array_equal(r.corrected, mirrored)
    r = scope.assess(mirrored, _gate(gate.model, {"mirror_unclear": 0.85}))  # below the band: analysed as it is
    assert r.codes == () and r.in_scope and r.orientation == "upright"
    r = scope.assess(mirrored, _gate(gate.model, {"mirror": 0.75}))  # above the flip threshold: flipped back
    assert r.codes == ("mirrored",) and r.in_scope
    np.testing.assert_array_equal(r.corrected, x)


def test_the_mirror_warning_band_analyses_the_film_as_it_is_with_a_warning():
    """P(mirrored) in [mirror_warn, mirror): `possibly_mirrored`, in scope, pixels untouched; at or above the flip
    threshold: flipped back; below the band, or for the upright film: nothing."""
    x = synthetic_xray(300, 260, seed=9, opacity=True)
    small = scope.gate_input(x, GATE_SIZE)[..., 0]
    mirrored = np.ascontiguousarray(x[:, ::-1])

    def weak(a):  # h(mirror image) - h(upright) = 1.4: P(mirrored) = 0.80 on the mirror image, 0.20 upright
        return {True: 0.7, False: -0.7}[_close(small[:, ::-1], a[..., 0])]

    band = {"mirror": 0.9, "mirror_unclear": 0.9, "mirror_warn": 0.5}
    gate = _gate(_Fixed(IN_SCOPE, _detects(small), weak), band)
    r = scope.assess(mirrored, gate)
    assert r.codes == ("possibly_mirrored",) and r.in_scope and r.orientation == "upright"
    np.testing.assert_array_equal(r.corrected, mirrored)  # analysed as it is: not flipped
    assert "within the intended use" in r.explanation and "may be mirrored" in r.explanation
    assert r.orientation_probs["mirrored"] == pytest.approx(1 / (1 + np.exp(-1.4)))
    assert scope.assess(x, gate).codes == ()  # the upright film: P(mirrored) 0.20, below the band
    r = scope.assess(mirrored, _gate(gate.model, {**band, "mirror": 0.75, "mirror_unclear": 0.75}))  # flipped
    assert r.codes == ("mirrored",) and r.in_scope
    np.testing.assert_array_equal(r.corrected, x)
    assert scope.assess(mirrored, _gate(gate.model, {**band, "mirror_warn": 0.85})).codes == ()  # below the band
    # a refusal band (a gate that has one) wins: the film is not also warned
    assert scope.assess(mirrored, _gate(gate.model, {**band, "mirror_unclear": 0.7})).codes == ("orientation_unclear",)
    # a gate without mirror_warn has no warning band
    assert scope.assess(mirrored, _gate(gate.model, {"mirror": 0.9, "mirror_unclear": 0.9})).codes == ()


def test_an_out_of_scope_image_is_not_flipped():
    x = synthetic_xray(300, 260, seed=8, opacity=True)
    small = scope.gate_input(x, GATE_SIZE)[..., 0]
    adult = _gate(_Fixed(np.array([0.1, 0.7, 0.1, 0.05, 0.05]), _detects(small), _handedness(small)))
    r = scope.assess(np.ascontiguousarray(x[:, ::-1]), adult)
    assert r.codes == ("adult",) and r.orientation == "upright"


def test_a_gate_without_the_mirror_head_still_works():
    """Gates trained before the mirror head have kind and orientation outputs only: turns are undone, no mirror."""
    x = synthetic_xray(260, 260, seed=1, opacity=True)
    gate = _gate(_Fixed(IN_SCOPE, _detects(scope.gate_input(x, GATE_SIZE)[..., 0])))
    r = scope.assess(scope.apply_orientation(x, 5), gate)
    assert r.orientation == "inverted_rot90" and set(r.codes) == {"rotated", "inverted"}
    assert set(r.orientation_probs) == set(scope.ORIENTATIONS[:8])
    assert scope.assess(np.ascontiguousarray(x[:, ::-1]), gate).codes == ()  # a mirror goes unseen


def test_unclear_orientation_and_out_of_scope_kind():
    x = synthetic_xray(260, 260, seed=2)
    unsure = _gate(_Fixed(IN_SCOPE, lambda a: np.full(8, 1 / 8)))
    r = scope.assess(x, unsure)
    assert r.codes == ("orientation_unclear",) and not r.in_scope and r.orientation == "upright"
    adult = _gate(_Fixed(np.array([0.1, 0.7, 0.1, 0.05, 0.05]), lambda a: _one_hot(0)))
    r = scope.assess(x, adult)
    assert r.codes == ("adult",) and not r.in_scope and r.p_in_scope == pytest.approx(0.1)
    assert r.kind_probs["adult"] == pytest.approx(0.7) and "adult" in r.explanation
    for k, code in enumerate(scope.KINDS[1:], start=1):
        probs = np.full(5, 0.05)
        probs[k] = 0.8
        assert scope.assess(x, _gate(_Fixed(probs, lambda a: _one_hot(0)))).codes == (code,)


def test_correction_that_lands_out_of_scope_is_not_applied():
    x = synthetic_xray(260, 260, seed=4)
    model = _Fixed(np.array([0.4, 0.3, 0.1, 0.1, 0.1]), lambda a: _one_hot(2))
    r = scope.assess(x, _gate(model))
    assert r.orientation == "upright" and "rotated" not in r.codes and r.codes == ("adult",)
    np.testing.assert_array_equal(r.corrected, x)


@pytest.fixture(scope="module")
def tiny_gate():
    """A tiny random gate model built with the training script's builder."""
    import keras

    from pneumo.training.networks import keras_network
    from pneumo.training.train_scope import Settings, build_gate

    keras.utils.set_random_seed(0)
    model = build_gate(Settings(image_size=GATE_SIZE, stem_width=4, widths=(8, 8), lung_widths=(8, 4)))
    t = {"orientation": 0.2, "in_scope": 0.2, "upright_min": 0.0}
    return keras_network(model, {"input_size": GATE_SIZE, "thresholds": t})


def test_gate_model_is_small_and_named(tiny_gate):
    from pneumo.training.train_scope import Settings, build_gate

    full = build_gate(Settings())
    assert full.count_params() < 500_000
    names = {layer.name for layer in full.layers}
    assert {"image", scope.KIND_OUTPUT, scope.ORIENTATION_OUTPUT} <= names
    out = tiny_gate.model(np.zeros((2, GATE_SIZE, GATE_SIZE, 1), np.float32))
    assert out["kind"].shape == (2, 5) and out["orientation"].shape == (2, 8) and out["mirror"].shape == (2, 1)


def test_assess_batch_equals_assess(tiny_gate):
    rng = np.random.default_rng(0)
    items = [scope.apply_orientation(synthetic_xray(280, 240, seed=i), 3 * i % 16) for i in range(6)]
    items.append(_img(rng.integers(0, 256, (300, 300), dtype=np.uint8), colourfulness=30.0))
    batch = scope.assess_batch(items, tiny_gate)
    assert len(batch) == len(items)
    for item, b in zip(items, batch, strict=True):
        one = scope.assess(item, tiny_gate)
        assert one.codes == b.codes and one.orientation == b.orientation and one.in_scope == b.in_scope
        assert one.p_in_scope == pytest.approx(b.p_in_scope, abs=1e-5)
        np.testing.assert_array_equal(one.corrected, b.corrected)
    assert "colour" in batch[-1].codes and scope.assess_batch([], tiny_gate) == []


def test_gate_input_is_the_classifier_squash_resized():
    from pneumo.io.preprocess import preprocess

    x = synthetic_xray(500, 400)
    expect = cv2.resize(preprocess(x)[:, :, 0], (GATE_SIZE, GATE_SIZE), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(scope.gate_input(x, GATE_SIZE)[:, :, 0], expect)


# ---------------------------------------------------------------------------------------------------- training
def _write_folders(root: Path) -> tuple[Path, Path]:
    """A tiny chest_xray layout and a scope folder of synthetic images."""
    data, sc = root / "data", root / "scope"
    for cls in config.CLASS_NAMES:
        (data / "train" / cls).mkdir(parents=True)
        for i in range(8):
            name = f"person{i}_bacteria_{i}.jpeg" if cls == "PNEUMONIA" else f"IM-{i:04d}-0001.jpeg"
            cv2.imwrite(str(data / "train" / cls / name), synthetic_xray(seed=i, opacity=cls == "PNEUMONIA"))
    rng = np.random.default_rng(0)
    for folder in ("adult_frontal_cxr", "lateral_cxr", "mednist_hand", "ct"):
        (sc / folder).mkdir(parents=True)
        for i in range(6):
            cv2.imwrite(str(sc / folder / f"img_{i}.jpg"), rng.integers(0, 256, (64, 64), dtype=np.uint8))
    return data, sc


@pytest.mark.slow
def val_n(meta: dict) -> int:
    return meta["metrics"]["in_scope_validation"]["n"]


def test_smoke_training_writes_a_loadable_gate(tmp_path):
    from pneumo.nets.lite import load_network
    from pneumo.training import train_scope

    data, sc = _write_folders(tmp_path)
    out = tmp_path / "out"
    assert train_scope.main(["--data", str(data), "--scope", str(sc), "--out", str(out), "--preset", "smoke"]) == 0
    meta = json.loads((out / "pneumo_scope.json").read_text())
    assert meta["kinds"] == list(scope.KINDS) and meta["input_size"] == 32
    t = meta["thresholds"]
    assert set(t) == {"in_scope", "orientation", "upright_min", "mirror", "mirror_unclear", "mirror_warn"}
    # a warning band below the flip threshold, no refusal band
    assert t["mirror_warn"] <= min(0.5, t["mirror"]) and t["mirror_unclear"] == t["mirror"]
    assert set(meta["threshold_rules"]) == set(t)
    mv = meta["metrics"]["mirror_validation"]["mirrored"]
    assert mv["n"] == val_n(meta) and 0.0 <= mv["flipped_or_warned"] <= 1.0
    val = meta["metrics"]["in_scope_validation"]
    assert val["n"] > 0 and val["flagged_out_of_scope"] <= 0.01 + 1 / val["n"]
    assert set(meta["metrics"]["synthetic_held_out"]) == set(train_scope.GENERATORS)
    assert len(meta["training"]["data"]["in_scope_fingerprint_sha256"]) == 64
    args = ["--data", str(data), "--scope", str(sc), "--out", str(out), "--preset", "smoke", "--evaluate-only"]
    assert train_scope.main(args) == 0  # re-chooses thresholds on the saved model, keeps the training record
    again = json.loads((out / "pneumo_scope.json").read_text())
    assert again["history"] == meta["history"] and "evaluate-only" in again["training"]["evaluated_by"]
    assert again["tflite"]["keras_sha256"] and (out / "pneumo_scope.tflite").exists()  # the app's fast copy
    gate = load_network(out / "pneumo_scope.keras", "gate")  # the TFLite copy, as the app runs it
    r = scope.assess(synthetic_xray(), gate)
    assert 0.0 <= r.p_in_scope <= 1.0 and r.corrected.dtype == np.uint8


# ---------------------------------------------------------------------------------------------------- committed gate
# Whether the committed gate has the mirror head (its metadata names the output); without it no mirror is undone.
MIRROR = scope.MIRROR_OUTPUT in json.loads(config.SCOPE_MODEL_PATH.with_suffix(".json").read_text())["outputs"]


@pytest.fixture(scope="module")
def committed_gate() -> Network:
    from pneumo.nets.lite import load_network

    return load_network(config.SCOPE_MODEL_PATH, "gate")


def test_committed_gate_metadata_is_consistent(committed_gate):
    meta = committed_gate.metadata
    assert meta["kinds"] == list(scope.KINDS)
    assert meta["orientations"] == list(scope.ORIENTATIONS)[: 16 if MIRROR else 8]
    assert meta["parameters"] < 500_000 and meta["metrics"]["in_scope_validation"]["flagged_out_of_scope"] <= 0.01
    assert 0.0 < scope.gate_threshold(committed_gate, "in_scope") < 1.0
    # the targets for mirrored films, on the 784 validation children and their mirror images (validation patients only)
    mv = meta["metrics"]["mirror_validation"]
    assert mv["mirrored"]["n"] == mv["upright"]["n"] == val_n(meta) == 784
    assert mv["mirrored"]["flipped_or_warned"] >= 0.95 and mv["upright"]["flipped"] <= 0.005
    assert all(c["flagged"] <= 0.02 for c in meta["metrics"]["in_scope_validation"]["flagged_by_class"].values())
    assert "/tmp" not in meta["training"]["command"] and "--out models/" in meta["training"]["command"]


def test_committed_gate_keeps_and_uprights_the_sample_films(committed_gate):
    from pneumo.io.decode import load_image

    films = [load_image(p) for p in sorted((config.ASSETS_DIR / "samples").glob("*.jpeg"))]
    kept = scope.assess_batch(films, committed_gate)
    # the upright films are kept as they are, without a remark (the last gate warned one pneumonia as possibly
    # mirrored; this one gives it P(mirrored) 0.23)
    assert films and all(r.in_scope and r.orientation == "upright" for r in kept)
    assert [r.codes for r in kept] == [(), (), (), ()]
    px = films[0].pixels
    for index in range(1, len(committed_gate.metadata["orientations"])):  # 16 with the mirror head, else 8
        r = scope.assess(scope.apply_orientation(px, index), committed_gate)
        assert r.in_scope and r.orientation == scope.ORIENTATIONS[index]
        np.testing.assert_array_equal(r.corrected, px)


def test_committed_gate_flips_back_the_mirrored_sample_films(committed_gate):
    """The committed sample films mirrored left-right (in memory): three get `mirrored` and are put back exactly (the
    two normal ones among them, whose answer a mirror changes); the bacterial pneumonia (P(mirrored) 0.77, below the
    flip threshold 0.999) is analysed as it is, with the `possibly_mirrored` warning."""
    from pneumo.io.decode import load_image

    assert MIRROR and scope.gate_threshold(committed_gate, "mirror_warn", 1.0) <= 0.5
    films = [load_image(p).pixels for p in sorted((config.ASSETS_DIR / "samples").glob("*.jpeg"))]
    mirrored = [np.ascontiguousarray(px[:, ::-1]) for px in films]
    results = scope.assess_batch(mirrored, committed_gate)
    assert [r.codes for r in results] == [("mirrored",), ("mirrored",), ("possibly_mirrored",), ("mirrored",)]
    for px, m, r in zip(films, mirrored, results, strict=True):
        assert r.in_scope
        np.testing.assert_array_equal(r.corrected, px if "mirrored" in r.codes else m)


def test_committed_gate_refuses_a_text_page_and_noise(committed_gate):
    from pneumo.training.train_scope import gen_noise, gen_text

    rng = np.random.default_rng(99)
    pages = [gen_text(rng, None, True), gen_noise(rng, None, True)]
    for r in scope.assess_batch(pages, committed_gate):
        assert not r.in_scope and "not_radiograph" in r.codes


def test_assess_batch_reuses_the_callers_squashes_to_the_same_answer(committed_gate):
    """The pipeline hands over the 224 squashes it made anyway: same codes, probabilities and corrections."""
    from pneumo.io.preprocess import preprocess

    gate = committed_gate
    imgs = [synthetic_xray(300, 260, seed=3), np.rot90(synthetic_xray(280, 320, seed=4)).copy()]
    squashes = np.stack([preprocess(p, 224)[..., 0] for p in imgs])
    a, b = scope.assess_batch(imgs, gate), scope.assess_batch(imgs, gate, squashes)
    for x, y in zip(a, b, strict=True):
        assert x.codes == y.codes and x.orientation == y.orientation and np.array_equal(x.corrected, y.corrected)
        assert x.p_in_scope == pytest.approx(y.p_in_scope, abs=1e-6)
