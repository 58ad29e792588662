"""Geometric test-time tools for SR: dihedral transforms, self-ensemble, random crops.

The 8 dihedral ``mode``\\ s are numbered as in the official MZSR code (SPEC §3a), the one convention of
this package: ``mode // 2`` counter-clockwise quarter turns in the image plane (the direction of
``np.rot90``), then, for odd modes, an up-down flip. Mode 0 is the identity. ZSSR's self-ensemble
uses all eight, so its numbering does not matter there.

Everything works on tensors shaped ``(..., H, W)`` (NCHW in the project), on any device and
dtype, and is differentiable (rotations and flips are permutations of the pixels); :func:`dihedral`
also takes numpy arrays, with ``dims=(0, 1)`` for HxWxC images.
"""
from __future__ import annotations

from typing import Callable, Iterable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

__all__ = [
    "DIHEDRAL_MODES",
    "AXIS_PRESERVING_MODES",
    "GRID_SAFE_DIRECT_MODES",
    "ensemble_modes",
    "REDUCTIONS",
    "dihedral",
    "inverse_dihedral",
    "median_reduce",
    "geometric_self_ensemble",
    "random_crop_box",
    "random_crop",
    "Dihedral",
    "SelfEnsemble",
]

#: all eight rotations/flips (ZSSR's ``output_flip``)
DIHEDRAL_MODES: tuple[int, ...] = tuple(range(8))
#: the four modes that keep H and W in place (0°, 180°, and their flips): safe when the
#: two axes are scaled differently
AXIS_PRESERVING_MODES: tuple[int, ...] = (0, 1, 4, 5)
#: the modes that commute with direct subsampling (keep pixel (0, 0) of each s×s block where it is):
#: the identity and the transpose (mode 3: a quarter turn, then an up-down flip). Every other mode flips
#: an axis, which moves a directly subsampled image by s-1 HR pixels against its HR image
GRID_SAFE_DIRECT_MODES: tuple[int, ...] = (0, 3)

REDUCTIONS = ("median", "median_lower", "mean")


def _check_mode(mode: int) -> int:
    if isinstance(mode, bool) or not isinstance(mode, (int, np.integer)) or not 0 <= int(mode) <= 7:
        raise ValueError(f"dihedral mode must be an int in 0..7; got {mode!r}")
    return int(mode)


def _check_tensor(x: Tensor) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"expected a torch.Tensor shaped (..., H, W); got {type(x).__name__}")
    if x.dim() < 2:
        raise ValueError(f"expected a tensor with at least 2 dims (..., H, W); got shape {tuple(x.shape)}")
    return x


def dihedral(x: Tensor | np.ndarray, mode: int, dims: tuple[int, int] = (-2, -1)) -> Tensor | np.ndarray:
    """``x`` turned ``mode // 2`` quarter turns counter-clockwise in the plane ``dims``, then flipped
    up-down (along ``dims[0]``) when ``mode`` is odd (SPEC §3a). Tensors or numpy arrays."""
    m = _check_mode(mode)
    if isinstance(x, np.ndarray):
        if x.ndim < 2:
            raise ValueError(f"expected an array with at least 2 dims; got shape {x.shape}")
        out = np.rot90(x, m // 2, axes=dims)
        return np.flip(out, dims[0]) if m % 2 else out
    out = torch.rot90(_check_tensor(x), m // 2, dims=dims)
    return out.flip(dims[0]) if m % 2 else out


def inverse_dihedral(x: Tensor, mode: int, dims: tuple[int, int] = (-2, -1)) -> Tensor:
    """Undo :func:`dihedral`: ``inverse_dihedral(dihedral(x, m), m) == x`` for every mode."""
    m = _check_mode(mode)
    out = _check_tensor(x).flip(dims[0]) if m % 2 else x
    return torch.rot90(out, -(m // 2), dims=dims)


def median_reduce(stack: Tensor, dim: int = 0, *, lower: bool = False) -> Tensor:
    """Element-wise median over ``dim``.

    With an even count the default is numpy's (and the official ZSSR's ``np.median``) convention,
    the mean of the two middle values; ``lower=True`` gives ``torch.median``'s lower middle value.
    """
    n = stack.shape[dim]
    if n == 0:
        raise ValueError("median of an empty stack")
    ordered = stack.sort(dim=dim).values
    if n % 2 == 1 or lower:
        return ordered.select(dim, (n - 1) // 2)
    return 0.5 * (ordered.select(dim, n // 2 - 1) + ordered.select(dim, n // 2))


def ensemble_modes(ds_method: str, isotropic: bool = True) -> tuple[int, ...]:
    """The dihedral modes a self-ensemble may use for LR images made with subsampling ``ds_method``
    (``'direct'``, ``'centred'``, ``'bicubic'``): all 8 on symmetric grids, only those of
    :data:`GRID_SAFE_DIRECT_MODES` on the direct grid; without ``isotropic`` scaling, none that swap axes."""
    modes = GRID_SAFE_DIRECT_MODES if ds_method == "direct" else DIHEDRAL_MODES
    return tuple(m for m in modes if isotropic or m in AXIS_PRESERVING_MODES)


def geometric_self_ensemble(
    fn: Callable[[Tensor], Tensor],
    x: Tensor,
    modes: Iterable[int] = DIHEDRAL_MODES,
    reduce: str = "median",
    post: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    """Run ``fn`` on every dihedral transform of ``x``, undo the transform, and combine.

    Args:
        fn: the model, ``(..., H, W) -> (..., H', W')``; it must map rotated inputs to rotated
            outputs of the matching size (true for fully convolutional SR networks).
        x: the input, ``(..., H, W)``.
        modes: which of the 8 :func:`dihedral` modes to use (default all).
        reduce: ``'median'`` (ZSSR; even counts average the middle two, as ``np.median``),
            ``'median_lower'`` (``torch.median``'s lower middle) or ``'mean'`` (EDSR's "+").
        post: applied to each de-transformed output before reducing (ZSSR back-projects each one).
    """
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce={reduce!r}; use one of {REDUCTIONS}")
    modes = [_check_mode(m) for m in modes]
    if not modes:
        raise ValueError("modes is empty; give at least one dihedral mode (0 = identity)")
    outs = []
    for m in modes:
        y = inverse_dihedral(fn(dihedral(x, m)), m)
        outs.append(post(y) if post is not None else y)
    if len(outs) == 1:
        return outs[0]
    shapes = {tuple(o.shape) for o in outs}
    if len(shapes) != 1:
        raise ValueError(
            f"fn gave differently shaped outputs for the transformed inputs: {sorted(shapes)}; "
            "for non-square scale factors use modes=AXIS_PRESERVING_MODES"
        )
    stack = torch.stack(outs, dim=0)
    if reduce == "mean":
        return stack.mean(dim=0)
    return median_reduce(stack, 0, lower=reduce == "median_lower")


def random_crop_box(
    height: int, width: int, size: int | Sequence[int], rng: np.random.Generator | None = None
) -> tuple[int, int, int, int]:
    """A uniformly random ``(top, left, h, w)`` window of ``size`` inside an ``height``×``width`` image.

    The window is clipped to the image when the image is smaller than ``size`` (then it is the
    whole extent along that axis).
    """
    if isinstance(size, (int, np.integer)):
        ch, cw = int(size), int(size)
    else:
        ch, cw = (int(v) for v in size)
    if ch < 1 or cw < 1:
        raise ValueError(f"crop size must be positive; got {size!r}")
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive; got {height}x{width}")
    rng = np.random.default_rng() if rng is None else rng
    ch, cw = min(ch, height), min(cw, width)
    top = int(rng.integers(0, height - ch + 1))
    left = int(rng.integers(0, width - cw + 1))
    return top, left, ch, cw


def random_crop(
    x: Tensor, size: int | Sequence[int], rng: np.random.Generator | None = None
) -> tuple[Tensor, tuple[int, int, int, int]]:
    """Crop a random ``size`` window (clipped to the image) from ``x`` (..., H, W).

    Returns the crop (a view) and its box ``(top, left, h, w)``.
    """
    x = _check_tensor(x)
    box = random_crop_box(x.shape[-2], x.shape[-1], size, rng)
    top, left, h, w = box
    return x[..., top : top + h, left : left + w], box


class Dihedral(nn.Module):
    """Module form of :func:`dihedral` (or :func:`inverse_dihedral` with ``inverse=True``)."""

    def __init__(self, mode: int, inverse: bool = False) -> None:
        super().__init__()
        self.mode = _check_mode(mode)
        self.inverse = bool(inverse)

    def forward(self, x: Tensor) -> Tensor:
        return inverse_dihedral(x, self.mode) if self.inverse else dihedral(x, self.mode)

    def extra_repr(self) -> str:
        return f"mode={self.mode}, inverse={self.inverse}"


class SelfEnsemble(nn.Module):
    """Wrap an SR network so that its forward pass is the geometric self-ensemble of :func:`geometric_self_ensemble`."""

    def __init__(self, model: nn.Module, modes: Iterable[int] = DIHEDRAL_MODES, reduce: str = "median") -> None:
        super().__init__()
        if reduce not in REDUCTIONS:
            raise ValueError(f"reduce={reduce!r}; use one of {REDUCTIONS}")
        self.model = model
        self.modes = tuple(_check_mode(m) for m in modes)
        self.reduce = reduce

    def forward(self, x: Tensor) -> Tensor:
        return geometric_self_ensemble(self.model, x, self.modes, self.reduce)

    def extra_repr(self) -> str:
        return f"modes={self.modes}, reduce={self.reduce!r}"
