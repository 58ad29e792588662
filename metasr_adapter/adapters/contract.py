"""What a wrapped SR network promises: which input it takes, and what output size it makes.

One definition, used by :class:`~metasr_adapter.MetaSR` and :class:`~metasr_adapter.zssr.core.ZSSR` alike.
"""
from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["takes_upsampled_input", "fit_output"]


def takes_upsampled_input(model: nn.Module, override: bool | None = None) -> bool:
    """Whether ``model`` takes the bicubic-upsampled image (MZSR, SRCNN, VDSR) rather than the LR
    image (RCAN, EDSR, SwinIR). ``override`` wins; else the model's ``upsample_input`` attribute;
    else False (a network that upsamples by itself, the common case)."""
    if override is not None:
        return bool(override)
    return bool(getattr(model, "upsample_input", False))


def fit_output(y: torch.Tensor, shape: tuple[int, int], scale: float, upsample_input: bool) -> torch.Tensor:
    """``y`` cut to the expected ``shape``, allowing only the rounding of an odd size: a network that
    upsamples by itself makes ``scale·floor(h)`` rows where ``ceil(scale·h)`` are expected, never more
    than ``ceil(scale) - 1`` extra. Any other size raises ValueError naming the shapes and the fix."""
    h, w = shape
    slack = max(0, math.ceil(scale) - 1)
    oh, ow = y.shape[-2:]
    if not (h <= oh <= h + slack and w <= ow <= w + slack):
        raise ValueError(
            f"network output is {oh}x{ow} but x{scale:g} SR of this input is {h}x{w}; check scale={scale:g} (the "
            f"factor the network was built for) and upsample_input={upsample_input} (True for networks that take "
            "the bicubic-upsampled image, False for those that upsample themselves)"
        )
    return y[..., :h, :w]
