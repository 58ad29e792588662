"""Image-quality metrics in the conventions SR papers report.

``psnr`` follows the official MZSR code exactly (SPEC §6): both images are quantised to
uint8, converted to the MATLAB ``rgb2ycbcr`` luma and rounded to uint8, ``crop_border``
pixels are shaved from every side, and the MSE is taken in float32. ``ssim`` uses the
MATLAB/BasicSR convention (11x11 Gaussian window, sigma 1.5, 'valid' filtering, data range
255) on the same luma.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["to_uint8", "rgb2y", "psnr", "ssim"]


def to_uint8(img: np.ndarray | torch.Tensor) -> np.ndarray:
    """HxW[xC] image as uint8: floats are taken as [0, 1], clipped, scaled and rounded.

    A tensor may be CHW or 1xCxHxW; it is returned as HxWxC.
    """
    if isinstance(img, torch.Tensor):
        t = img.detach().to("cpu", torch.float64)
        if t.ndim == 4:
            if t.shape[0] != 1:
                raise ValueError(f"metrics take one image; got a batch of {t.shape[0]}: index it first")
            t = t[0]
        if t.ndim == 3:
            t = t.permute(1, 2, 0)
        img = t.numpy()
    a = np.asarray(img)
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.bool_ or not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise TypeError(f"image dtype {a.dtype} is not supported: pass uint8, or floats in [0, 1]")
    if np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"integer image of dtype {a.dtype}: convert to uint8, or to floats in [0, 1]")
    return np.round(np.clip(a.astype(np.float64) * 255.0, 0, 255)).astype(np.uint8)


def rgb2y(img: np.ndarray) -> np.ndarray:
    """MATLAB ``rgb2ycbcr`` luma of a uint8 RGB image, rounded to uint8 (half to even)."""
    a = np.asarray(img)
    if a.dtype != np.uint8:
        raise TypeError(f"rgb2y expects uint8 RGB, got {a.dtype}; use to_uint8() first")
    if a.ndim != 3 or a.shape[2] < 3:
        raise ValueError(f"rgb2y expects HxWx3 RGB, got shape {a.shape}")
    rgb = a[..., :3].astype(np.float64)
    y = (65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2]) / 255.0 + 16.0
    return np.round(y).astype(np.uint8)


def _prepare(sr, gt, crop_border: int, test_y_channel: bool) -> tuple[np.ndarray, np.ndarray]:
    a, b = to_uint8(sr), to_uint8(gt)
    if a.shape != b.shape:
        raise ValueError(
            f"SR shape {a.shape} differs from GT shape {b.shape}; modcrop the GT to a multiple of the scale "
            "(metasr_adapter.ops.imageio.modcrop) or crop the SR to the GT size"
        )
    if crop_border < 0:
        raise ValueError(f"crop_border={crop_border} must be >= 0")
    if test_y_channel and a.ndim == 3 and a.shape[2] >= 3:
        a, b = rgb2y(a), rgb2y(b)
    elif a.ndim == 3 and a.shape[2] == 1:
        a, b = a[..., 0], b[..., 0]
    if crop_border:
        if min(a.shape[:2]) <= 2 * crop_border:
            raise ValueError(f"image of size {a.shape[:2]} is too small for crop_border={crop_border}")
        a = a[crop_border:-crop_border, crop_border:-crop_border]
        b = b[crop_border:-crop_border, crop_border:-crop_border]
    return a, b


def psnr(sr, gt, crop_border: int = 0, test_y_channel: bool = True) -> float:
    """PSNR in dB between two images (uint8, or floats in [0, 1]); 100.0 for identical images.

    With ``test_y_channel`` RGB images are compared on MATLAB luma (SPEC §6); grayscale
    images are compared as they are.
    """
    a, b = _prepare(sr, gt, crop_border, test_y_channel)
    diff = a.astype(np.float32) - b.astype(np.float32)
    mse = float(np.mean(diff * diff, dtype=np.float32))
    if mse == 0:
        return 100.0
    return 20.0 * math.log10(255.0 / math.sqrt(mse))


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    ax = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(ax**2) / (2 * sigma**2))
    g = g / g.sum()
    return torch.outer(g, g)


def ssim(sr, gt, crop_border: int = 0, test_y_channel: bool = True) -> float:
    """Structural similarity (Wang et al. 2004, MATLAB convention) averaged over channels."""
    a, b = _prepare(sr, gt, crop_border, test_y_channel)
    x = torch.from_numpy(a.astype(np.float64))
    y = torch.from_numpy(b.astype(np.float64))
    if x.ndim == 2:
        x, y = x[None], y[None]
    else:
        x, y = x.permute(2, 0, 1), y.permute(2, 0, 1)
    if min(x.shape[-2:]) < 11:
        raise ValueError(f"SSIM needs images of at least 11x11 after cropping, got {tuple(x.shape[-2:])}")
    x, y = x[:, None], y[:, None]  # channels as batch
    w = _gaussian_window()[None, None]
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_x, mu_y = F.conv2d(x, w), F.conv2d(y, w)
    sxx = F.conv2d(x * x, w) - mu_x**2
    syy = F.conv2d(y * y, w) - mu_y**2
    sxy = F.conv2d(x * y, w) - mu_x * mu_y
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    return float(s.mean())
