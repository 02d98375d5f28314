"""What the committed networks do on the analysis path, end to end: the gate refuses what is not a chest film and
corrects turned or inverted films, and the map the app draws is the reference Grad-CAM of the classifier's input.

These run the real TFLite copies (the app's path) and, for the reference, the .keras files on TensorFlow.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pneumo.checks import lungs
from pneumo.io import LoadedImage, load_image, preprocess
from pneumo.pipeline import analyze_images, classifier_inputs, load_models
from tests.conftest import ROOT

SAMPLE = ROOT / "assets" / "samples" / "pneumonia_person1619_bacteria_4261.jpeg"


@pytest.fixture(scope="module")
def models():
    return load_models()


def not_films() -> dict[str, np.ndarray]:
    """Pictures that are no radiograph at all: uint8 (600, 500) each."""
    yy, xx = np.mgrid[0:600, 0:500]
    text = np.full((600, 500), 255, np.uint8)
    for i in range(12):
        cv2.putText(text, "Lorem ipsum dolor sit", (10, 40 + 45 * i), cv2.FONT_HERSHEY_SIMPLEX, 1.0, 0, 2)
    return {
        "gradient": (xx * 255 / 500).astype(np.uint8),
        "noise": np.random.default_rng(0).integers(0, 256, (600, 500)).astype(np.uint8),
        "text": text,
        "checkerboard": (np.indices((600, 500)).sum(0) // 50 % 2 * 255).astype(np.uint8),
    }


def test_the_gate_refuses_pictures_that_are_no_radiograph(models):
    pictures = not_films()
    results = analyze_images(models, [LoadedImage(p) for p in pictures.values()])
    for name, res in zip(pictures, results, strict=True):
        assert not res.in_scope and res.label == "OUT_OF_SCOPE" and res.probability is None, name
        assert "not_radiograph" in res.warnings, (name, res.warnings)


def test_the_gate_keeps_a_child_film_and_undoes_turns_and_inversion(models):
    film = load_image(SAMPLE).pixels
    variants = {"upright": film, "rot90": np.ascontiguousarray(np.rot90(film)), "inverted": 255 - film}
    results = analyze_images(models, [LoadedImage(v) for v in variants.values()])
    assert [r.in_scope for r in results] == [True, True, True]
    # the upright film is kept as it is: the gate gives it P(mirrored) 0.61, in the warning band (a remark, no flip)
    assert set(results[0].warnings) <= {"possibly_mirrored"}
    assert "rotated" in results[1].warnings and "inverted" in results[2].warnings
    for r in results[1:]:  # the classifier saw the corrected film: the same answer
        assert r.probability == pytest.approx(results[0].probability, abs=1e-3)


@pytest.mark.slow
def test_the_drawn_map_is_the_reference_gradcam_of_what_the_classifier_saw(models):
    """The app's cam224 (TFLite CAM pasted back over the 224 squash) against the reference map TensorFlow computes on
    the same classifier input (pneumo.training.gradcam: Grad-CAM for a global-average head, the exact logit
    decomposition for a lung-pooled one): same sign, same place (a flipped or shifted map fails)."""
    from pneumo.training.gradcam import explain_batch
    from pneumo.training.networks import load_keras_network

    film = load_image(SAMPLE).pixels
    res = analyze_images(models, [LoadedImage(film)])[0]
    x224 = preprocess(film, 224)[..., 0][None]  # (1, 224, 224)
    x, masks = classifier_inputs(models, x224)  # (1, S, S, C), (1, 224, 224)
    keras_net = load_keras_network(models.classifier.path)
    pooled = models.classifier.channels == 2
    method = "auto" if pooled else "gradcam"  # Grad-CAM equals the CAM only for a global-average head
    p_ref, cam_ref = explain_batch(keras_net.model, x, keras_net.gradcam_layer, method=method)  # (1,), (1, h, w)
    ref224 = lungs.paste_back(cam_ref[0], masks[0], inside_only=pooled)  # (224, 224)
    assert res.probability == pytest.approx(float(p_ref[0]), abs=1e-4)
    inside = masks[0] if masks is not None else np.ones((224, 224), bool)
    a, b = res.cam224[lungs.dilate(inside)], ref224[lungs.dilate(inside)]
    assert np.corrcoef(a, b)[0, 1] > 0.99
    np.testing.assert_allclose(a, b, atol=1e-3 * max(1.0, float(np.abs(b).max())))
