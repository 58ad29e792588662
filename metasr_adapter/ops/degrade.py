"""MZSR's resampling operators in torch: MATLAB bicubic ``imresize`` and kernel degradation (SPEC §2).

All functions take float tensors shaped ``(..., H, W)`` (NCHW in the project), any number of
channels, on any device, keep the dtype and are differentiable. Resampling weights and indices are
computed once per geometry in float64 numpy (cached) and applied in the tensor's own dtype: as one
(out × in) matrix product per axis (the symmetric border folded into the matrix), or, for very long
axes, as index gathers plus weighted sums over the taps. Float64 inputs reproduce the official
float64 numpy code to round-off.
"""
from __future__ import annotations

import math
import threading
from collections import OrderedDict
from functools import update_wrapper
from typing import Any, Callable, NamedTuple, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .kernels import DS_METHODS, resolve_kernel, validate_kernel

__all__ = [
    "cubic",
    "resample_weights",
    "direct_indices",
    "imresize",
    "blur",
    "subsample_direct",
    "subsample_centred",
    "degrade",
    "Imresize",
    "Degradation",
]

Scale = Union[float, Sequence[float]]


# ----------------------------------------------------------------------------------------------
# geometry (float64 numpy, cached)
# ----------------------------------------------------------------------------------------------
class CacheInfo(NamedTuple):
    """Counters of a :func:`_bounded_cache`: ``functools.lru_cache``'s four and the bytes held."""

    hits: int
    misses: int
    maxsize: int
    currsize: int
    nbytes: int
    max_bytes: int


def _nbytes(value: Any) -> int:
    """Bytes held by a cached value: numpy arrays and tensors, alone or in a tuple."""
    if isinstance(value, tuple):
        return sum(_nbytes(v) for v in value)
    if isinstance(value, Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    return 0


def _bounded_cache(maxsize: int, max_bytes: int) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A least-recently-used cache bounded by entry count *and* by the bytes of the arrays it holds.

    ``functools.lru_cache`` bounds only the count, and one resampling matrix of a photo-sized axis is
    up to 16 MB: a folder of photos of different sizes filled the caches with hundreds of MB. Here the
    oldest entries go as soon as either bound is passed; the newest one always stays, so a single
    result larger than ``max_bytes`` is still reused by the next call with the same geometry.
    ``cache_info()`` / ``cache_clear()`` work as for ``lru_cache``."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        entries: OrderedDict[tuple, Any] = OrderedDict()
        sizes: dict[tuple, int] = {}
        lock = threading.Lock()
        counts = {"hits": 0, "misses": 0, "bytes": 0}

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            key = args + (_KEYWORDS, *sorted(kwargs.items())) if kwargs else args
            with lock:
                if key in entries:
                    entries.move_to_end(key)
                    counts["hits"] += 1
                    return entries[key]
                counts["misses"] += 1
            value = fn(*args, **kwargs)  # outside the lock: another thread may compute the same entry, harmlessly
            size = _nbytes(value)
            with lock:
                if key not in entries:
                    entries[key] = value
                    sizes[key] = size
                    counts["bytes"] += size
                while len(entries) > 1 and (len(entries) > maxsize or counts["bytes"] > max_bytes):
                    old, _ = entries.popitem(last=False)
                    counts["bytes"] -= sizes.pop(old)
            return value

        def cache_info() -> CacheInfo:
            with lock:
                return CacheInfo(counts["hits"], counts["misses"], maxsize, len(entries), counts["bytes"], max_bytes)

        def cache_clear() -> None:
            with lock:
                entries.clear()
                sizes.clear()
                counts.update(hits=0, misses=0, bytes=0)

        update_wrapper(wrapper, fn)
        wrapper.cache_info = cache_info  # type: ignore[attr-defined]
        wrapper.cache_clear = cache_clear  # type: ignore[attr-defined]
        return wrapper

    return decorate


_MB = 1 << 20
_KEYWORDS = object()  # separates positional from keyword arguments in a cache key


def cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's 'bicubic')."""
    ax = np.abs(x)
    ax2 = ax * ax
    ax3 = ax2 * ax
    inner = (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1)
    outer = (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2))
    return inner + outer


def _symmetric_index(idx: np.ndarray, n: int) -> np.ndarray:
    """Map 0-based indices outside [0, n) by half-sample symmetric reflection (``c b a | a b c``), repeated."""
    m = np.mod(idx, 2 * n)
    return np.where(m >= n, 2 * n - 1 - m, m)


def _raw_weights(in_len: int, out_len: int, scale: float, antialiasing: bool) -> tuple[np.ndarray, np.ndarray]:
    """MATLAB ``contributions`` per SPEC §2a: weights [out, T] and 0-based unreflected indices [out, T]."""
    kernel_width = 4.0
    aa = antialiasing and scale < 1
    if aa:
        kernel_width = kernel_width / scale
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - kernel_width / 2)
    p = int(math.ceil(kernel_width)) + 2
    indices = left[:, None] + np.arange(p, dtype=np.float64)[None, :]  # 1-based
    dist = u[:, None] - indices
    weights = scale * cubic(scale * dist) if aa else cubic(dist)
    weights = weights / weights.sum(axis=1, keepdims=True)
    # SPEC §2a column dropping. (With this geometry the first and last columns are always all-zero,
    # so in practice the first branch always runs and drops only zeros.)
    if np.any(weights[:, 0] == 0):
        weights, indices = weights[:, 1 : p - 1], indices[:, 1 : p - 1]
    elif np.any(weights[:, -1] == 0):
        weights, indices = weights[:, : p - 1], indices[:, : p - 1]
    return weights, indices.astype(np.int64) - 1


@_bounded_cache(maxsize=256, max_bytes=16 * _MB)
def resample_weights(
    in_len: int, out_len: int, scale: float, antialiasing: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Per-axis bicubic resampling: ``out[o] = Σ_t weights[o, t] · in[indices[o, t]]``.

    ``indices`` are 0-based into the input, with the half-sample symmetric border folded in.
    Both arrays are read-only (they are cached).
    """
    weights, indices = _raw_weights(in_len, out_len, scale, antialiasing)
    indices = _symmetric_index(indices, in_len)
    weights.setflags(write=False)
    indices.setflags(write=False)
    return weights, indices


@_bounded_cache(maxsize=256, max_bytes=4 * _MB)
def direct_indices(in_len: int, out_len: int, scale: float) -> np.ndarray:
    """SPEC §2b: ``round(linspace(0, in_len - scale, out_len))`` with numpy's half-to-even rounding.

    ``scale`` is the up factor (2 for x2); the official code writes it as ``1/s`` with ``s = 1/scale``.
    """
    s = 1.0 / scale
    idx = np.round(np.linspace(0, in_len - 1 / s, out_len)).astype(np.int64)
    idx.setflags(write=False)
    return idx


#: per-axis geometries with at most this many (out × in) entries are applied as one dense matmul
#: (BLAS, fast and deterministic); larger ones as a loop over the taps with index gathers.
DENSE_MAX_ENTRIES = 1 << 21


@_bounded_cache(maxsize=64, max_bytes=32 * _MB)  # float64: only the source of _torch_matrix
def _dense_matrix(in_len: int, out_len: int, scale: float, antialiasing: bool) -> np.ndarray:
    weights, indices = resample_weights(in_len, out_len, scale, antialiasing)
    mat = np.zeros((out_len, in_len))
    rows = np.broadcast_to(np.arange(out_len)[:, None], indices.shape)
    np.add.at(mat, (rows, indices), weights)  # taps that reflect onto the same pixel add up
    mat.setflags(write=False)
    return mat


@_bounded_cache(maxsize=32, max_bytes=64 * _MB)  # the working set of a few photo sizes
def _torch_matrix(
    in_len: int, out_len: int, scale: float, antialiasing: bool, dtype: torch.dtype, device: torch.device
) -> Tensor:
    with torch.inference_mode(False):  # a cached inference tensor could not be saved for backward later
        return torch.tensor(_dense_matrix(in_len, out_len, scale, antialiasing), dtype=dtype, device=device)


@_bounded_cache(maxsize=32, max_bytes=32 * _MB)
def _torch_taps(
    in_len: int, out_len: int, scale: float, antialiasing: bool, dtype: torch.dtype, device: torch.device
) -> tuple[Tensor, Tensor]:
    w, idx = resample_weights(in_len, out_len, scale, antialiasing)
    # [T, out] layout: one contiguous row of weights / indices per tap
    with torch.inference_mode(False):
        return (
            torch.tensor(np.ascontiguousarray(w.T), dtype=dtype, device=device),
            torch.tensor(np.ascontiguousarray(idx.T), dtype=torch.long, device=device),
        )


@_bounded_cache(maxsize=512, max_bytes=4 * _MB)
def _direct_index_t(in_len: int, out_len: int, scale: float, device: torch.device) -> Tensor:
    with torch.inference_mode(False):
        return torch.tensor(direct_indices(in_len, out_len, scale), dtype=torch.long, device=device)


@_bounded_cache(maxsize=512, max_bytes=4 * _MB)
def _pad_index_t(n: int, before: int, after: int, device: torch.device) -> Tensor:
    """Gather indices that pad a length-``n`` axis half-sample symmetrically by (before, after)."""
    with torch.inference_mode(False):
        return torch.tensor(_symmetric_index(np.arange(-before, n + after), n), dtype=torch.long, device=device)


# ----------------------------------------------------------------------------------------------
# argument handling
# ----------------------------------------------------------------------------------------------
def _check_tensor(x: Any, name: str = "x") -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor shaped (N, C, H, W); got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor; got {x.dtype} (convert with .float())")
    if x.dim() < 2:
        raise ValueError(f"{name} must have at least 2 dims (..., H, W); got shape {tuple(x.shape)}")
    return x


def _pair_scale(scale: Scale, name: str = "scale") -> tuple[float, float]:
    if isinstance(scale, (int, float, np.integer, np.floating)) and not isinstance(scale, bool):
        pair = (float(scale), float(scale))
    else:
        try:
            vals = [float(v) for v in scale]  # type: ignore[union-attr]
        except TypeError:
            raise TypeError(f"{name} must be a number or a pair (sh, sw); got {scale!r}") from None
        if len(vals) != 2:
            raise ValueError(f"{name} must be a number or a pair (sh, sw); got {scale!r}")
        pair = (vals[0], vals[1])
    if not all(math.isfinite(v) and v > 0 for v in pair):
        raise ValueError(f"{name} must be positive and finite; got {scale!r}")
    return pair


def _pair_shape(shape: Any) -> tuple[int, int]:
    try:
        vals = [int(v) for v in shape]
    except TypeError:
        raise TypeError(f"output_shape must be a pair (H, W); got {shape!r}") from None
    if len(vals) != 2 or min(vals) < 1:
        raise ValueError(f"output_shape must be a pair (H, W) of positive ints; got {shape!r}")
    return vals[0], vals[1]


def _sizes(
    in_hw: tuple[int, int], scale: Scale | None, output_shape: Any
) -> tuple[tuple[float, float], tuple[int, int]]:
    """Official ``fix_scale_and_size``: out = ceil(in·scale) unless given; scale = out/in unless given."""
    if scale is None and output_shape is None:
        raise ValueError("give scale or output_shape (or both)")
    if scale is None:
        out = _pair_shape(output_shape)
        return (out[0] / in_hw[0], out[1] / in_hw[1]), out
    s = _pair_scale(scale)
    if output_shape is None:
        out = (int(math.ceil(in_hw[0] * s[0])), int(math.ceil(in_hw[1] * s[1])))
    else:
        out = _pair_shape(output_shape)
    return s, out


# ----------------------------------------------------------------------------------------------
# operators
# ----------------------------------------------------------------------------------------------
def _resize_axis(x: Tensor, dim: int, out_len: int, scale: float, antialiasing: bool) -> Tensor:
    """Resize ``x`` along ``dim`` (-2 = rows, -1 = columns)."""
    in_len = x.shape[dim]
    if in_len * out_len <= DENSE_MAX_ENTRIES:
        mat = _torch_matrix(in_len, out_len, scale, antialiasing, x.dtype, x.device)
        return torch.matmul(mat, x) if dim == -2 else torch.matmul(x, mat.t())
    if dim == -1:  # gathering whole rows is much faster than gathering single elements
        return _resize_axis(x.transpose(-1, -2).contiguous(), -2, out_len, scale, antialiasing).transpose(-1, -2)
    w, idx = _torch_taps(in_len, out_len, scale, antialiasing, x.dtype, x.device)
    out = x.index_select(-2, idx[0]) * w[0].unsqueeze(-1)
    for t in range(1, idx.shape[0]):
        out = out + x.index_select(-2, idx[t]) * w[t].unsqueeze(-1)
    return out


def imresize(
    x: Tensor, scale: Scale | None = None, output_shape: Any = None, antialiasing: bool = True
) -> Tensor:
    """MATLAB-style bicubic resize (SPEC §2a) of ``x`` (..., H, W).

    ``scale`` (a number or (sh, sw)) sets the weights; ``output_shape`` (H, W) sets the size and
    defaults to ``ceil(in·scale)``. As in the official code, a given ``output_shape`` does not change
    the weights. Antialiasing applies when downscaling. Rows are resized first, then columns.
    """
    x = _check_tensor(x)
    (sh, sw), (oh, ow) = _sizes((x.shape[-2], x.shape[-1]), scale, output_shape)
    out = _resize_axis(_resize_axis(x, -2, oh, sh, antialiasing), -1, ow, sw, antialiasing)
    return out.contiguous()


def _kernel_tensor(kernel: Any, x: Tensor) -> Tensor:
    if isinstance(kernel, Tensor):
        k = kernel.to(device=x.device, dtype=x.dtype)
    elif isinstance(kernel, np.ndarray):
        k = torch.tensor(np.asarray(kernel, dtype=np.float64), dtype=x.dtype, device=x.device)
    else:
        raise TypeError(
            f"kernel must be a numpy array or a tensor, (kh, kw) or (N, kh, kw); got {type(kernel).__name__} "
            "(use metasr_adapter.ops.kernels.resolve_kernel for names and files)"
        )
    if k.dim() not in (2, 3) or k.numel() == 0:
        raise ValueError(f"kernel must be shaped (kh, kw) or (N, kh, kw); got {tuple(k.shape)}")
    return k


def _pad_symmetric(x: Tensor, top: int, bottom: int, left: int, right: int) -> Tensor:
    h, w = x.shape[-2], x.shape[-1]
    rows = _pad_index_t(h, top, bottom, x.device)
    cols = _pad_index_t(w, left, right, x.device)
    return x.index_select(-2, rows).index_select(-1, cols)


#: a shared kernel within this (relative, per entry) of the outer product of its marginals is applied
#: as two 1-D passes (isotropic Gaussians such as gd2.0 are separable): ~10x fewer operations for 21x21
SEPARABLE_RTOL = 1e-14


def _separable_factors(kernel: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """``(col, row)`` with ``kernel == outer(col, row)`` to float64 round-off, else None."""
    if isinstance(kernel, Tensor):
        if kernel.requires_grad or kernel.dim() != 2:
            return None
        kernel = kernel.detach().cpu().double().numpy()
    k = np.asarray(kernel, dtype=np.float64)
    if k.ndim != 2 or min(k.shape) < 2 or np.any(k < 0):
        return None
    total = k.sum()
    if not np.isfinite(total) or total <= 0:
        return None
    col, row = k.sum(axis=1) / total, k.sum(axis=0)
    if np.abs(np.outer(col, row) - k).max() > SEPARABLE_RTOL * k.max():
        return None
    return col, row


def blur(x: Tensor, kernel: Any) -> Tensor:
    """Correlate every channel with ``kernel`` like ``scipy.ndimage.correlate(mode='reflect')``.

    The kernel origin is ``(kh//2, kw//2)`` (even sizes allowed); borders are half-sample symmetric,
    repeated when the kernel is larger than the image. ``kernel``: (kh, kw) for all, or (N, kh, kw)
    with one kernel per batch item of an (N, C, H, W) ``x``; numpy or tensor (cast to x's dtype/device).
    """
    x = _check_tensor(x)
    k = _kernel_tensor(kernel, x)
    if k.dim() == 3 and k.shape[0] == 1:
        k, kernel = k[0], kernel[0]
    kh, kw = k.shape[-2], k.shape[-1]
    padded = _pad_symmetric(x, kh // 2, kh - 1 - kh // 2, kw // 2, kw - 1 - kw // 2)
    ph, pw = padded.shape[-2], padded.shape[-1]
    groups = padded.numel() // (ph * pw) if padded.numel() else 1
    # one group per image plane: the fastest layout for depthwise correlation on CPU and GPU
    flat = padded.reshape(1, groups, ph, pw)
    if k.dim() == 2:
        factors = _separable_factors(kernel)
        if factors is not None:
            col = torch.tensor(factors[0], dtype=x.dtype, device=x.device).view(1, 1, kh, 1)
            row = torch.tensor(factors[1], dtype=x.dtype, device=x.device).view(1, 1, 1, kw)
            out = F.conv2d(flat, col.expand(groups, 1, kh, 1), groups=groups)
            out = F.conv2d(out, row.expand(groups, 1, 1, kw), groups=groups)
            return out.reshape(x.shape)
        weight = k.expand(groups, kh, kw).unsqueeze(1)
    else:
        if x.dim() != 4 or k.shape[0] != x.shape[0]:
            raise ValueError(
                f"per-sample kernels {tuple(k.shape)} need x shaped (N, C, H, W) with the same N; "
                f"got {tuple(x.shape)}"
            )
        weight = k.repeat_interleave(x.shape[1], dim=0).unsqueeze(1)  # [N*C, 1, kh, kw]
    return F.conv2d(flat, weight, groups=groups).reshape(x.shape)


def subsample_direct(x: Tensor, factor: Scale, output_shape: Any = None) -> Tensor:
    """Direct subsampling (SPEC §2b): keep rows/cols ``round(linspace(0, H - factor, outH))``.

    ``factor`` is the SR factor the subsampling models (2 for x2: the output is half the size), a number
    or (fh, fw), each >= 1; ``outH = ceil(H/factor)`` unless ``output_shape`` is given. For even H and x2 this keeps the top-left pixel of every 2×2 block.
    """
    x = _check_tensor(x)
    sh, sw = _pair_scale(factor)
    if sh < 1 or sw < 1:
        raise ValueError(f"factor is the SR factor the subsampling models and must be >= 1 (2 for x2); got {factor!r}")
    h, w = x.shape[-2], x.shape[-1]
    if output_shape is None:
        oh, ow = int(math.ceil(h * (1.0 / sh))), int(math.ceil(w * (1.0 / sw)))
    else:
        oh, ow = _pair_shape(output_shape)
    rows = _direct_index_t(h, oh, sh, x.device)
    cols = _direct_index_t(w, ow, sw, x.device)
    return x.index_select(-2, rows).index_select(-1, cols)


def subsample_centred(x: Tensor, factor: Scale, output_shape: Any = None) -> Tensor:
    """Centred subsampling: the mean of each ``factor``×``factor`` block (area integration), so LR pixel ``i``
    sits at HR position ``factor·i + (factor - 1)/2``. Integer factors only; a border that does not fill a
    whole block is averaged over the pixels it has (nothing is dropped). ``output_shape`` must then equal
    ``ceil(H/factor) × ceil(W/factor)``."""
    x = _check_tensor(x)
    sh, sw = _pair_scale(factor)
    if sh != int(sh) or sw != int(sw) or sh < 1 or sw < 1:
        raise ValueError(f"centred subsampling needs an integer factor >= 1 (2 for x2); got {factor!r}; "
                         "use ds_method='bicubic' for fractional factors")
    sh, sw = int(sh), int(sw)
    h, w = x.shape[-2], x.shape[-1]
    oh, ow = -(-h // sh), -(-w // sw)
    if output_shape is not None and tuple(_pair_shape(output_shape)) != (oh, ow):
        raise ValueError(f"centred subsampling of {h}x{w} by {sh}x{sw} gives {oh}x{ow}, not {tuple(output_shape)}")
    lead = x.shape[:-2]
    flat = x.reshape(-1, 1, h, w)
    out = F.avg_pool2d(flat, (sh, sw), ceil_mode=True, count_include_pad=False)
    return out.reshape(*lead, oh, ow)


def degrade(
    x: Tensor, kernel: Any, factor: Scale, ds_method: str = "direct", output_shape: Any = None
) -> Tensor:
    """Official ``imresize(x, 1/factor, output_shape, kernel, ds_method)``: the LR image of ``x`` under
    the degradation model of x``factor`` SR.

    ``kernel`` (kh, kw) or (N, kh, kw): blur, then ``'direct'`` subsampling (:func:`subsample_direct`),
    ``'centred'`` block means (:func:`subsample_centred`) or ``'bicubic'`` (antialiased :func:`imresize`
    by 1/factor). ``kernel=None``: plain antialiased
    bicubic downscaling. ``factor`` is the SR factor (2 for x2: the LR is half the size); compare
    :func:`imresize`, whose ``scale`` multiplies the size (0.5 halves it).
    """
    x = _check_tensor(x)
    sh, sw = _pair_scale(factor)
    if sh < 1 or sw < 1:
        raise ValueError(f"factor is the SR factor of the degradation and must be >= 1 (2 for x2); got {factor!r}")
    if ds_method not in DS_METHODS:
        raise ValueError(f"ds_method must be one of {DS_METHODS}; got {ds_method!r}")
    if kernel is None:
        if ds_method == "centred":
            return subsample_centred(x, (sh, sw), output_shape)
        return imresize(x, (1.0 / sh, 1.0 / sw), output_shape)
    blurred = blur(x, kernel)
    if ds_method == "direct":
        return subsample_direct(blurred, (sh, sw), output_shape)
    if ds_method == "centred":
        return subsample_centred(blurred, (sh, sw), output_shape)
    return imresize(blurred, (1.0 / sh, 1.0 / sw), output_shape)


# ----------------------------------------------------------------------------------------------
# modules
# ----------------------------------------------------------------------------------------------
class Imresize(nn.Module):
    """Module form of :func:`imresize` (no parameters)."""

    def __init__(self, scale: Scale | None = None, output_shape: Any = None, antialiasing: bool = True) -> None:
        super().__init__()
        if scale is None and output_shape is None:
            raise ValueError("give scale or output_shape (or both)")
        self.scale = scale
        self.output_shape = None if output_shape is None else _pair_shape(output_shape)
        self.antialiasing = antialiasing

    def forward(self, x: Tensor, output_shape: Any = None) -> Tensor:
        shape = self.output_shape if output_shape is None else output_shape
        return imresize(x, self.scale, shape, self.antialiasing)

    def extra_repr(self) -> str:
        return f"scale={self.scale}, output_shape={self.output_shape}, antialiasing={self.antialiasing}"


class Degradation(nn.Module):
    """Module form of :func:`degrade`; the kernel is a buffer (follows ``.to(device)``).

    ``kernel``: anything :func:`metasr_adapter.ops.kernels.resolve_kernel` accepts (a KernelSpec, a
    Table-2 name, a path, a 2-D array/tensor, None for plain bicubic) or an (N, kh, kw) stack.
    ``ds_method`` defaults to the spec's.
    """

    kernel: Tensor | None

    def __init__(self, kernel: Any, factor: Scale = 2, ds_method: str | None = None, output_shape: Any = None) -> None:
        super().__init__()
        _pair_scale(factor)
        if isinstance(kernel, (np.ndarray, Tensor)) and kernel.ndim == 3:
            stack = np.stack([validate_kernel(k) for k in kernel])
            self.ds_method = ds_method or "direct"
            if self.ds_method not in DS_METHODS:
                raise ValueError(f"ds_method must be one of {DS_METHODS}; got {self.ds_method!r}")
        else:
            spec = resolve_kernel(kernel, ds_method)
            stack = None if spec.kernel is None else np.array(spec.kernel)
            self.ds_method = spec.ds_method
        self.register_buffer("kernel", None if stack is None else torch.from_numpy(stack))
        self.factor = factor
        self.output_shape = None if output_shape is None else _pair_shape(output_shape)

    def forward(self, x: Tensor, output_shape: Any = None) -> Tensor:
        shape = self.output_shape if output_shape is None else output_shape
        return degrade(x, self.kernel, self.factor, self.ds_method, shape)

    def extra_repr(self) -> str:
        k = None if self.kernel is None else tuple(self.kernel.shape)
        return f"kernel={k}, factor={self.factor}, ds_method={self.ds_method!r}, output_shape={self.output_shape}"
