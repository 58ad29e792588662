"""Comparing blur kernels: centre of mass, centring, MSE and kernel PSNR.

Estimated and true kernels differ in size and may be offset by whole pixels (a shift of the kernel only
shifts the image). :func:`kernel_error` therefore zero-pads both to a common odd size and moves each
one's centre of mass to the central pixel (a whole-pixel roll) before comparing them. The squared error is
summed over the taps and divided by the taps of a fixed ``REF_SIZE``² grid, so that zero padding does not
change it (the mean over the padded grid would fall as the grid grows).
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["REF_SIZE", "center_of_mass", "pad_to", "center_kernel", "kernel_mse", "kernel_psnr", "kernel_error"]

#: the MSE is per tap of a REF_SIZE x REF_SIZE kernel (MZSR's and the estimators' size)
REF_SIZE = 15


def center_of_mass(k: np.ndarray) -> tuple[float, float]:
    """(row, column) of the centre of mass of a non-negative-sum kernel."""
    k = np.asarray(k, dtype=np.float64)
    total = k.sum()
    rows, cols = np.indices(k.shape)
    return float((rows * k).sum() / total), float((cols * k).sum() / total)


def pad_to(k: np.ndarray, size: int) -> np.ndarray:
    """Zero-pad (or centre-crop) a kernel to ``size``×``size``, keeping its central pixel central (to half a
    pixel when the parities differ)."""
    k = np.asarray(k, dtype=np.float64)
    out = np.zeros((size, size))
    dh, dw = (size - k.shape[0]) // 2, (size - k.shape[1]) // 2
    src = k[max(0, -dh): k.shape[0] - max(0, -dh), max(0, -dw): k.shape[1] - max(0, -dw)]
    out[max(0, dh): max(0, dh) + src.shape[0], max(0, dw): max(0, dw) + src.shape[1]] = src
    return out


def center_kernel(k: np.ndarray) -> np.ndarray:
    """Roll the kernel by whole pixels so that its centre of mass is nearest the central pixel."""
    k = np.asarray(k, dtype=np.float64)
    r, c = center_of_mass(k)
    return np.roll(k, (int(round((k.shape[0] - 1) / 2 - r)), int(round((k.shape[1] - 1) / 2 - c))), axis=(0, 1))


def _common(est: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    size = max(max(est.shape), max(true.shape))
    size += 1 - size % 2
    a = center_kernel(pad_to(est / est.sum(), size))
    b = center_kernel(pad_to(true / true.sum(), size))
    return a, b


def kernel_mse(est: np.ndarray, true: np.ndarray) -> float:
    """Squared difference of two kernels (each normalised to sum 1, centred on a common grid), summed and
    divided by ``REF_SIZE``²."""
    a, b = _common(np.asarray(est, np.float64), np.asarray(true, np.float64))
    return float(np.sum((a - b) ** 2)) / REF_SIZE ** 2


def kernel_psnr(est: np.ndarray, true: np.ndarray) -> float:
    """``10·log10(max(true)² / kernel_mse)`` (dB; higher is better; 100 when equal)."""
    mse = kernel_mse(est, true)
    peak = float(np.max(np.asarray(true, np.float64) / np.sum(true)))
    return 100.0 if mse == 0 else 10.0 * math.log10(peak ** 2 / mse)


def kernel_error(est: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """Both measures in one dict: ``{'mse': ..., 'psnr': ...}``."""
    return {"mse": kernel_mse(est, true), "psnr": kernel_psnr(est, true)}
