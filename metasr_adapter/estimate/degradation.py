"""Estimate a photo's whole degradation: JPEG quality, noise level, and blur on a sub-pixel grid.

* **JPEG quality**: read from the file's quantisation tables when the photo is a JPEG file
  (:func:`~metasr_adapter.ops.jpeg.read_jpeg_quality`); an array carries no such record, so the caller
  passes it (``jpeg_quality=``) or none is assumed.
* **Noise**: the standard deviation of the finest Haar detail band in the flattest blocks
  (:func:`estimate_noise_std`); below 1.5 grey levels it is taken as 0.
* **Blur and grid**: the grid (direct or centred sampling) is a half-pixel translation, which no
  estimator can read from the image content. Photos are resized with centred filters, so the photo path
  assumes a centred grid unless told otherwise (``grid=``). The blur on that grid is searched over a few
  candidates (a bicubic resize and Gaussians from sharp to blurry), each scored like
  :mod:`~metasr_adapter.estimate.gaussian_search`: the son made by the candidate (with the estimated noise
  and JPEG), a few adaptation steps of the network on textured crops, then its self-supervised loss.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from ..ops.degradation_spec import DegradationSpec, gaussian_blur_kernel
from ..ops.kernels import DS_METHODS, KernelSpec
from .checks import textured_crops

__all__ = ["DegradationEstimate", "estimate_noise_std", "estimate_degradation", "BLUR_CANDIDATES"]

#: blur standard deviations (pixels) tried on a centred or direct grid, besides a plain bicubic resize
BLUR_CANDIDATES: tuple[float, ...] = (0.2, 0.6, 1.0, 1.5, 2.2)
#: noise below this std (on [0, 1]) counts as none: texture and 8-bit rounding alone read up to ~1.2/255
NOISE_FLOOR = 1.5 / 255.0
#: what the block-std quantile of :func:`estimate_noise_std` reads for pure Gaussian noise of std 1
_QUANTILE_FACTOR = 0.89


@dataclass
class DegradationEstimate:
    """An estimated :class:`~metasr_adapter.ops.degradation_spec.DegradationSpec` and how it was found."""

    spec: DegradationSpec
    seconds: float
    #: per-candidate scores: {"candidate": text, "loss": float}
    candidates: list[dict[str, Any]] = field(default_factory=list)
    #: the raw noise estimate before the floor, and where the JPEG quality came from
    noise_raw: float = 0.0
    jpeg_source: str = "none"

    def summary(self) -> str:
        return f"{self.spec.describe()}; estimated in {self.seconds:.1f} s"

    def to_dict(self) -> dict[str, Any]:
        return {"degradation": self.spec.to_dict(), "seconds": self.seconds, "candidates": self.candidates,
                "noise_raw": self.noise_raw, "jpeg_source": self.jpeg_source}


def estimate_noise_std(x: torch.Tensor, block: int = 8, quantile: float = 0.1) -> float:
    """Noise std (on [0, 1]) of a 1xCxHxW image, per channel and averaged.

    The finest Haar detail band (HH) holds noise plus texture; its standard deviation in ``block``² blocks
    is measured and the ``quantile`` of those (the flattest blocks) taken, divided by what that quantile
    gives for pure Gaussian noise (0.89 for 64-sample blocks at the 10th percentile, measured in
    ``tests/test_photo.py``). Textured images everywhere (e.g. facades) still read high.
    """
    vals = []
    for c in range(x.shape[1]):
        y = x[0, c].double()
        h, w = (y.shape[0] // 2) * 2, (y.shape[1] // 2) * 2
        hh = (y[0:h:2, 0:w:2] - y[0:h:2, 1:w:2] - y[1:h:2, 0:w:2] + y[1:h:2, 1:w:2]) / 2.0
        bh, bw = hh.shape[0] // block, hh.shape[1] // block
        if bh * bw < 4:
            raise ValueError(f"image of {h}x{w} pixels is too small to estimate its noise (needs "
                             f"{4 * block}x{4 * block})")
        blocks = hh[: bh * block, : bw * block].reshape(bh, block, bw, block).permute(0, 2, 1, 3).reshape(-1, block * block)
        vals.append(float(torch.quantile(blocks.std(dim=1), quantile)))
    return float(np.mean(vals)) / _QUANTILE_FACTOR


def _candidates(grid: str, sigmas: Sequence[float]) -> list[KernelSpec]:
    specs = [KernelSpec(kernel=None, ds_method="bicubic", name="bicubic")] if grid != "direct" else []
    for s in sigmas:
        specs.append(KernelSpec(kernel=gaussian_blur_kernel(s), ds_method=grid, name=f"gauss{s:g}"))
    return specs


def estimate_degradation(
    lr_img: Any,
    msr: Any,
    *,
    jpeg_quality: int | None = None,
    grid: str = "centred",
    noise_std: float | None = None,
    sigmas: Sequence[float] = BLUR_CANDIDATES,
    steps: int = 2,
    crop: int = 64,
    crops: int = 4,
    seed: int = 0,
) -> DegradationEstimate:
    """The degradation of ``lr_img`` for :class:`~metasr_adapter.MetaSR` ``msr``'s network.

    ``jpeg_quality``: the file's JPEG quality (None: not a JPEG). ``grid``: ``'centred'`` (photos; the
    default) or ``'direct'`` (MZSR-style inputs). ``noise_std``: give it to skip the noise estimate.
    The blur is the candidate (``sigmas`` and, on a centred grid, a plain bicubic resize) whose son the
    network fits best after ``steps`` adaptation steps on ``crops`` textured ``crop``² crops.
    """
    from ..ops.imageio import to_tensor

    if grid not in ("centred", "direct"):
        raise ValueError(f"grid={grid!r}: the photo path estimates blur on a 'centred' (photos) or 'direct' "
                         f"(MZSR-style) grid; for a bicubic resize, pass grid='centred' (bicubic is a candidate)")
    assert set(DS_METHODS) >= {"centred", "direct"}
    t0 = time.perf_counter()
    x, _, _ = to_tensor(lr_img, channels=3, dtype=torch.float64, device="cpu")
    h, w = x.shape[-2:]
    if noise_std is not None:
        noise_raw = float(noise_std)
    elif min(h, w) >= 64:
        noise_raw = estimate_noise_std(x)
    else:  # too few blocks to tell noise from texture
        noise_raw = 0.0
    noise = noise_raw if noise_raw >= NOISE_FLOOR else 0.0
    jpeg_source = "given" if jpeg_quality is not None else "none"
    side = min(crop, (min(h, w) // 16) * 16)
    if side < 32:  # too small to score candidates: the family's middle
        spec = DegradationSpec(KernelSpec(kernel=None, ds_method="bicubic", name="bicubic"), noise, jpeg_quality,
                               source="assumed (image too small to estimate the blur)")
        return DegradationEstimate(spec, time.perf_counter() - t0, [], noise_raw, jpeg_source)
    gen = torch.Generator().manual_seed(seed)
    # crops on the 8x8 JPEG block grid (align 16 keeps the son's blocks aligned too)
    corners = textured_crops(x, side, crops, generator=gen, align=16)
    patches = [x[..., i : i + side, j : j + side].to(msr.dtype) for i, j in corners]
    results = []
    for cand in _candidates(grid, sigmas):
        spec = DegradationSpec(cand, noise, jpeg_quality, source="estimated")
        loss = float(np.mean([_score(msr, p, spec, steps, seed) for p in patches]))
        results.append({"candidate": spec.describe().split(" (")[0], "kernel": cand.name, "loss": loss})
    best = int(np.argmin([r["loss"] for r in results]))
    cand = _candidates(grid, sigmas)[best]
    spec = DegradationSpec(cand, noise, jpeg_quality, source="estimated")
    return DegradationEstimate(spec, time.perf_counter() - t0, results, noise_raw, jpeg_source)


def _score(msr: Any, patch: torch.Tensor, spec: DegradationSpec, steps: int, seed: int) -> float:
    """Self-supervised loss after ``steps`` adaptation steps on one crop."""
    session = msr.start(patch, spec, seed=seed)
    for _ in range(steps):
        session.step()
    value = session.loss()
    return value if math.isfinite(value) else float("inf")
