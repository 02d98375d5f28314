"""Two networks instead of three: a gate whose encoder also feeds a lung head. The pipeline loads it once, takes the
lung masks from the gate's own pass (of the corrected film: turned back, flipped back), runs no lung network of its
own, and gives exactly the answers of the path that runs the lung head separately. Tiny random networks whose output
depends on the input; synthetic images."""

from __future__ import annotations

import numpy as np
import pytest

from pneumo.checks import lungs, scope
from pneumo.io.decode import LoadedImage
from tests.conftest import OPEN_GATE, synthetic_xray

S = 32  # the tiny gate's side (conftest TINY_SIZE)


@pytest.fixture(scope="module")
def shared(tiny_shared_model_path):
    from pneumo.pipeline import load_models

    return load_models(tiny_shared_model_path)  # the TFLite copies, as the app runs them


@pytest.fixture(scope="module")
def keras_gate():
    """A tiny random Keras gate with a lung head (its output depends on the input)."""
    import keras

    from pneumo.training.networks import keras_network
    from pneumo.training.train_scope import Settings, build_gate

    keras.utils.set_random_seed(5)
    model = build_gate(Settings(image_size=S, stem_width=4, widths=(8, 8), lung_widths=(8, 4)))
    return keras_network(model, {"input_size": S, "thresholds": dict(OPEN_GATE), "lung_threshold": 0.5})


def _films(n: int = 4) -> list[np.ndarray]:
    return [synthetic_xray(300 + 10 * i, 260, seed=i, opacity=i % 2 == 1) for i in range(n)]


def _head(gate, x: np.ndarray) -> np.ndarray:
    """The lung head's P(lung) (N, S, S) on gate inputs uint8 (N, S, S, 1)."""
    from pneumo.nets.lite import forward

    return np.asarray(forward(gate.model, x.astype(np.float32))[lungs.LUNG_OUTPUT])[..., 0]


def test_the_gate_has_both_heads_and_is_loaded_once(shared):
    out = shared.gate.model.output
    assert {scope.KIND_OUTPUT, scope.ORIENTATION_OUTPUT, scope.MIRROR_OUTPUT, lungs.LUNG_OUTPUT} <= set(out)
    assert shared.lungs is shared.gate and shared.shared_lungs
    from pneumo.pipeline import load_models

    alone = load_models(shared.path, with_gate=False)  # training's path: the lung head without the gate's role
    assert alone.gate is None and alone.lungs is not None and not alone.shared_lungs


def test_lung_head_shapes_and_input_dependence(keras_gate):
    x = np.stack([scope.gate_input(f, S) for f in _films(3)])  # (3, S, S, 1)
    p = _head(keras_gate, x)
    assert p.shape == (3, S, S) and np.all((p >= 0) & (p <= 1))
    assert np.abs(p[0] - p[1]).max() > 1e-4  # a random head still depends on its input
    assert scope.has_lung_head(keras_gate)


def test_shared_path_gives_the_separate_path_answers(shared):
    """The masks from the gate's pass equal running the lung head on the analysed squashes, and so do P and CAM."""
    from pneumo.pipeline import analyze_images, classify_224

    images = [LoadedImage(f) for f in _films()]
    res = analyze_images(shared, images, force=True)
    x224 = np.stack([r.x224 for r in res])
    assert all(r.warnings == () or "rotated" not in r.warnings for r in res)  # the open gate corrects nothing
    masks, _ = lungs.segment(shared.lungs, x224)  # the lung head run on its own
    np.testing.assert_array_equal(np.stack([r.lung_mask for r in res]), masks)
    ref = classify_224(shared, x224)  # no lung_prob: the lung network runs here
    np.testing.assert_allclose([r.probability for r in res], ref.prob, atol=1e-6)
    np.testing.assert_allclose(np.stack([r.cam224 for r in res]), ref.cam224, atol=1e-5)
    assert any(m.any() for m in masks)  # not trivially empty


def test_shared_path_runs_no_lung_network_of_its_own(shared, tiny_pooled_model_path, monkeypatch):
    from pneumo.pipeline import analyze_images, load_models

    def refuse(*a, **k):
        raise AssertionError("the lung network ran a second time")

    monkeypatch.setattr(lungs, "segment", refuse)
    images = [LoadedImage(f) for f in _films(2)]
    assert len(analyze_images(shared, images, force=True)) == 2  # the gate's pass gave the masks
    three = load_models(tiny_pooled_model_path)  # a separate U-Net (and no gate file beside it): segment runs
    with pytest.raises(AssertionError, match="second time"):
        analyze_images(three, images, force=True)


def test_decide_takes_the_lungs_of_the_film_as_corrected(keras_gate):
    """The lung map belongs to the film the classifier reads: unchanged, flipped back (from the mirror pass the gate
    runs anyway) or turned back (from the pass on the corrected image)."""
    x = np.stack([scope.gate_input(f, S) for f in _films()])  # (4, S, S, 1)
    d = scope.decide(keras_gate, x)  # the open gate: nothing undone
    assert (d.applied == 0).all()
    np.testing.assert_allclose(d.lungs, _head(keras_gate, x), atol=1e-5)

    keras_gate.metadata["thresholds"] = dict(OPEN_GATE, mirror=0.0, mirror_unclear=0.0)  # flip every film
    try:
        d = scope.decide(keras_gate, x)
        assert (d.applied == scope.N_TURNS).all()
        np.testing.assert_allclose(d.lungs, _head(keras_gate, np.ascontiguousarray(x[:, :, ::-1])), atol=1e-5)
        keras_gate.metadata["thresholds"] = dict(OPEN_GATE, orientation=0.0)  # undo whatever turn the head says
        xt = np.stack([scope.apply_orientation(a, o) for a in x for o in range(1, scope.N_TURNS)])  # (28, S, S, 1)
        d = scope.decide(keras_gate, xt)
        turned = np.flatnonzero(d.applied != 0)
        assert turned.size  # a random orientation head says some turn for some film
        fixed = np.stack([scope.undo_orientation(xt[i], int(d.applied[i])) for i in turned])
        np.testing.assert_allclose(d.lungs[turned], _head(keras_gate, fixed), atol=1e-5)
        kept = np.flatnonzero(d.applied == 0)
        np.testing.assert_allclose(d.lungs[kept], _head(keras_gate, xt[kept]), atol=1e-5)
    finally:
        keras_gate.metadata["thresholds"] = dict(OPEN_GATE)


def test_scope_result_carries_the_lung_map(shared):
    r = scope.assess(_films(1)[0], shared.gate)
    assert r.lung_probability is not None and r.lung_probability.shape == (S, S)
    u_net_free = scope.assess(_films(1)[0], None)
    assert u_net_free.lung_probability is None  # rules only: no network, no map
