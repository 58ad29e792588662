"""Blur kernels: MZSR's Gaussian kernels, the paper's named test kernels, loading and validation.

``λ`` (``l1``, ``l2``, the numbers in the kernel names) are **variances**, as in the official code:
``gd2.0`` is an isotropic Gaussian with covariance ``2.0·I`` (σ = √2).
"""
from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Union

import numpy as np

__all__ = [
    "KERNEL_NAMES",
    "DS_METHODS",
    "KernelSpec",
    "gaussian_kernel",
    "anisotropic_gaussian",
    "random_kernel",
    "named_kernel",
    "load_kernel",
    "validate_kernel",
    "resolve_kernel",
]

#: subsampling grids after the blur: ``direct`` keeps every s-th pixel from the top-left (the official MZSR
#: code), ``centred`` averages each s×s block (a sensor's area integration: the LR pixel sits at the block's
#: centre, as in photos resized with a centred filter), ``bicubic`` is the antialiased MATLAB-bicubic resize
DS_METHODS = ("direct", "centred", "bicubic")
#: size of the named test kernels (the official g2.0 kernel.mat is 21×21)
NAMED_KERNEL_SIZE = 21
# name -> (kind, parameters, subsampling); MZSR paper, Table 2
_NAMED: dict[str, tuple[str, tuple[float, ...], str]] = {
    "gd0.2": ("iso", (0.2,), "direct"),
    "gd2.0": ("iso", (2.0,), "direct"),
    "gdani": ("aniso", (-0.5, 4.0, 1.0), "direct"),  # theta, l1, l2
    "gb1.3": ("iso", (1.3,), "bicubic"),
}
KERNEL_NAMES: tuple[str, ...] = tuple(_NAMED)
_PLAIN_BICUBIC = ("bicubic", "cubic")
_SUM_TOL = 1e-6


def gaussian_kernel(size: int, cov: Any) -> np.ndarray:
    """``size``×``size`` Gaussian with covariance ``cov`` (2×2, or a scalar variance), normalised to sum 1.

    Centre ``size/2 - 0.5``; the first coordinate of ``cov`` runs along columns (x), the second
    along rows (y). Even sizes are centred between pixels.
    """
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"kernel size must be a positive int; got {size!r}")
    sigma = np.asarray(cov, dtype=np.float64)
    if sigma.ndim == 0:
        sigma = sigma * np.eye(2)
    if sigma.shape != (2, 2) or not np.all(np.isfinite(sigma)):
        raise ValueError(f"cov must be a finite scalar variance or a 2x2 matrix; got {cov!r}")
    if not np.allclose(sigma, sigma.T) or np.linalg.det(sigma) <= 0 or sigma[0, 0] <= 0:
        raise ValueError(f"cov must be symmetric positive definite; got {sigma.tolist()}")
    inv = np.linalg.inv(sigma)
    center = size / 2.0 - 0.5
    coords = np.arange(center - size + 1, size - center)
    xs, ys = np.meshgrid(coords, coords)  # xs varies along columns, ys along rows
    quad = inv[0, 0] * xs * xs + (inv[0, 1] + inv[1, 0]) * xs * ys + inv[1, 1] * ys * ys
    k = np.exp(-0.5 * quad)
    return k / k.sum()


def anisotropic_gaussian(ksize: int, theta: float, l1: float, l2: float) -> np.ndarray:
    """MZSR's anisotropic Gaussian: ``Σ = V·diag(l1, l2)·Vᵀ`` with ``V`` the rotation by ``theta``.

    ``l1`` and ``l2`` are variances along the rotated axes (``l1`` along direction (cos θ, sin θ) in
    (x, y) = (column, row) coordinates).
    """
    if not (l1 > 0 and l2 > 0):
        raise ValueError(f"l1 and l2 are variances and must be > 0; got l1={l1}, l2={l2}")
    c, s = math.cos(theta), math.sin(theta)
    rot = np.array([[c, -s], [s, c]])
    sigma = rot @ np.diag([float(l1), float(l2)]) @ rot.T
    return gaussian_kernel(ksize, sigma)


def _uniform_draw(rng: Any) -> float:
    """One U[0,1) draw, the way ``np.random.random(1)[0]`` consumes the stream."""
    if isinstance(rng, np.random.Generator):
        return float(rng.random())
    return float(rng.random_sample())


def random_kernel(k1: float, ksize: int = 15, rng: Any = None, *, k0: float = 1.0) -> np.ndarray:
    """MZSR's ``generate_kernel(k1, ksize)``: a random anisotropic Gaussian (SPEC §3c).

    Draw order: ``theta = π·U``, ``l1 = k0 + (k1-k0)·U``, ``l2 = k0 + (l1-k0)·U`` (so ``l2 ≤ l1``).
    ``rng``: ``None`` (numpy's global legacy state, like the official code), an int seed,
    a ``np.random.RandomState`` or a ``np.random.Generator``. For x2 the official ``k1`` is 5.0 and
    ``k0`` (the smallest variance) is 1; ``k0 = 0.2`` also draws sharp kernels such as g^d_0.2.
    """
    if not 0 < k0 <= k1:
        raise ValueError(f"k0={k0}, k1={k1}: the variances need 0 < k0 <= k1 (official x2: k0 = 1, k1 = 5)")
    if rng is None:
        rng = np.random.mtrand._rand
    elif isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        rng = np.random.RandomState(int(rng))
    elif not isinstance(rng, (np.random.RandomState, np.random.Generator)):
        raise TypeError(f"rng must be None, an int seed, a RandomState or a Generator; got {type(rng).__name__}")
    theta = math.pi * _uniform_draw(rng)
    l1 = k0 + (k1 - k0) * _uniform_draw(rng)
    l2 = k0 + (l1 - k0) * _uniform_draw(rng)
    return anisotropic_gaussian(ksize, theta, l1, l2)


def _to_numpy(k: Any) -> np.ndarray:
    if hasattr(k, "detach") and hasattr(k, "cpu"):  # torch.Tensor, without importing torch here
        k = k.detach().cpu().double().numpy()
    try:
        return np.array(k, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"kernel must be a numeric array; got {type(k).__name__} ({exc})") from None


def validate_kernel(k: Any, image_shape: Any = None) -> np.ndarray:
    """Check a blur kernel and return it as a float64 array (a copy).

    Raises ``ValueError`` when it is not 2-D, is empty, holds NaN/inf or negative entries, sums
    to zero, or (with ``image_shape`` = (H, W, ...)) is larger than the image. A kernel whose sum
    differs from 1 by more than 1e-6 is normalised, with a warning.
    """
    arr = _to_numpy(k)
    if arr.ndim != 2:
        raise ValueError(f"kernel must be 2-D (kh, kw); got shape {arr.shape} — pass a single kernel")
    if arr.size == 0:
        raise ValueError(f"kernel is empty (shape {arr.shape})")
    if not np.all(np.isfinite(arr)):
        raise ValueError("kernel contains NaN or inf values; fix the kernel file or array")
    if np.any(arr < 0):
        raise ValueError(f"kernel has negative entries (min {arr.min():.3g}); a blur kernel must be >= 0")
    total = float(arr.sum())
    if total == 0.0:
        raise ValueError("kernel sums to zero (all entries are 0); a blur kernel must have a positive sum")
    if image_shape is not None:
        h, w = int(image_shape[0]), int(image_shape[1])
        if arr.shape[0] > h or arr.shape[1] > w:
            raise ValueError(
                f"kernel {arr.shape[0]}x{arr.shape[1]} is larger than the image {h}x{w}; "
                "use a smaller kernel or a larger image"
            )
    if abs(total - 1.0) > _SUM_TOL:
        warnings.warn(f"kernel sums to {total:.6g}, not 1; normalising it", UserWarning, stacklevel=2)
        arr = arr / total
    return arr


def read_kernel_file(path: Union[str, os.PathLike]) -> np.ndarray:
    """The raw float64 array of a kernel file: ``.mat`` (variable ``kernel`` or ``Kernel``) or ``.npy``.
    Not validated (see :func:`load_kernel`). ValueError names the file and the fix for anything else."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"kernel file not found: {p}")
    suffix = p.suffix.lower()
    if suffix == ".mat":
        import scipy.io

        try:
            data = scipy.io.loadmat(str(p))
        except NotImplementedError:
            raise ValueError(f"{p}: MATLAB v7.3 (HDF5) files are not supported; re-save it with -v7") from None
        except Exception as exc:  # scipy's MatReadError, ValueError, struct errors on a non-MATLAB file
            raise ValueError(f"{p} is not a MATLAB .mat file ({exc}); save the kernel with scipy.io.savemat or "
                             "MATLAB's save -v7, or as a .npy array") from None
        for key in ("kernel", "Kernel"):
            if key in data:
                return np.asarray(data[key], dtype=np.float64)
        keys = sorted(k for k in data if not k.startswith("__"))
        raise ValueError(f"{p}: no 'kernel' or 'Kernel' variable in the .mat file; it has {keys}")
    if suffix == ".npy":
        try:
            arr = np.load(p, allow_pickle=False)
        except Exception as exc:  # text files, pickles, truncated arrays
            raise ValueError(f"{p} is not a .npy array file ({type(exc).__name__}); save the kernel with "
                             "numpy.save('kernel.npy', k)") from None
        return np.asarray(arr, dtype=np.float64)
    raise ValueError(f"{p}: unsupported kernel file type {suffix!r}; use .mat (key 'kernel'/'Kernel') or .npy")


def load_kernel(path: Union[str, os.PathLike]) -> np.ndarray:
    """Load a kernel from ``.mat`` (key ``kernel`` or ``Kernel``) or ``.npy``; validated, float64."""
    return validate_kernel(read_kernel_file(path))


@dataclass(frozen=True, eq=False)
class KernelSpec:
    """A degradation: blur ``kernel`` (None = plain antialiased bicubic) and subsampling ``ds_method``."""

    kernel: np.ndarray | None
    ds_method: str = "direct"
    name: str | None = field(default=None)

    def __post_init__(self) -> None:
        if self.ds_method not in DS_METHODS:
            raise ValueError(f"ds_method must be one of {DS_METHODS}; got {self.ds_method!r}")
        if self.kernel is not None:
            k = validate_kernel(self.kernel)
            k.setflags(write=False)
            object.__setattr__(self, "kernel", k)

    def __repr__(self) -> str:
        shape = None if self.kernel is None else self.kernel.shape
        return f"KernelSpec(name={self.name!r}, ds_method={self.ds_method!r}, kernel_shape={shape})"


def named_kernel(name: str) -> KernelSpec:
    """A test kernel of the MZSR paper's Table 2: ``gd0.2``, ``gd2.0``, ``gdani`` or ``gb1.3`` (21×21)."""
    key = str(name).strip().lower()
    if key not in _NAMED:
        raise ValueError(f"unknown kernel name {name!r}; known names: {', '.join(KERNEL_NAMES)}")
    kind, params, ds = _NAMED[key]
    if kind == "iso":
        k = gaussian_kernel(NAMED_KERNEL_SIZE, params[0] * np.eye(2))
    else:
        k = anisotropic_gaussian(NAMED_KERNEL_SIZE, *params)
    return KernelSpec(kernel=k, ds_method=ds, name=key)


def resolve_kernel(spec: Any, ds_method: str | None = None) -> KernelSpec:
    """Turn a kernel given in any accepted form into a :class:`KernelSpec`.

    ``spec``: a KernelSpec, a Table-2 name, ``None``/``'bicubic'`` (plain bicubic), a ``.mat``/``.npy``
    path, or a 2-D array/tensor. ``ds_method`` overrides the spec's subsampling (default: the named
    kernel's, else ``'direct'``).
    """
    if ds_method is not None and ds_method not in DS_METHODS:
        raise ValueError(f"ds_method must be one of {DS_METHODS}; got {ds_method!r}")
    if isinstance(spec, KernelSpec):
        return spec if ds_method is None else replace(spec, ds_method=ds_method)
    if spec is None:
        return KernelSpec(kernel=None, ds_method=ds_method or "bicubic", name="bicubic")
    if isinstance(spec, str):
        key = spec.strip().lower()
        if key in _PLAIN_BICUBIC:
            return KernelSpec(kernel=None, ds_method=ds_method or "bicubic", name="bicubic")
        if key in _NAMED:
            named = named_kernel(key)
            return named if ds_method is None else replace(named, ds_method=ds_method)
        if not Path(spec).is_file():
            raise ValueError(
                f"kernel {spec!r} is neither a known name ({', '.join(KERNEL_NAMES)}, 'bicubic') "
                "nor an existing .mat/.npy file"
            )
    if isinstance(spec, (str, os.PathLike)):
        return KernelSpec(kernel=load_kernel(spec), ds_method=ds_method or "direct", name=Path(spec).name)
    return KernelSpec(kernel=validate_kernel(spec), ds_method=ds_method or "direct", name=None)
