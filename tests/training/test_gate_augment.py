"""The gate trainer's sampling: every sample gets one of the 16 transforms (turns x inverted x mirrored) and it is its
label, the mirror head's loss falls on in-scope samples that are neither turned nor inverted, the training wrapper
compares a film with its mirror image, and synthetic devices are drawn without changing the kind label. Tiny synthetic
arrays only."""

from __future__ import annotations

import dataclasses

import numpy as np

from pneumo.checks import scope
from pneumo.training.augment import add_devices
from pneumo.training.train_scope import MIRRORED, Settings, epoch_arrays

S = 24


def _still(**kw) -> Settings:
    """Settings whose geometric and intensity augmentation does nothing, so that samples can be traced exactly."""
    base = Settings(image_size=S, rotate_deg=0.0, zoom=(1.0, 1.0), shift=0.0, gamma=(1.0, 1.0), noise=0.0)
    fixed = dict(n_in_scope=400, n_adult=40, n_not_frontal=0, n_not_chest=0, n_not_radiograph=40, p_devices=0.0)
    fixed["n_mirror"] = 0
    return dataclasses.replace(base, p_degrade=0.0, **{**fixed, **kw})


def _asymmetric(seed: int) -> np.ndarray:
    """uint8 (S, S) with no symmetry: each of the 16 transforms gives a different picture."""
    return np.random.default_rng(seed).integers(0, 200, (S, S), dtype=np.uint8)


def test_epoch_labels_are_the_applied_transform_mirrored_ones_included():
    src = _asymmetric(0)
    pools = {k: [] for k in scope.KINDS}
    pools["in_scope"].append(src[None])  # one in-scope image (1, S, S)
    pools["adult"].append(_asymmetric(1)[None])
    pools["not_radiograph"].append(_asymmetric(2)[None])
    x, kinds, orients, weights, _ = epoch_arrays(pools, _still(), np.random.default_rng(0))
    w, wm = weights[scope.ORIENTATION_OUTPUT], weights[MIRRORED]
    assert x.shape == (480, S, S, 1) and x.dtype == np.uint8
    inside = kinds == 0
    assert set(orients[inside]) == set(range(16))  # every transform, the 8 mirrored ones too
    assert 0.3 < (orients[inside] % 8 == 0).mean() < 0.5  # p_identity neither turned nor inverted
    assert 0.4 < (orients[inside] >= 8).mean() < 0.6  # p_mirrored: half mirrored
    for xi, o in zip(x[inside], orients[inside], strict=True):
        np.testing.assert_array_equal(xi[..., 0], scope.apply_orientation(src, int(o)))
    assert set(orients[~inside]) == set(range(16))  # out-of-scope kinds turned and mirrored too
    np.testing.assert_array_equal(w, inside.astype(np.float32))  # orientation loss on in-scope images only
    np.testing.assert_array_equal(wm, (inside & (orients % 8 == 0)).astype(np.float32))  # mirror: upright frame
    assert {0, 8} == set(orients[wm > 0])  # both upright and mirrored films teach the mirror head
    np.testing.assert_array_equal(weights[scope.KIND_OUTPUT], 1.0)


def test_extra_mirror_samples_teach_the_mirror_head_only():
    pools = {k: [] for k in scope.KINDS}
    pools["in_scope"].append(_asymmetric(0)[None])
    pools["adult"].append(_asymmetric(1)[None])
    x, kinds, orients, w, _ = epoch_arrays(pools, _still(n_mirror=300), np.random.default_rng(2))
    assert len(x) == 400 + 40 + 300 and (kinds == 0).sum() == 700
    extra = w[scope.KIND_OUTPUT] == 0  # the extra samples: no kind loss...
    assert extra.sum() == 300 and (kinds[extra] == 0).all()
    assert (w[scope.ORIENTATION_OUTPUT][extra] == 0).all() and (w[MIRRORED][extra] == 1).all()  # ...mirror loss only
    assert set(orients[extra]) == {0, 8} and 0.4 < (orients[extra] == 8).mean() < 0.6


def test_training_wrapper_compares_a_film_with_its_mirror_image():
    """P(mirrored) of the wrapper is sigmoid(h(x) - h(flipped x)): a film and its mirror image sum to 1, and it
    equals what scope._forward computes from the saved gate's mirror output at inference."""
    import keras

    from pneumo.training.networks import keras_network
    from pneumo.training.train_scope import build_gate, training_wrapper

    keras.utils.set_random_seed(0)
    gate = build_gate(Settings(image_size=S, stem_width=4, widths=(8, 8), lung_widths=(8, 4)))
    wrapper = training_wrapper(gate)
    x = np.stack([_asymmetric(3), _asymmetric(4)])[..., None].astype(np.float32)  # (2, S, S, 1)
    p = np.asarray(wrapper(x, training=False)[MIRRORED])  # (2,)
    p_flipped = np.asarray(wrapper(x[:, :, ::-1], training=False)[MIRRORED])
    np.testing.assert_allclose(p + p_flipped, 1.0, atol=1e-5)
    assert np.abs(p - 0.5).max() > 1e-4  # not trivially 0.5
    net = keras_network(gate, {"input_size": S, "thresholds": {}})
    _, _, pm, _, _ = scope._forward(net, x.astype(np.uint8))
    np.testing.assert_allclose(pm, p, atol=1e-4)


def test_add_devices_draws_bright_lines_or_discs():
    rng = np.random.default_rng(3)
    img = np.full((96, 96), 60, np.uint8)
    for _ in range(20):
        out = add_devices(img, rng)
        assert out.shape == img.shape and out.dtype == np.uint8
        bright = out > 150
        assert 3 <= bright.sum() < 0.3 * bright.size  # something thin was drawn, not a flood
        assert (out[~bright] <= 160).all()  # the rest is untouched or anti-aliased edge
    np.testing.assert_array_equal(img, 60)  # the input is not changed in place


def test_devices_keep_the_kind_label():
    """With devices on every sample, each sample's kind label is still its source's kind."""
    pools = {k: [] for k in scope.KINDS}
    levels = {"in_scope": 20, "adult": 60, "not_radiograph": 100}  # a flat image per kind, told apart by its level
    for kind, v in levels.items():
        pools[kind].append(np.full((1, S, S), v, np.uint8))
    x, kinds, orients, _, _ = epoch_arrays(pools, _still(p_devices=1.0), np.random.default_rng(1))
    for xi, k, o in zip(x[..., 0], kinds, orients, strict=True):
        up = scope.undo_orientation(xi, int(o))  # (S, S) as drawn, before the orientation transform
        assert np.bincount(up.ravel()).argmax() == levels[scope.KINDS[k]]  # the source picture, with its own kind
        assert up.max() >= 150  # and a device was drawn on it


def test_lung_masks_move_with_their_films_and_teach_only_upright_children():
    """Each in-scope sample's lung mask gets the sample's geometry (augmentation, mirror, turn; never the grey-level
    inversion); the lung head's loss falls on in-scope samples with a mask that are neither turned nor inverted."""
    from pneumo.training.train_scope import LUNG

    img = _asymmetric(7)
    mask = np.zeros((S, S), np.float32)
    mask[4:20, 3:9] = 1.0  # one asymmetric blob: every transform moves it somewhere else
    pools = {k: [] for k in scope.KINDS}
    masks = {k: [] for k in scope.KINDS}
    pools["in_scope"] += [img[None], _asymmetric(8)[None]]
    masks["in_scope"] += [mask[None], None]  # the second source has no mask
    pools["adult"].append(_asymmetric(9)[None])
    masks["adult"].append(None)
    x, kinds, orients, w, y = epoch_arrays(
        pools, _still(n_mirror=100, p_grey_outside=0.0), np.random.default_rng(4), masks
    )
    assert y.shape == (len(x), S, S, 1)
    lung_w = w[LUNG]
    for xi, k, o, wi, yi in zip(x[..., 0], kinds, orients, lung_w, y[..., 0], strict=True):
        from_masked = np.array_equal(scope.undo_orientation(xi, int(o)), img)
        if wi:  # taught: an in-scope film from the masked source, upright or mirrored only
            assert k == 0 and o % scope.N_TURNS == 0 and from_masked
        if k == 0 and from_masked:
            geometry = int(o) - 4 * ((int(o) // 4) % 2)  # the same turn and mirror, no inversion
            np.testing.assert_array_equal(scope.undo_orientation(yi, geometry), mask)
        else:
            assert not yi.any() and not wi  # no mask, no lung loss
    assert lung_w.sum() >= 50  # the extra upright samples teach the lung head too
    assert set(orients[lung_w > 0]) == {0, 8}


def test_gate_augment_moves_a_mask_with_the_image():
    """One random affine for both: a bright square and the mask drawn on it stay together; the mask keeps [0, 1]."""
    from pneumo.training.augment import gate_augment

    img = np.full((S, S), 20, np.uint8)
    img[5:11, 14:20] = 230
    mask = (img > 100).astype(np.float32)
    s = dataclasses.replace(Settings(image_size=S), rotate_deg=30.0, shift=0.15, zoom=(0.8, 1.2), gamma=(1.0, 1.0),
                            noise=0.0, p_degrade=0.0)  # fmt: skip
    rng = np.random.default_rng(0)
    moved = 0
    for _ in range(10):
        out, m = gate_augment(img, rng, s, mask)
        assert m.dtype == np.float32 and 0.0 <= m.min() and m.max() <= 1.0
        ys, xs = np.nonzero(out > 125)
        my, mx = np.nonzero(m > 0.5)
        assert abs(ys.mean() - my.mean()) < 1.0 and abs(xs.mean() - mx.mean()) < 1.0
        moved += abs(my.mean() - 7.5) + abs(mx.mean() - 16.5) > 1.0
    assert moved >= 5  # the affine did move them


def test_grey_outside_lungs_keeps_the_lungs_and_one_grey_elsewhere():
    from pneumo.training.train_scope import grey_outside_lungs

    img = _asymmetric(11)
    lung = np.zeros((S, S), np.float32)
    lung[6:18, 4:10] = 1.0
    for seed in range(5):
        out = grey_outside_lungs(img, lung, np.random.default_rng(seed))
        inside = lung > 0.5
        np.testing.assert_array_equal(out[inside], img[inside])  # the lungs untouched
        changed = out != img
        assert changed.sum() > 0.5 * (~inside).sum()  # most of the rest greyed...
        levels = np.unique(out[changed])
        assert len(levels) == 1  # ...with one grey
        lo, hi = sorted((img[inside].mean(), img.mean()))
        assert lo - 0.5 <= levels[0] <= hi + 0.5
    np.testing.assert_array_equal(grey_outside_lungs(img, np.zeros_like(lung), np.random.default_rng(0)), img)


def test_only_extra_samples_are_greyed_outside_their_lungs():
    """With p_grey_outside 1, every extra (mirror and lung only) sample of a masked film is greyed outside its lungs,
    and no sample that teaches the kind head is: the kind head never learns that greyed films are in scope."""
    img = _asymmetric(12)
    mask = np.zeros((S, S), np.float32)
    mask[4:20, 3:12] = 1.0
    pools = {k: [] for k in scope.KINDS}
    masks = {k: [] for k in scope.KINDS}
    pools["in_scope"].append(img[None])
    masks["in_scope"].append(mask[None])
    settings = _still(n_mirror=40, p_grey_outside=1.0)
    x, kinds, orients, w, _ = epoch_arrays(pools, settings, np.random.default_rng(5), masks)
    upright = [scope.undo_orientation(xi, int(o)) for xi, o in zip(x[..., 0], orients, strict=True)]
    greyed = np.array([not np.array_equal(u, img) for u in upright])
    extra = w[scope.KIND_OUTPUT] == 0
    assert greyed[extra].all() and not greyed[~extra].any()
