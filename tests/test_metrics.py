"""PSNR/SSIM: hand-computed cases, an independent SSIM, and the SPEC §0 bicubic baselines."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from metasr_adapter.ops.metrics import psnr, rgb2y, ssim, to_uint8


def test_psnr_identical_is_100(photo):
    assert psnr(photo, photo, crop_border=2) == 100.0


def test_psnr_hand_computed_gray_offset():
    # gray RGB v -> Y = 219/255 v + 16: v=100 -> 101.88 -> 102, v=110 -> 110.47 -> 110; diff 8
    a = np.full((10, 10, 3), 100, np.uint8)
    b = np.full((10, 10, 3), 110, np.uint8)
    assert psnr(b, a) == pytest.approx(20 * math.log10(255 / 8), abs=1e-9)
    # on RGB the difference is 10 everywhere
    assert psnr(b, a, test_y_channel=False) == pytest.approx(20 * math.log10(255 / 10), abs=1e-9)


def test_psnr_float_inputs_are_quantised_like_uint8(rng):
    gt = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    sr = rng.random((16, 16, 3))
    assert psnr(sr, gt) == psnr(to_uint8(sr), gt)
    # values outside [0, 1] are clipped before rounding
    assert np.array_equal(to_uint8(np.array([[-0.2, 1.7, 0.5]])), np.array([[0, 255, 128]], np.uint8))


def test_crop_border_ignores_the_border(rng):
    gt = rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)
    sr = gt.copy()
    sr[:2] = 0
    sr[:, -2:] = 255
    assert psnr(sr, gt, crop_border=2) == 100.0
    assert psnr(sr, gt, crop_border=1) < 100.0


def test_rgb2y_matches_formula_and_rounds_half_to_even(rng):
    img = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    y = (65.481 * img[..., 0] + 128.553 * img[..., 1] + 24.966 * img[..., 2]) / 255 + 16
    assert np.array_equal(rgb2y(img), np.round(y).astype(np.uint8))
    assert rgb2y(np.zeros((1, 1, 3), np.uint8))[0, 0] == 16
    assert rgb2y(np.full((1, 1, 3), 255, np.uint8))[0, 0] == 235


def test_tensor_inputs(photo):
    t = torch.from_numpy(photo).permute(2, 0, 1)[None].float() / 255
    assert psnr(t, photo) == 100.0
    with pytest.raises(ValueError, match="batch"):
        psnr(torch.zeros(2, 3, 8, 8), torch.zeros(2, 3, 8, 8))


def test_shape_mismatch_and_bad_dtype_are_explained():
    with pytest.raises(ValueError, match="modcrop"):
        psnr(np.zeros((10, 10, 3), np.uint8), np.zeros((12, 10, 3), np.uint8))
    with pytest.raises(TypeError, match="uint8"):
        psnr(np.zeros((4, 4, 3), np.int32), np.zeros((4, 4, 3), np.int32))
    with pytest.raises(ValueError, match="too small"):
        psnr(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4, 3), np.uint8), crop_border=2)


def _ssim_reference(a: np.ndarray, b: np.ndarray) -> float:
    """Straightforward SSIM: explicit 11x11 windows, Gaussian sigma 1.5, 'valid' positions."""
    ax = np.arange(11) - 5
    g = np.exp(-(ax**2) / (2 * 1.5**2))
    w = np.outer(g, g)
    w /= w.sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    a, b = a.astype(np.float64), b.astype(np.float64)
    vals = []
    for i in range(a.shape[0] - 10):
        for j in range(a.shape[1] - 10):
            pa, pb = a[i : i + 11, j : j + 11], b[i : i + 11, j : j + 11]
            ma, mb = (w * pa).sum(), (w * pb).sum()
            va, vb = (w * pa * pa).sum() - ma**2, (w * pb * pb).sum() - mb**2
            cov = (w * pa * pb).sum() - ma * mb
            vals.append(((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
    return float(np.mean(vals))


def test_ssim_matches_an_independent_implementation(rng):
    a = rng.integers(0, 256, (24, 20, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-20, 21, a.shape), 0, 255).astype(np.uint8)
    expected = _ssim_reference(rgb2y(a), rgb2y(b))
    assert ssim(a, b) == pytest.approx(expected, abs=1e-10)
    assert ssim(a, a) == pytest.approx(1.0)
    assert ssim(a, b) < 1.0


@pytest.mark.shared
def test_bicubic_baselines_match_official_numbers():
    """SPEC §0: bicubic interpolation of MZSR's g2.0 Set5 inputs, Y-PSNR shave 2."""
    from conftest import shared_path

    from metasr_adapter.ops.degrade import imresize
    from metasr_adapter.ops.imageio import modcrop, read_image, to_tensor

    expected = {"baby": 32.0030, "bird": 30.2477, "butterfly": 22.6653, "head": 31.9076, "woman": 26.8247}
    for name, value in expected.items():
        lr = read_image(shared_path("data", "mzsr_g20", "Set5", f"{name}.png"))
        gt = modcrop(read_image(shared_path("data", "set5", f"{name}.png")), 2)
        x, _, _ = to_tensor(lr)
        sr = imresize(x, 2, output_shape=gt.shape[:2]).clamp(0, 1)
        assert psnr(sr, gt, crop_border=2) == pytest.approx(value, abs=6e-5), name
