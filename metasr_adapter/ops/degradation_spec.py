"""One description of how an LR image was made, and the family of such degradations photos come from.

:class:`DegradationSpec` is the whole chain: blur and subsampling grid (a :class:`~.kernels.KernelSpec`:
``direct``, ``centred`` or ``bicubic``), Gaussian noise, 8-bit rounding, optional JPEG. The training
samplers, the son at test time, the estimator and the benchmarks all use it, and weights save the family
they were trained on (:class:`PhotoDegradations`) in their metadata.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

import numpy as np
import torch
from torch import Tensor

from .degrade import degrade
from .jpeg import jpeg_compress
from .kernels import DS_METHODS, KernelSpec, anisotropic_gaussian, resolve_kernel

__all__ = ["DegradationSpec", "PhotoDegradations", "gaussian_blur_kernel"]


def gaussian_blur_kernel(sigma_x: float, sigma_y: float | None = None, theta: float = 0.0,
                         size: int | None = None) -> np.ndarray:
    """An anisotropic Gaussian blur with standard deviations ``sigma_x``/``sigma_y`` (pixels) along the axes
    rotated by ``theta``; the odd size covers ±3σ (at least 3×3). σ = 0.2 is nearly a delta."""
    sy = sigma_x if sigma_y is None else sigma_y
    if not (sigma_x > 0 and sy > 0):
        raise ValueError(f"blur standard deviations must be > 0; got {sigma_x}, {sy}")
    if size is None:
        size = max(3, 2 * int(math.ceil(3.0 * max(sigma_x, sy))) + 1)
    return anisotropic_gaussian(int(size), float(theta), float(sigma_x) ** 2, float(sy) ** 2)


@dataclass(frozen=True, eq=False)
class DegradationSpec:
    """How an LR image came from its HR image: ``kernel`` (blur + grid), then Gaussian noise of std
    ``noise_std`` (on [0, 1]), then rounding to 8 bits, then JPEG at ``jpeg_quality`` (None = none).

    ``apply(hr, factor)`` makes the LR image; at test time the same call on the LR image makes its son.
    """

    kernel: KernelSpec
    noise_std: float = 0.0
    jpeg_quality: int | None = None
    #: where the values came from ("given", "estimated", "sampled"...), for printing and sidecars
    source: str = field(default="given")

    def __post_init__(self) -> None:
        if not isinstance(self.kernel, KernelSpec):
            object.__setattr__(self, "kernel", resolve_kernel(self.kernel))
        if not (math.isfinite(self.noise_std) and self.noise_std >= 0):
            raise ValueError(f"noise_std={self.noise_std!r} must be a finite number >= 0 (std on [0, 1] values)")
        if self.jpeg_quality is not None:
            q = self.jpeg_quality
            if isinstance(q, bool) or not isinstance(q, (int, np.integer)) or not 1 <= q <= 100:
                raise ValueError(f"jpeg_quality={q!r} must be an integer in 1..100, or None for no JPEG")
            object.__setattr__(self, "jpeg_quality", int(q))

    @property
    def grid(self) -> str:
        """The subsampling grid: ``direct``, ``centred`` or ``bicubic``."""
        return self.kernel.ds_method

    @torch.no_grad()
    def apply(self, x: Tensor, factor: float, *, generator: torch.Generator | None = None,
              quantize: bool = True) -> Tensor:
        """Degrade ``x`` (NCHW or CHW in [0, 1]) for x``factor`` SR: blur + grid, noise, 8-bit rounding
        (``quantize``; always with JPEG), JPEG. The noise draws from ``generator``."""
        y = degrade(x, None if self.kernel.kernel is None else self.kernel.kernel, factor, self.kernel.ds_method)
        if self.noise_std > 0:
            noise = torch.randn(y.shape, generator=generator, dtype=torch.float32).to(device=y.device, dtype=y.dtype)
            y = y + self.noise_std * noise
        y = y.clamp(0, 1)
        if self.jpeg_quality is not None and y.shape[-3] in (1, 3):
            return jpeg_compress(y, self.jpeg_quality)
        return (y * 255.0).round() / 255.0 if quantize else y

    def describe(self) -> str:
        """One line for people: grid, blur, noise, JPEG."""
        k = self.kernel
        if k.kernel is None:
            blur = "no extra blur"
        else:
            name = f" {k.name}" if k.name else ""
            blur = f"blur{name} {k.kernel.shape[0]}x{k.kernel.shape[1]} (σ≈{_kernel_sigma(k.kernel):.2f} px)"
        noise = f"noise σ={self.noise_std * 255:.1f}/255" if self.noise_std > 0 else "no noise"
        jpeg = f"JPEG q{self.jpeg_quality}" if self.jpeg_quality is not None else "no JPEG"
        return f"{k.ds_method} grid, {blur}, {noise}, {jpeg} ({self.source})"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the kernel as nested lists (None for plain resizing)."""
        k = self.kernel
        return {"grid": k.ds_method, "kernel": None if k.kernel is None else np.round(k.kernel, 8).tolist(),
                "kernel_name": k.name, "noise_std": self.noise_std, "jpeg_quality": self.jpeg_quality,
                "source": self.source}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "DegradationSpec":
        kernel = d.get("kernel")
        grid = d.get("grid", "direct")
        spec = KernelSpec(kernel=None if kernel is None else np.asarray(kernel, dtype=np.float64), ds_method=grid,
                          name=d.get("kernel_name"))
        return cls(spec, float(d.get("noise_std", 0.0)), d.get("jpeg_quality"), str(d.get("source", "given")))


def _kernel_sigma(k: np.ndarray) -> float:
    """The kernel's mean standard deviation over both axes (px), from its second moments."""
    k = np.asarray(k, dtype=np.float64)
    k = k / k.sum()
    ys, xs = np.mgrid[: k.shape[0], : k.shape[1]]
    my, mx = (k * ys).sum(), (k * xs).sum()
    var = (k * ((ys - my) ** 2 + (xs - mx) ** 2)).sum() / 2.0
    return float(math.sqrt(max(var, 0.0)))


@dataclass(frozen=True)
class PhotoDegradations:
    """The degradations real photos come from, as a distribution to train on (and to save with weights).

    One draw: a grid (``grid_probs`` over ``direct``/``centred``/``bicubic``); a Gaussian blur whose two
    standard deviations are log-uniform in ``sigma_range`` (anisotropic with ``aniso_prob``; on the bicubic
    grid only with ``bicubic_blur_prob``, since the resize filter already blurs); Gaussian noise with
    ``noise_prob``, std uniform in ``noise_range`` (in 0..255 units); JPEG with ``jpeg_prob``, quality
    uniform in ``jpeg_range``. Sharp kernels (σ = 0.2, variance 0.04) are in the support, unlike MZSR's.
    """

    grid_probs: tuple[float, float, float] = (0.3, 0.35, 0.35)
    sigma_range: tuple[float, float] = (0.2, 2.6)
    aniso_prob: float = 0.5
    bicubic_blur_prob: float = 0.5
    noise_prob: float = 0.4
    noise_range: tuple[float, float] = (1.0, 12.0)
    jpeg_prob: float = 0.6
    jpeg_range: tuple[int, int] = (40, 95)

    def __post_init__(self) -> None:
        p = np.asarray(self.grid_probs, dtype=np.float64)
        if p.shape != (3,) or np.any(p < 0) or not math.isclose(float(p.sum()), 1.0, rel_tol=1e-6):
            raise ValueError(f"grid_probs={self.grid_probs!r}: three probabilities (direct, centred, bicubic) summing to 1")
        lo, hi = self.sigma_range
        if not 0 < lo <= hi:
            raise ValueError(f"sigma_range={self.sigma_range!r}: need 0 < low <= high (pixels)")
        qlo, qhi = self.jpeg_range
        if not 1 <= qlo <= qhi <= 100:
            raise ValueError(f"jpeg_range={self.jpeg_range!r}: need 1 <= low <= high <= 100")
        nlo, nhi = self.noise_range
        if not 0 <= nlo <= nhi:
            raise ValueError(f"noise_range={self.noise_range!r}: need 0 <= low <= high (0..255 units)")
        for name in ("aniso_prob", "bicubic_blur_prob", "noise_prob", "jpeg_prob"):
            v = getattr(self, name)
            if not 0 <= v <= 1:
                raise ValueError(f"{name}={v!r} must be a probability in [0, 1]")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> "PhotoDegradations":
        d = dict(d or {})
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown photo-degradation setting(s) {sorted(unknown)}; known: "
                             f"{sorted(cls.__dataclass_fields__)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def _sigma(self, rng: np.random.RandomState) -> float:
        lo, hi = self.sigma_range
        return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))

    def sample(self, rng: np.random.RandomState) -> DegradationSpec:
        """One degradation, drawn with ``rng`` (a pure function of its state)."""
        grid = DS_METHODS[int(rng.choice(3, p=np.asarray(self.grid_probs)))]
        blurred = grid != "bicubic" or rng.uniform() < self.bicubic_blur_prob
        kernel = None
        if blurred:
            sx = self._sigma(rng)
            if rng.uniform() < self.aniso_prob:
                sy, theta = self._sigma(rng), float(rng.uniform(0, math.pi))
            else:
                sy, theta = sx, 0.0
            kernel = gaussian_blur_kernel(sx, sy, theta)
        noise = float(rng.uniform(*self.noise_range)) / 255.0 if rng.uniform() < self.noise_prob else 0.0
        jpeg = int(rng.randint(self.jpeg_range[0], self.jpeg_range[1] + 1)) if rng.uniform() < self.jpeg_prob else None
        return DegradationSpec(KernelSpec(kernel=kernel, ds_method=grid), noise, jpeg, source="sampled")
