"""Drawing an explanation (pneumo.explain.draw): heat blended over the radiograph, within a mask, with an outline."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pneumo import config
from pneumo.explain.cam import class_heat
from pneumo.explain.draw import _rgb_lut, heat_css_stops, heat_lut, overlay_heatmap, result_overlay
from tests.conftest import synthetic_xray


def test_overlay_at_original_size():
    img = synthetic_xray(width=301, height=257)
    heat = np.zeros((32, 32), np.float32)
    heat[10:20, 10:20] = 1.0
    out = overlay_heatmap(img, heat, alpha=0.5)
    assert out.shape == (257, 301, 3) and out.dtype == np.uint8
    # alpha 0 shows the plain radiograph; a cold heatmap leaves pixels (almost) untouched
    np.testing.assert_array_equal(overlay_heatmap(img, heat, alpha=0.0), np.repeat(img[:, :, None], 3, axis=2))
    assert np.abs(out[0, 0].astype(int) - int(img[0, 0])).max() <= 1
    # the hot region is coloured: channels differ there
    centre = out[128, 150].astype(int)
    assert centre.max() - centre.min() > 30
    with pytest.raises(ValueError):
        overlay_heatmap(img, heat, alpha=1.5)
    with pytest.raises(ValueError):
        overlay_heatmap(img.astype(np.float32), heat)


def _float_blend(img: np.ndarray, heat: np.ndarray, alpha: float) -> np.ndarray:
    """The reference arithmetic of the overlay: image * (1 - a) + jet(heat) * a with a = alpha * heat."""
    h, w = img.shape
    level = cv2.resize(np.round(heat * 255).astype(np.uint8), (w, h), interpolation=cv2.INTER_LINEAR)
    colour = cv2.applyColorMap(level, cv2.COLORMAP_JET)[:, :, ::-1].astype(np.float64)  # RGB
    a = alpha * level.astype(np.float64)[:, :, None] / 255.0
    return img[:, :, None] * (1 - a) + colour * a


def test_overlay_matches_the_float_blend():
    img = synthetic_xray(width=200, height=150, seed=2)
    yy, xx = np.mgrid[0:32, 0:32]
    heat = np.exp(-((xx - 12) ** 2 + (yy - 20) ** 2) / 60.0).astype(np.float32)
    for alpha in (0.4, 1.0):
        out = overlay_heatmap(img, heat, alpha).astype(np.float64)
        assert np.abs(out - _float_blend(img, heat, alpha)).max() <= 2.0
    rgb = np.dstack([img, img, img])
    np.testing.assert_array_equal(overlay_heatmap(rgb, heat, 0.4), overlay_heatmap(img, heat, 0.4))


def test_overlay_within_mask_and_lung_outline():
    img = synthetic_xray(width=400, height=300, seed=5)
    heat = np.ones((32, 32), np.float32)  # hot everywhere
    lungs = np.zeros((64, 64), np.uint8)  # a mask at another size than the image
    lungs[16:48, 8:28] = 1
    lungs[16:48, 36:56] = 1
    gray = np.repeat(img[:, :, None], 3, axis=2)
    masked = overlay_heatmap(img, heat, 0.5, within=lungs)
    # outside the lungs the radiograph is untouched, inside it is tinted
    np.testing.assert_array_equal(masked[10:50, 10:50], gray[10:50, 10:50])
    inside = masked[150, 100].astype(int)
    assert inside.max() - inside.min() > 30
    # a mask may come as 0/1, 0/255 or bool: the same picture
    for same in (lungs * 255, lungs.astype(bool)):
        np.testing.assert_array_equal(overlay_heatmap(img, heat, 0.5, within=same), masked)
    # a thin outline in the outline colour around both lungs, and nowhere near the image centre
    drawn = overlay_heatmap(img, np.zeros((32, 32), np.float32), 0.5, outline=lungs)
    diff = np.abs(drawn.astype(int) - np.array(config.OUTLINE_COLOUR)).max(axis=2)  # (H, W)
    magenta = diff < 60  # anti-aliased: near the outline colour, which no grey pixel is
    assert 200 < magenta.sum() < 0.05 * magenta.size
    assert magenta[:, :200].any() and magenta[:, 200:].any()
    assert not magenta[140:160, 190:210].any() and not magenta[:50].any()
    with pytest.raises(ValueError):
        overlay_heatmap(img, heat, outline=np.zeros((2, 2, 2)))


def test_overlay_blends_only_where_there_is_heat_with_the_same_result():
    """The blend runs inside the box of non-zero heat; every pixel equals the whole-frame blend's (a reference
    written here), for grey and RGB images, heat at an edge, none at all, and heat everywhere."""

    def whole_frame(image, heat, alpha):
        h, w = image.shape[:2]
        level = cv2.resize(np.round(np.clip(heat, 0, 1) * 255).astype(np.uint8), (w, h), interpolation=cv2.INTER_LINEAR)
        weight = alpha * np.arange(256, dtype=np.float64) / 255.0
        keep = cv2.LUT(level, np.round(255.0 * (1.0 - weight)).astype(np.uint8))
        tint = cv2.applyColorMap(level, np.round(_rgb_lut(cv2.COLORMAP_JET) * weight[:, None, None]).astype(np.uint8))
        rgb = image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
        return cv2.add(cv2.multiply(rgb, cv2.merge([keep, keep, keep]), scale=1.0 / 255.0), tint)

    img = synthetic_xray(width=301, height=257, seed=4)
    heats = [np.zeros((32, 32), np.float32), np.ones((32, 32), np.float32)]
    corner = np.zeros((32, 32), np.float32)
    corner[:5, 27:] = 0.8
    centre = np.zeros((32, 32), np.float32)
    centre[10:20, 8:14] = np.linspace(0.1, 1.0, 6)
    heats += [corner, centre]
    for heat in heats:
        for image in (img, np.dstack([img, 255 - img, img // 2])):
            before = image.copy()
            np.testing.assert_array_equal(overlay_heatmap(image, heat, 0.45), whole_frame(image, heat, 0.45))
            np.testing.assert_array_equal(image, before)  # the caller's image is left alone


# ---- each class has its own colour scale --------------------------------------------------------------------------
def _blend_at_heat_one(target_class: int) -> np.ndarray:
    """A mid-grey image under heat 1 everywhere, in the class's scale: uint8 (16, 16, 3) RGB."""
    grey = np.full((16, 16), 128, np.uint8)
    return overlay_heatmap(grey, np.ones((4, 4), np.float32), 0.45, heat_lut(target_class))


def test_normal_evidence_is_never_red_and_pneumonia_evidence_is():
    normal = _blend_at_heat_one(0).reshape(-1, 3).astype(int)  # (n, 3) RGB
    assert (normal[:, 0] < np.maximum(normal[:, 1], normal[:, 2])).all()  # red never leads where NORMAL heat is strong
    pneu = _blend_at_heat_one(1).reshape(-1, 3).astype(int)
    assert (pneu[:, 0] > pneu[:, 1] + 30).all() and (pneu[:, 0] > pneu[:, 2] + 30).all()  # red at a PNEUMONIA peak
    # the whole NORMAL scale is cool (no red or yellow at any level) and grows brighter with the evidence
    lut = heat_lut(0)[:, 0].astype(int)  # (256, 3)
    assert (lut[:, 0] < np.maximum(lut[:, 1], lut[:, 2])).all()
    assert (lut[:, 0] < 100).all()
    brightness = lut @ np.array([0.299, 0.587, 0.114])  # (256,) luma: dark for no evidence, brightest at a peak
    assert (np.diff(brightness) > -1).all() and brightness[-1] > brightness[0] + 150  # up to rounding
    # and the whole PNEUMONIA scale is warm: red leads at every level, no blue, cyan or green, so a weak PNEUMONIA map
    # never looks like a NORMAL one
    warm = heat_lut(1)[:, 0].astype(int)  # (256, 3)
    assert (warm[:, 0] >= 220).all() and (warm[:, 2] < warm[:, 0] - 100).all() and (warm[:, 1] <= warm[:, 0]).all()
    with pytest.raises(ValueError):
        heat_lut(2)


def test_result_overlay_draws_each_class_in_its_own_scale():
    class R:  # the fields result_overlay reads; no lung mask
        lung_mask = None
        pixels = np.full((64, 64), 128, np.uint8)

    meta = {"cam_scale": {"PNEUMONIA": 1.0, "NORMAL": 1.0}}
    r = R()
    for cls, sign in ((0, -1.0), (1, 1.0)):  # the signed CAM: > 0 supports PNEUMONIA
        r.cam224 = np.full((224, 224), 5.0 * sign, np.float32)  # strong evidence for cls everywhere
        got = result_overlay(r, meta, cls, 0.45, outline=False)
        heat = class_heat(r.cam224, cls, meta)  # (224, 224)
        assert heat.min() > 0.99
        np.testing.assert_array_equal(got, overlay_heatmap(R.pixels, heat, 0.45, heat_lut(cls)))
        red, green, blue = (got[..., k].astype(int) for k in range(3))
        assert ((red > np.maximum(green, blue)) == (cls == 1)).all()  # red only for PNEUMONIA evidence


def test_legend_css_stops_are_the_lut_colours():
    for cls in (0, 1):
        lut = heat_lut(cls)[:, 0]  # (256, 3)
        stops = heat_css_stops(cls).split(", ")
        assert len(stops) == 17
        for stop in stops:
            colour, at = stop.split()
            level = round(float(at.rstrip("%")) / 100 * 255)
            assert colour == "#{:02x}{:02x}{:02x}".format(*(int(x) for x in lut[level]))
        assert stops[0].endswith(" 0.00%") and stops[-1].endswith(" 100.00%")
