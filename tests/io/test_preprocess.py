"""The one preprocessing step: shape, dtype, range, and that a full-resolution image and its 224 px squashed copy give
nearly the same model input (the data set's training copies were squashed from the originals with area filtering)."""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from pneumo import config
from pneumo.io.decode import load_image
from pneumo.io.preprocess import preprocess
from tests.conftest import synthetic_xray

SAMPLES = sorted((config.ASSETS_DIR / "samples").glob("*.jpeg"))


@pytest.mark.parametrize(("h", "w"), [(224, 224), (770, 1024), (100, 60), (32, 500), (4000, 300)])
def test_shape_dtype_range(h, w):
    rng = np.random.default_rng(h * w)
    pixels = rng.integers(0, 256, (h, w), dtype=np.uint8)
    pixels[0, 0], pixels[-1, -1] = 0, 255
    for size in (224, 32):
        x = preprocess(pixels, size)
        assert x.shape == (size, size, 1) and x.dtype == np.uint8 and x.flags.c_contiguous
        assert x.min() >= 0 and x.max() <= 255


def test_identity_at_model_size_and_constant_image():
    img = synthetic_xray(224, 224)
    assert np.array_equal(preprocess(img, 224)[:, :, 0], img)
    assert np.all(preprocess(np.full((500, 400), 77, np.uint8), 224) == 77)


def test_rejects_wrong_input():
    with pytest.raises(ValueError, match="grayscale"):
        preprocess(np.zeros((300, 300, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        preprocess(np.zeros((300, 300), np.float32))


def test_squashes_without_keeping_aspect_ratio():
    """A wide image fills the whole square (as the training copies do), it is not letterboxed."""
    img = np.zeros((200, 800), np.uint8)
    img[:, 400:] = 255  # right half white
    x = preprocess(img, 224)[:, :, 0]
    assert x[:, :100].max() == 0 and x[:, 124:].min() == 255  # the edge sits in the middle column, every row


def _mean_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(np.abs(a.astype(np.float64) - b.astype(np.float64))))


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: Path(p).name)
def test_full_resolution_and_squashed_copy_give_same_input(path):
    full = load_image(path).pixels  # (H, W) uint8, ~1024 px wide
    x_full = preprocess(full, 224)
    copies = {
        "cv2 INTER_AREA": cv2.resize(full, (224, 224), interpolation=cv2.INTER_AREA),
        "PIL BOX": np.asarray(Image.fromarray(full).resize((224, 224), Image.Resampling.BOX)),
    }
    buf = io.BytesIO()  # the data set ships its copies as JPEG: squash, save, reload
    Image.fromarray(copies["PIL BOX"]).save(buf, format="JPEG", quality=90)
    copies["PIL BOX + JPEG q90"] = load_image(buf.getvalue()).pixels
    limits = {"cv2 INTER_AREA": 0.5, "PIL BOX": 0.5, "PIL BOX + JPEG q90": 2.0}  # measured: 0, <=0.41, <=1.35
    for how, copy in copies.items():
        assert copy.shape == (224, 224)
        assert _mean_abs(preprocess(copy, 224), x_full) < limits[how], how
    # The comparison can fail: point sampling (no area filter) gives a clearly different input.
    nearest = cv2.resize(full, (224, 224), interpolation=cv2.INTER_NEAREST)
    assert _mean_abs(preprocess(nearest, 224), x_full) > 5 * _mean_abs(preprocess(copies["PIL BOX"], 224), x_full)
