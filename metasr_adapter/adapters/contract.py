"""What a wrapped SR network promises: which input it takes, and what output size it makes.

One definition, used by :class:`~metasr_adapter.MetaSR` and :class:`~metasr_adapter.zssr.core.ZSSR` alike.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any, Callable, Collection, Iterator, Mapping

import torch
from torch import nn

__all__ = ["takes_upsampled_input", "fit_output", "tile_overlap", "tiled_forward", "eval_mode", "FrozenPrefix",
           "frozen_prefix"]


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Run ``model`` in eval mode (batch norm on its running statistics, no dropout) and give it back in the
    train/eval mode it had: adaptation and the kernel search use a wrapped network without changing it."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@dataclass(frozen=True)
class FrozenPrefix:
    """A network cut where only the layers after a frozen prefix adapt (ANIL-style inner loops).

    ``prefix(x, weights)`` runs the layers no adaptation step changes, once per input; ``suffix(state, weights)``
    runs the rest on the (fast) weights and returns what the whole network returns. The composition is the
    network's forward, op for op, so a loss through it and its gradients equal the uncut ones.
    """

    prefix: Callable[[torch.Tensor, Mapping[str, torch.Tensor]], Any]
    suffix: Callable[[Any, Mapping[str, torch.Tensor]], torch.Tensor]


def frozen_prefix(model: nn.Module, adapted: Collection[str]) -> FrozenPrefix | None:
    """The network's :class:`FrozenPrefix` for these adapted parameter names, or None when it offers none
    (a network opts in with a ``frozen_prefix(adapted)`` method) or when its first layer adapts."""
    fn = getattr(model, "frozen_prefix", None)
    return fn(adapted) if callable(fn) else None


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


def tile_overlap(model: nn.Module, overlap: int | None = None) -> int:
    """Input pixels each tile borrows from its neighbours so that tiling changes nothing: ``overlap``
    when given, else the network's ``receptive_radius``. Raises ValueError for a network with global
    context (tiles would see less than the whole image) or without a declared radius."""
    if getattr(model, "global_context", False):
        raise ValueError(f"{type(model).__name__} uses the whole image at once (global_context=True, e.g. channel "
                         "attention), so a tiled forward would differ from the untiled one; use tile=None")
    if overlap is not None:
        if overlap < 0:
            raise ValueError(f"tile_overlap={overlap} must be >= 0")
        return int(overlap)
    radius = getattr(model, "receptive_radius", None)
    if radius is None:
        raise ValueError(f"{type(model).__name__} declares no receptive_radius, so the tile overlap that keeps the "
                         "result exact is unknown; pass tile_overlap=N (input pixels, at least the network's "
                         "receptive radius)")
    return int(radius)


def tiled_forward(fn, x: torch.Tensor, tile: int, overlap: int, out_scale: float = 1.0) -> torch.Tensor:
    """``fn(x)`` computed tile by tile: windows of ``tile``² input pixels plus ``overlap`` on each side
    (clipped at the image border), each output cut to its tile's share. With ``overlap`` at least the
    receptive radius of a local network the result equals ``fn(x)`` to float round-off, and the peak
    memory follows the tile, not the image. ``out_scale``: output pixels per input pixel (1 for
    networks that take the upsampled image, the SR factor for those that upsample themselves)."""
    if tile < 1:
        raise ValueError(f"tile={tile} must be >= 1 (input pixels per tile side)")
    h, w = x.shape[-2:]
    s = float(out_scale)
    out = None
    for top in range(0, h, tile):
        for left in range(0, w, tile):
            t0, l0 = max(0, top - overlap), max(0, left - overlap)
            t1, l1 = min(h, top + tile + overlap), min(w, left + tile + overlap)
            y = fn(x[..., t0:t1, l0:l1])
            if out is None:
                out = y.new_empty((*y.shape[:-2], round(h * s), round(w * s)))
            bt, bl = round((top - t0) * s), round((left - l0) * s)
            th, tw = round(min(tile, h - top) * s), round(min(tile, w - left) * s)
            out[..., round(top * s) : round(top * s) + th, round(left * s) : round(left * s) + tw] = \
                y[..., bt : bt + th, bl : bl + tw]
    assert out is not None
    return out
