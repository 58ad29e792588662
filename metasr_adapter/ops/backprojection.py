"""Iterative back-projection (Irani & Peleg): make the SR image consistent with its LR input.

SPEC §7: ``sr <- clip(sr + up(lr - down(sr)), 0, 1)`` repeated ``iters`` times, where
``down`` is the degradation (kernel + subsampling) and ``up`` is MATLAB bicubic.
"""
from __future__ import annotations

import numpy as np
import torch

from .degrade import degrade, imresize

__all__ = ["back_project"]


def back_project(
    sr: torch.Tensor,
    lr_img: torch.Tensor,
    kernel: np.ndarray | torch.Tensor | None,
    scale: float,
    ds_method: str = "direct",
    iters: int = 4,
) -> torch.Tensor:
    """Back-project ``lr_img`` (NCHW) into ``sr`` (NCHW); ``kernel=None`` means bicubic downscaling."""
    if iters < 0:
        raise ValueError(f"iters={iters} must be >= 0")
    lr_shape = tuple(lr_img.shape[-2:])
    sr_shape = tuple(sr.shape[-2:])
    for _ in range(iters):
        down = degrade(sr, kernel, scale, ds_method=ds_method, output_shape=lr_shape)
        sr = (sr + imresize(lr_img - down, scale, output_shape=sr_shape)).clamp(0, 1)
    return sr
