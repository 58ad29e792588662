"""The photo path: ``upscale_photo(img)`` estimates the photo's degradation, adapts, and checks itself.

1. **Estimate** the whole degradation (:func:`~metasr_adapter.estimate.degradation.estimate_degradation`):
   JPEG quality (from the file), noise, blur on a centred grid.
2. **Adapt** the network on the son → LR task of most of the image (the son made by the estimated chain,
   JPEG included, so compression is not learnt as detail), for ``steps`` steps.
3. **Check**: a band of the LR image (the most textured quarter along one side) is held out of the
   adaptation. Its own son → LR loss is measured with the adapted and with the unadapted weights; the
   adapted weights are used only when they fit the held-out band better by ``margin`` (relative).
   Otherwise the unadapted network's output is returned, so the default is never worse than the plain
   network on the image's own task.

The path lives above ``adapt/`` (the wrapper) and ``estimate/`` (the estimators), and uses both.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from ..adapt.metasr import MetaSR
from ..adapt.session import AdaptStep
from ..estimate.degradation import DegradationEstimate, estimate_degradation
from ..ops.degradation_spec import DegradationSpec
from ..ops.imageio import to_tensor

__all__ = ["PHOTO_WEIGHTS", "default_photo_weights", "GRID_SPECIALISTS", "PHOTO_STEPS", "PhotoInfo", "upscale_photo", "load_photo_model",
           "load_grid_specialists", "photo_precision"]

#: bundled weights of the photo path, best first (the first one installed is used)
PHOTO_WEIGHTS = ("idn_x2_photo", "idn_x2_bicubic")
#: bundled weights trained for one sampling grid alone: when the estimate finds that a photo was made on
#: that grid with no extra blur (a plain resize), the network trained for exactly that degradation is used.
#: Measured on BSD100 (benchmarks/real_photos.py), idn_x2_bicubic beats the photo weights by ~1 dB on plain
#: bicubic resizes, and the photo weights win on blurred or noisy ones.
GRID_SPECIALISTS = {"bicubic": "idn_x2_bicubic"}
#: adaptation steps of the photo path
PHOTO_STEPS = 5
#: LR pixels per adaptation step (a random crop of the training region above it)
PHOTO_MAX_PIXELS = 192 * 192
#: held-out share of the LR image (a band along one side)
HOLDOUT = 0.25
#: the adapted weights must fit the held-out band this much better (relative loss) to be used
MARGIN = 0.01
#: smallest LR side on which the photo path adapts (smaller images get the unadapted network)
MIN_ADAPT_SIDE = 48


@dataclass
class PhotoInfo:
    """What the photo path did: weights, estimate, the choice between adapted and plain, and why."""

    weights: str
    estimate: DegradationEstimate | None
    steps: int
    choice: str = "plain"
    reason: str = ""
    heldout_loss_plain: float | None = None
    heldout_loss_adapted: float | None = None
    holdout_band: str | None = None
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    precision: str = "fp32"
    #: why a grid specialist replaced the photo weights (None: it did not)
    routed: str | None = None

    def summary_lines(self) -> list[str]:
        lines = [f"weights: {self.weights} ({self.precision})" + (f": {self.routed}" if self.routed else "")]
        if self.estimate is not None:
            lines.append(f"degradation: {self.estimate.summary()}")
        lines.append(f"choice: {self.choice} ({self.reason})")
        return lines

    def to_dict(self) -> dict[str, Any]:
        return {"weights": self.weights, "estimate": None if self.estimate is None else self.estimate.to_dict(),
                "steps": self.steps, "choice": self.choice, "reason": self.reason,
                "heldout_loss_plain": self.heldout_loss_plain, "heldout_loss_adapted": self.heldout_loss_adapted,
                "holdout_band": self.holdout_band, "losses": self.losses, "seconds": self.seconds,
                "precision": self.precision, "routed": self.routed}


def _precision_label(msr: MetaSR) -> str:
    """What the report says about the arithmetic: the precision, and Winograd when its kernels ran."""
    return msr.precision + (", Winograd" if msr.conv_algorithm == "winograd" else "")


def photo_precision(device: Any = None) -> str:
    """The photo path's default precision: ``'bf16'`` where bf16 autocast is fast (CPUs with AVX512-BF16 or AMX,
    GPUs), else ``'fp32'``. On BSD100 (``benchmarks/results/real_photos/precision/``) bf16 ran the default
    path 1.7x faster (median) on an AVX512-BF16 EPYC, and no image moved by more than 0.003 dB."""
    from ..devices import resolve_device
    from ..precision import auto_precision

    return auto_precision(resolve_device(device))  # None: CUDA when available, as the model


def default_photo_weights(arch: str | None = None) -> str | None:
    """The photo path's default bundled weights: the first of :data:`PHOTO_WEIGHTS` that is installed (of
    architecture ``arch`` when given); None when none is."""
    from ..io.pretrained import BUNDLED_WEIGHTS

    return next((w for w in PHOTO_WEIGHTS if w in BUNDLED_WEIGHTS and arch in (None, BUNDLED_WEIGHTS[w].arch)), None)


def load_photo_model(weights: str | None = None, *, device: Any = None, precision: str = "auto",
                     conv_algorithm: str = "direct") -> tuple[MetaSR, str]:
    """The photo path's :class:`MetaSR` (bundled ``weights``, default: the first of :data:`PHOTO_WEIGHTS`
    that is installed), with the adaptation budget of the photo path; and the weights' name. ``precision``
    ``'auto'``: :func:`photo_precision`; ``conv_algorithm``: MetaSR's."""
    from ..adapt.metasr import load_pretrained

    if precision == "auto":
        precision = photo_precision(device)

    if weights is None:
        weights = default_photo_weights()
        if weights is None:
            raise ValueError(f"none of the photo weights {PHOTO_WEIGHTS} is installed; reinstall metasr_adapter "
                             "or pass your own MetaSR")
    msr = load_pretrained(weights, device=device, precision=precision, max_pixels=PHOTO_MAX_PIXELS, tile=512,
                          conv_algorithm=conv_algorithm)
    return msr, weights


def load_grid_specialists(*, device: Any = None, precision: str = "auto",
                          conv_algorithm: str = "direct") -> dict[str, tuple[MetaSR, str]]:
    """The installed :data:`GRID_SPECIALISTS`, grid → (MetaSR, weights name), ready for ``upscale_photo``."""
    from ..io.pretrained import BUNDLED_WEIGHTS

    return {grid: load_photo_model(name, device=device, precision=precision, conv_algorithm=conv_algorithm)
            for grid, name in GRID_SPECIALISTS.items() if name in BUNDLED_WEIGHTS}


def _bands(h: int, w: int) -> dict[str, tuple[slice, slice]]:
    """The four edge bands of ``HOLDOUT`` share (top, bottom, left, right), as (rows, cols) slices."""
    bh, bw = max(1, round(h * HOLDOUT)), max(1, round(w * HOLDOUT))
    return {"top": (slice(0, bh), slice(0, w)), "bottom": (slice(h - bh, h), slice(0, w)),
            "left": (slice(0, h), slice(0, bw)), "right": (slice(0, h), slice(w - bw, w))}


def _rest(h: int, w: int, band: str) -> tuple[slice, slice]:
    bh, bw = max(1, round(h * HOLDOUT)), max(1, round(w * HOLDOUT))
    return {"top": (slice(bh, h), slice(0, w)), "bottom": (slice(0, h - bh), slice(0, w)),
            "left": (slice(0, h), slice(bw, w)), "right": (slice(0, h), slice(0, w - bw))}[band]


def _texture(x: torch.Tensor) -> float:
    d1 = (x[..., 1:, :] - x[..., :-1, :]).abs().mean() if x.shape[-2] > 1 else x.new_zeros(())
    d2 = (x[..., :, 1:] - x[..., :, :-1]).abs().mean() if x.shape[-1] > 1 else x.new_zeros(())
    return float(d1 + d2)


def upscale_photo(
    lr_img: np.ndarray | torch.Tensor,
    msr: MetaSR | None = None,
    *,
    steps: int = PHOTO_STEPS,
    jpeg_quality: int | None = None,
    degradation: DegradationSpec | None = None,
    grid: str = "centred",
    weights_name: str | None = None,
    margin: float = MARGIN,
    seed: int = 0,
    specialists: dict[str, tuple[MetaSR, str]] | None = None,
    callback: Callable[[AdaptStep], None] | None = None,
    return_info: bool = False,
):
    """Upscale a photo: estimate its degradation, adapt on most of it, keep the adaptation only if a held-out
    band confirms it.

    Args:
        lr_img: the photo (HxWx3 uint8/float numpy, or a CxHxW / 1xCxHxW float tensor).
        msr: the wrapper to adapt (default: :func:`load_photo_model`).
        steps: adaptation steps (0 = the plain network).
        jpeg_quality: the photo's JPEG quality (``read_jpeg_quality(path)`` reads it from a file).
        degradation: skip the estimate and use this one.
        grid: the sampling grid assumed by the estimate: ``'centred'`` (photos) or ``'direct'``.
        margin: relative held-out improvement the adapted weights need to be used.
        seed: crops and noise draws.
        specialists: grid → (MetaSR, name) of networks trained for that grid alone, used instead of ``msr``
            when the estimate finds a plain resize on that grid (default: :func:`load_grid_specialists` when
            ``msr`` is None, none when a ``msr`` is given).
        callback: called after every adaptation step.
        return_info: also return a :class:`PhotoInfo`.

    Returns the SR image in the input's format; ``(sr, info)`` with ``return_info``.
    """
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
        raise ValueError(f"steps={steps!r} must be a non-negative integer")
    if not (isinstance(margin, (int, float)) and 0 <= margin < 1):
        raise ValueError(f"margin={margin!r} must be a relative loss improvement in [0, 1), e.g. 0.01")
    t0 = time.perf_counter()
    if msr is None:
        msr, weights_name = load_photo_model()
        if specialists is None:
            specialists = load_grid_specialists(device=msr.device, precision=msr.precision,
                                                conv_algorithm=msr.conv_algorithm)
    info = PhotoInfo(weights=weights_name or type(msr.model).__name__, estimate=None, steps=steps,
                     precision=_precision_label(msr))
    x, _, _ = to_tensor(lr_img, channels=msr.in_channels, dtype=msr.dtype, device=msr.device)
    h, w = x.shape[-2:]
    if degradation is None:
        info.estimate = estimate_degradation(lr_img, msr, jpeg_quality=jpeg_quality, grid=grid, seed=seed)
        degradation = info.estimate.spec
        plain_resize = degradation.kernel.kernel is None  # no blur beyond the grid's own filter
        if specialists and plain_resize and degradation.grid in specialists:
            msr, name = specialists[degradation.grid]
            info.weights, info.precision = name, _precision_label(msr)
            info.routed = f"the estimate is a plain {degradation.grid} resize, the degradation {name} was trained for"
    full = msr.start(lr_img, degradation, seed=seed)
    if steps == 0 or min(h, w) < MIN_ADAPT_SIDE:
        info.reason = "no adaptation asked (steps=0)" if steps == 0 else \
            f"the {h}x{w} image is too small to adapt and check (needs {MIN_ADAPT_SIDE} px a side)"
    else:
        bands = _bands(h, w)
        band = max(bands, key=lambda b: _texture(x[(..., *bands[b])]))
        info.holdout_band = band
        train = msr.start(x[(..., *_rest(h, w, band))], degradation, seed=seed)
        held = msr.start(x[(..., *bands[band])], degradation, seed=seed + 1)
        info.heldout_loss_plain = held.loss()
        for _ in range(steps):
            rec = train.step()
            info.losses.append(rec.loss)
            if callback is not None:
                callback(rec)
        info.heldout_loss_adapted = held.loss(train.params)
        plain, adapted = info.heldout_loss_plain, info.heldout_loss_adapted
        gain = (plain - adapted) / plain if plain > 0 and math.isfinite(adapted) else -math.inf
        if gain >= margin:
            info.choice = "adapted"
            full.params = train.params
            full.steps_done = steps
            info.reason = f"held-out {band} band: loss {plain:.5f} -> {adapted:.5f} ({100 * gain:+.1f}%)"
        else:
            info.reason = (f"held-out {band} band: adapted loss {adapted:.5f} vs plain {plain:.5f} "
                           f"({100 * gain:+.1f}%, needs {100 * margin:.0f}%): kept the plain network")
    sr = full.result()
    info.seconds = time.perf_counter() - t0
    return (sr, info) if return_info else sr
