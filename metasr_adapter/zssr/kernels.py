"""The kernels ZSSR takes: reading them (estimated kernels with small negative entries included, as the
official code uses them) and centring them for direct subsampling (:func:`kernel_shift`)."""
from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import Tensor

from ..ops.kernels import read_kernel_file
from .config import scale_pair

__all__ = ["kernel_shift", "resolve_zssr_kernel"]


def kernel_shift(kernel: Any, scale: Any) -> np.ndarray:
    """Centre a blur kernel for ZSSR's direct subsampling so the LR grid matches bicubic's.

    Direct subsampling keeps HR pixel ``s·j`` as LR pixel ``j``, and correlation is centred at
    index ``k // 2``. Bicubic resizing puts LR pixel ``j`` at HR position ``s·j + (s - 1)/2``.
    So the kernel's centre of mass is moved (spline interpolation, order 3, as the official code)
    to ``k // 2 + (s - 1)/2`` per axis, after zero-padding by ``ceil(max |shift|) + 1`` so nothing
    is cut off. The result is renormalised to sum 1.

    ``scale`` is the up factor (2 for x2), a number or ``(vertical, horizontal)``.
    """
    from scipy import ndimage

    k = np.array(kernel, dtype=np.float64)
    if k.ndim != 2 or k.size == 0:
        raise ValueError(f"kernel must be a non-empty 2-D array; got shape {k.shape}")
    total = k.sum()
    if not np.isfinite(total) or total <= 0:
        raise ValueError(f"kernel must have a positive, finite sum; got {total}")
    sh, sw = scale_pair(scale)
    centre = np.array(ndimage.center_of_mass(k))
    target = np.array([k.shape[0] // 2 + (sh - 1) / 2, k.shape[1] // 2 + (sw - 1) / 2])
    shift = target - centre
    pad = int(math.ceil(float(np.max(np.abs(shift))))) + 1
    padded = np.pad(k, pad, mode="constant")
    out = ndimage.shift(padded, shift, order=3, mode="constant", cval=0.0)
    return out / out.sum()


def _read_kernel_array(spec: Any) -> np.ndarray | None:
    """The raw array of a kernel given as a .mat/.npy path or an array/tensor; None for other forms."""
    if isinstance(spec, Tensor):
        return spec.detach().cpu().double().numpy()
    if isinstance(spec, np.ndarray):
        return np.asarray(spec, dtype=np.float64)
    if isinstance(spec, (str, os.PathLike)) and os.path.isfile(spec):
        if os.path.splitext(str(spec))[1].lower() in (".mat", ".npy"):
            return read_kernel_file(spec)
    return None


def resolve_zssr_kernel(spec: Any) -> Any:
    """:func:`~metasr_adapter.ops.kernels.resolve_kernel`, but also accepting estimated kernels with
    small negative entries (like the official ``real_example/charlie_0.mat``), which the official
    ZSSR uses as they are. Such kernels are checked here (2-D, finite, positive sum), rescaled to
    sum 1 and returned with a warning; everything else goes through ``resolve_kernel``.
    """
    from ..ops.kernels import KernelSpec, resolve_kernel

    raw = None if isinstance(spec, KernelSpec) else _read_kernel_array(spec)
    if raw is None or not np.any(raw < 0):
        return resolve_kernel(spec)
    if raw.ndim != 2 or raw.size == 0 or not np.all(np.isfinite(raw)):
        raise ValueError(f"kernel must be a finite 2-D array; got shape {raw.shape}")
    total = float(raw.sum())
    if total <= 0:
        raise ValueError(f"kernel sums to {total:.4g}; a blur kernel needs a positive sum")
    warnings.warn(
        f"kernel has negative entries (min {raw.min():.3g}, total {raw[raw < 0].sum():.3g}); using it as given, "
        "as the official ZSSR does with estimated kernels",
        UserWarning,
        stacklevel=3,
    )
    name = os.path.basename(str(spec)) if isinstance(spec, (str, os.PathLike)) else None
    return _PermissiveKernel(kernel=raw / total, ds_method="direct", name=name)


@dataclass(frozen=True, eq=False)
class _PermissiveKernel:
    """A kernel that :class:`~metasr_adapter.ops.kernels.KernelSpec` would reject (negative entries)."""

    kernel: np.ndarray
    ds_method: str = "direct"
    name: str | None = None


def is_kernel_list(kernel: Any) -> bool:
    """True for a list/tuple of kernels (one per stage), False for one kernel given as nested numbers."""
    if not isinstance(kernel, (list, tuple)) or not kernel:
        return False
    from ..ops.kernels import KernelSpec

    return all(k is None or isinstance(k, (str, os.PathLike, np.ndarray, Tensor, KernelSpec)) for k in kernel)
