"""Input checks and patch selection shared by the kernel estimators.

Both estimators model the LR image as ``(HR ∗ k)`` followed by direct x2 subsampling, and both read
the kernel from the image's texture: an image that is too small or too flat carries too little of
it, and is refused with a message naming the value and the fix.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..ops.imageio import to_tensor

__all__ = ["SUPPORTED_SCALES", "MIN_SIDE", "MIN_GRADIENT_RMS", "check_scale", "prepare_image",
           "gradient_energy", "texture_map", "textured_crops", "window_texture"]

#: SR factors the estimators handle (both model blur + direct x2 subsampling)
SUPPORTED_SCALES = (2,)
#: smallest LR side (pixels) an estimate is attempted on
MIN_SIDE = 32
#: RMS of the luma gradient (intensities in [0, 1]) below which an image counts as flat: ~1 grey level of
#: 255 per pixel, i.e. no edges or texture from which a blur could be read
MIN_GRADIENT_RMS = 4e-3


def check_scale(scale: float) -> int:
    """The SR factor as an int, or ValueError naming the value and the fix."""
    ok = isinstance(scale, (int, float, np.integer, np.floating)) and not isinstance(scale, bool)
    if not ok or float(scale) not in SUPPORTED_SCALES:
        raise ValueError(
            f"scale={scale!r} is not supported for kernel estimation: the estimators model blur + direct x2 "
            f"subsampling and support scale=2 only; estimate at scale 2 (and pass that kernel to your x2 model), "
            "or give the kernel explicitly (kernel='K.mat')")
    return int(scale)


def _luma(x: torch.Tensor) -> torch.Tensor:
    """1x1xHxW luma (BT.601 weights) of a 1xCxHxW image in [0, 1]."""
    if x.shape[1] >= 3:
        w = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x[:, :3] * w).sum(1, keepdim=True)
    return x[:, :1]


def texture_map(x: torch.Tensor) -> torch.Tensor:
    """Squared luma gradient magnitude (1x1x(H-1)x(W-1)) by forward differences."""
    y = _luma(x)
    gx = y[..., :-1, 1:] - y[..., :-1, :-1]
    gy = y[..., 1:, :-1] - y[..., :-1, :-1]
    return gx * gx + gy * gy


def window_texture(x: torch.Tensor, size: int) -> torch.Tensor:
    """The mean :func:`texture_map` of every ``size``² window of a 1xCxHxW image, stride 1: an (H-size+1)x(W-size+1)
    map whose element (i, j) belongs to the window with top-left corner (i, j) (the texture map, one pixel short on
    each side, is zero-padded at the bottom and right).

    The same values as ``F.avg_pool2d(texture map, size, stride=1)``, from a float64 summed-area table: linear in
    the image size, where the pooling costs ``size``² per pixel (about 2 s for a 1024x680 photo and 96² windows).
    """
    energy = F.pad(texture_map(x), (0, 1, 0, 1))[0, 0].double()
    h, w = energy.shape
    if not 1 <= size <= min(h, w):
        raise ValueError(f"window size {size} does not fit the {h}x{w} image")
    table = F.pad(energy.cumsum(0).cumsum(1), (1, 0, 1, 0))  # table[i, j] = energy[:i, :j].sum()
    sums = table[size:, size:] - table[:-size, size:] - table[size:, :-size] + table[:-size, :-size]
    return (sums / (size * size)).clamp_min(0).to(x.dtype)  # round-off can leave a flat window at -1e-20


def gradient_energy(x: torch.Tensor) -> float:
    """RMS luma gradient magnitude of a 1xCxHxW image in [0, 1]."""
    return float(texture_map(x).mean().sqrt())


def prepare_image(lr_img: np.ndarray | torch.Tensor, *, min_side: int = MIN_SIDE,
                  min_gradient_rms: float = MIN_GRADIENT_RMS) -> torch.Tensor:
    """The LR image as a 1x3xHxW float64 CPU tensor in [0, 1] (grey repeated, alpha dropped), checked.

    ValueError when it is smaller than ``min_side`` on a side or flatter than ``min_gradient_rms``.
    """
    x, _, _ = to_tensor(lr_img, channels=3, dtype=torch.float64, device="cpu")
    h, w = x.shape[-2:]
    if min(h, w) < min_side:
        raise ValueError(
            f"LR image of {h}x{w} pixels is too small to estimate its blur kernel: it needs at least "
            f"{min_side}x{min_side} pixels (128x128 or more gives a reliable estimate); use a larger image or "
            "crop, or give the kernel explicitly (kernel='K.mat')")
    rms = gradient_energy(x)
    if not rms >= min_gradient_rms:
        raise ValueError(
            f"LR image is too flat to estimate its blur kernel: its RMS gradient is {rms:.2e} (needs >= "
            f"{min_gradient_rms:.0e} on [0, 1] intensities); a blur can only be read from edges and texture: "
            "use a more detailed image or crop, or give the kernel explicitly (kernel='K.mat')")
    return x


def textured_crops(x: torch.Tensor, crop: int, count: int, *, generator: torch.Generator,
                   candidates: int = 64, align: int = 2) -> list[tuple[int, int]]:
    """Top-left corners of ``count`` crops of ``crop``² pixels: the most textured of ``candidates``
    random positions (aligned to ``align``), overlapping each other by at most half a crop side.

    Flat regions carry no information about the blur, so the estimators spend their time on texture.
    """
    h, w = x.shape[-2:]
    if crop > min(h, w):
        raise ValueError(f"crop {crop} is larger than the {h}x{w} image")
    energy = window_texture(x, crop)
    ni, nj = (h - crop) // align + 1, (w - crop) // align + 1
    n = max(count, min(candidates, ni * nj))
    ii = torch.randint(0, ni, (n,), generator=generator) * align
    jj = torch.randint(0, nj, (n,), generator=generator) * align
    order = torch.argsort(energy[ii, jj], descending=True)
    chosen: list[tuple[int, int]] = []
    for idx in order.tolist():
        i, j = int(ii[idx]), int(jj[idx])
        if all(abs(i - a) >= crop // 2 or abs(j - b) >= crop // 2 for a, b in chosen):
            chosen.append((i, j))
        if len(chosen) == count:
            break
    for idx in order.tolist():  # small images: allow overlap rather than fewer crops
        if len(chosen) == count:
            break
        pos = (int(ii[idx]), int(jj[idx]))
        if pos not in chosen:
            chosen.append(pos)
    return chosen


def even_floor(n: int) -> int:
    """``n`` rounded down to an even number."""
    return int(n) - int(n) % 2
