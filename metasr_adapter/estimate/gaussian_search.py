"""Blur-kernel estimation by search over the anisotropic Gaussian family, scored by the meta-trained network.

For a candidate kernel ``k`` (MZSR's anisotropic Gaussian: variances ``λ1 ≥ λ2`` along the axes rotated by
``θ``, 15×15), the LR image is degraded into its son by ``k`` and direct x2 subsampling, the meta-trained
network takes a few adaptation steps on (son → LR) exactly as at test time, and the self-supervised loss
after them is the candidate's score. The kernel with the lowest score is the estimate.

Why this identifies the kernel: the network was meta-trained to restore images blurred by Gaussian kernels
of the training family, and adapts to a new one in a few steps. A son made with a too-narrow kernel is
sharper and aliased compared with what the network expects and it over-sharpens; one made with a too-wide
kernel has lost detail that a few steps cannot bring back. The score is lowest in between, near the true
kernel (measured in ``tests/test_estimate.py`` and ``benchmarks/blind.py``). The minimum is pulled towards
what the network was meta-trained on, and that shows in two ways (bundled ``mzsr_x2_direct``, measured on
photo crops): widths are drawn towards the middle of the family (a variance of 0.8 came out 1.4, one of
about 4 came out 3), and elongation is underestimated (a 4:1 kernel came out 1.4:1, with the right size
and roughly the right angle). What counts is the SR result: in the one case measured end to end (that 4:1
kernel on a BSD100 crop, 10 steps) it was 0.07 dB below the true kernel's; ``benchmarks/blind.py`` measures
it over many images.

Cost: every score runs ``steps`` forward/backward passes on ``crops`` textured crops of ``crop``² LR pixels
(batched), so it does not grow with the image. The search is coarse to fine: a grid of isotropic and
anisotropic candidates in (log λ1, log λ2, θ), then a compass search (shrinking steps) from the best
``starts`` of them. Candidates run one after another: on a CPU a ``vmap`` over candidates was no faster
than the loop (measured: 106 ms against 96 ms per candidate step), while the crops fill the batch.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from ..adapt.schedules import step_size
from ..adapt.step import autograd_ready, clone_weights, functional_loss, grad_mode, sgd_step
from ..adapters.contract import eval_mode
from ..ops.degrade import degrade, imresize
from ..ops.kernels import anisotropic_gaussian
from ..precision import autocast
from .checks import even_floor, textured_crops

__all__ = ["GaussianSearchConfig", "GaussianSearchResult", "gaussian_search", "canonical_params"]


@dataclass
class GaussianSearchConfig:
    """Settings of :func:`gaussian_search` (defaults: 40 scores, ~10 s for any image size on one CPU thread)."""

    ksize: int = 15                                   #: kernel side (MZSR's meta-training kernels are 15×15)
    steps: int = 3                                    #: adaptation steps before a candidate is scored
    crop: int = 48                                    #: LR crop side (pixels)
    crops: int = 4                                    #: textured crops scored together (one batch)
    margin: int = 4                                   #: crop border pixels left out of the loss
    var_range: tuple[float, float] = (0.2, 8.0)       #: variances searched
    coarse_vars: tuple[float, ...] = (0.5, 1.0, 2.0, 3.5, 6.0)  #: variances of the coarse grid
    coarse_ratios: tuple[float, ...] = (3.0,)         #: λ1/λ2 of the coarse anisotropic candidates
    coarse_angles: int = 4                            #: their orientations (evenly spaced in [0, π))
    starts: int = 2                                   #: coarse candidates the fine search starts from
    log_step: float = 0.35                            #: first step of log-variances in the fine search
    angle_step: float = math.pi / 8                   #: first step of θ in the fine search
    min_log_step: float = 0.05                        #: the fine search stops below this step
    max_evals: int = 40                               #: score budget (coarse + fine)
    min_contrast: float = 0.01                        #: relative spread of coarse scores below which it is "flat"
    stall_tol: float = 1e-3                           #: a last fine round that still improves more is "unfinished"

    def validate(self) -> "GaussianSearchConfig":
        if self.ksize < 3 or self.ksize % 2 == 0:
            raise ValueError(f"ksize={self.ksize}: give an odd kernel side >= 3, e.g. 15")
        if self.steps < 0 or self.crops < 1 or self.crop < 16 or self.margin < 0 or 2 * self.margin >= self.crop:
            raise ValueError(f"bad search settings: steps={self.steps} (>= 0), crops={self.crops} (>= 1), "
                             f"crop={self.crop} (>= 16), margin={self.margin} (< crop/2)")
        lo, hi = self.var_range
        if not 0 < lo < hi:
            raise ValueError(f"var_range={self.var_range}: give (low, high) variances with 0 < low < high")
        if self.max_evals < 1:
            raise ValueError(f"max_evals={self.max_evals} must be >= 1")
        return self


@dataclass
class GaussianSearchResult:
    """The best kernel, its parameters and every score taken."""

    kernel: np.ndarray
    params: dict[str, float]
    loss: float
    converged: bool
    reason: str
    history: list[dict[str, float]] = field(default_factory=list)
    crops: list[tuple[int, int]] = field(default_factory=list)
    seconds: float = 0.0


def canonical_params(l1: float, l2: float, theta: float) -> tuple[float, float, float]:
    """(λ1 ≥ λ2, θ in [0, π)) describing the same Gaussian; θ = 0 for (nearly) isotropic ones."""
    if l2 > l1:
        l1, l2, theta = l2, l1, theta + math.pi / 2
    theta = theta % math.pi
    if l1 / l2 < 1.02:
        theta = 0.0
    return float(l1), float(l2), float(theta)


class _Scorer:
    """Scores kernels: degrade the crops' windows, adapt ``steps`` steps on (son → LR), return the loss."""

    def __init__(self, msr, lr_img: torch.Tensor, corners: list[tuple[int, int]], cfg: GaussianSearchConfig) -> None:
        self.msr, self.cfg = msr, cfg
        s = int(msr.scale)
        c = cfg.crop
        # LR windows around each crop with room for the blur and the bicubic upsampling; even offsets keep
        # direct subsampling on the full image's grid
        pad = even_floor(cfg.ksize // 2 + 6) + 2
        h, w = lr_img.shape[-2:]
        self.s, self.pad, self.c = s, pad, c
        wins, inner = [], []
        for i, j in corners:
            top, left = max(0, i - pad), max(0, j - pad)
            top, left = top - top % s, left - left % s
            bottom, right = min(h, i + c + pad), min(w, j + c + pad)
            bottom, right = top + even_floor(bottom - top), left + even_floor(right - left)
            wins.append(lr_img[..., top:bottom, left:right])
            inner.append((i - top, j - left))
        self.windows, self.inner = wins, inner
        dev, dt = msr.device, msr.dtype
        self.targets = autograd_ready(torch.cat([lr_img[..., i:i + c, j:j + c] for i, j in corners]).to(dev, dt))
        self.names = list(msr.adapt_names)

    def inputs(self, kernel: np.ndarray) -> torch.Tensor:
        """The network's input for each crop's son (batched)."""
        msr, s, c = self.msr, self.s, self.c
        out = []
        with torch.no_grad():
            for win, (i, j) in zip(self.windows, self.inner):
                son = degrade(win, kernel, s, ds_method="direct").clamp(0, 1)
                if msr.upsample_input:
                    up = imresize(son, s, output_shape=win.shape[-2:])
                    out.append(up[..., i:i + c, j:j + c])
                else:
                    out.append(son[..., i // s:(i + c) // s, j // s:(j + c) // s])
        return autograd_ready(torch.cat(out).to(msr.device, msr.dtype))

    def __call__(self, kernel: np.ndarray) -> float:
        """The loss after ``steps`` adaptation steps on the crops' (son, LR) pairs: the test-time step
        (:func:`~metasr_adapter.adapt.step.sgd_step`) with the wrapper's loss, schedule and precision."""
        msr, m = self.msr, self.cfg.margin
        x, y = self.inputs(kernel), self.targets
        params = clone_weights(msr.model.named_parameters(), self.names)
        inner = (slice(None), slice(None), slice(m, y.shape[-2] - m), slice(m, y.shape[-1] - m))

        def cropped_loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            if out.shape[-2:] != target.shape[-2:]:
                raise ValueError(f"the network maps a {tuple(x.shape[-2:])} input to {tuple(out.shape[-2:])}, not the "
                                 f"{tuple(y.shape[-2:])} the x{self.s} estimate needs; check scale/upsample_input")
            return msr.loss_fn(out[inner], target[inner])

        def loss_at(weights: dict[str, torch.Tensor]) -> torch.Tensor:
            return functional_loss(msr.model, weights, x, y, loss_fn=cropped_loss)

        with eval_mode(msr.model):
            for t in range(self.cfg.steps):
                params, _ = sgd_step(params, self.names, loss_at, lambda name, t=t: step_size(msr.schedule, name, t),
                                     precision=msr.precision)
            with grad_mode(False), autocast(msr.precision, x.device.type):
                return float(loss_at(params))


def gaussian_search(msr, lr_img: torch.Tensor, cfg: GaussianSearchConfig | None = None, *, seed: int = 0,
                    progress: bool = False, callback: Callable[[dict[str, float]], None] | None = None
                    ) -> GaussianSearchResult:
    """Search (λ1, λ2, θ) for the kernel whose son the wrapper's network adapts to best.

    ``msr``: a :class:`~metasr_adapter.MetaSR` (its network, adapted parameters, loss and schedule are used;
    the network is not modified). ``lr_img``: the checked 1x3xHxW float64 LR image (see ``checks.prepare_image``).
    """
    cfg = (cfg or GaussianSearchConfig()).validate()
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(int(seed))
    h, w = lr_img.shape[-2:]
    crop = even_floor(min(cfg.crop, h, w))
    run_cfg = cfg if crop == cfg.crop else GaussianSearchConfig(**{**cfg.__dict__, "crop": crop})
    corners = textured_crops(lr_img, crop, cfg.crops, generator=gen)
    scorer = _Scorer(msr, lr_img, corners, run_cfg)
    lo, hi = cfg.var_range
    cache: dict[tuple[float, float, float], float] = {}
    history: list[dict[str, float]] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.max_evals, desc="estimate kernel (gaussian)", unit="cand", leave=False)

    def clip(v: float) -> float:
        return float(min(hi, max(lo, v)))

    def score(l1: float, l2: float, theta: float) -> float:
        l1, l2, theta = canonical_params(clip(l1), clip(l2), theta)
        key = (round(math.log(l1), 4), round(math.log(l2), 4), round(theta, 4))
        if key in cache:
            return cache[key]
        if len(cache) >= cfg.max_evals:
            return math.inf
        value = scorer(anisotropic_gaussian(cfg.ksize, theta, l1, l2))
        if not math.isfinite(value):
            value = math.inf
        cache[key] = value
        rec = {"l1": l1, "l2": l2, "theta": theta, "loss": value}
        history.append(rec)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{value:.5f}", l1=f"{l1:.2f}", l2=f"{l2:.2f}")
        if callback is not None:
            callback(rec)
        return value

    try:
        # coarse 1: isotropic widths; coarse 2: elongated kernels of the best width's area, several orientations
        for v in cfg.coarse_vars:
            score(v, v, 0.0)
        v = min(history, key=lambda r: r["loss"])["l1"]
        for ratio in cfg.coarse_ratios:
            for a in range(cfg.coarse_angles):
                score(v * math.sqrt(ratio), v / math.sqrt(ratio), math.pi * a / cfg.coarse_angles)
        coarse_losses = [r["loss"] for r in history if math.isfinite(r["loss"])]
        ranked = sorted(history, key=lambda r: r["loss"])
        # fine: compass search from the best distinct coarse candidates in (size, elongation, θ) =
        # ((log λ1 + log λ2)/2, (log λ1 - log λ2)/2, θ); a move that improves is taken at once
        unfinished = False
        for n_start, start in enumerate(ranked[: cfg.starts]):
            p = [(math.log(start["l1"]) + math.log(start["l2"])) / 2, (math.log(start["l1"]) - math.log(start["l2"])) / 2,
                 start["theta"]]
            cur = start["loss"]
            ls, ts, last_gain = cfg.log_step, cfg.angle_step, 0.0
            while ls >= cfg.min_log_step and len(cache) < cfg.max_evals:
                moved = False
                for d in ((ls, 0, 0), (-ls, 0, 0), (0, ls, 0), (0, -ls, 0), (0, 0, ts), (0, 0, -ts)):
                    q = [p[0] + d[0], max(0.0, p[1] + d[1]), p[2] + d[2]]
                    if (d[2] and q[1] < 0.01) or q == p:  # θ means nothing for an isotropic kernel
                        continue
                    val = score(math.exp(q[0] + q[1]), math.exp(q[0] - q[1]), q[2])
                    if val < cur:
                        last_gain = (cur - val) / cur
                        p, cur, moved = q, val, True
                        break
                if not moved and len(cache) < cfg.max_evals:
                    ls, ts, last_gain = ls / 2, ts / 2, 0.0
            if n_start == 0:  # the budget ended the main search while it still gained
                unfinished = ls >= cfg.min_log_step and last_gain > cfg.stall_tol
        best_rec = min(history, key=lambda r: r["loss"])
    finally:
        if bar is not None:
            bar.close()

    l1, l2, theta = best_rec["l1"], best_rec["l2"], best_rec["theta"]
    kernel = anisotropic_gaussian(cfg.ksize, theta, l1, l2)
    reasons = []
    if not math.isfinite(best_rec["loss"]):
        reasons.append("every candidate's loss was non-finite")
    if coarse_losses:
        spread = (max(coarse_losses) - min(coarse_losses)) / max(min(coarse_losses), 1e-12)
        if spread < cfg.min_contrast:
            reasons.append(f"the loss hardly depends on the kernel (spread {100 * spread:.2f}% < "
                           f"{100 * cfg.min_contrast:g}%): too little detail to identify the blur")
    edge = [f"λ{i}={v:.3g}" for i, v in ((1, l1), (2, l2)) if v <= lo * 1.01 or v >= hi / 1.01]
    if edge:
        reasons.append(f"the best kernel lies on the edge of the searched variances {cfg.var_range} "
                       f"({', '.join(edge)}): the true blur may lie outside the Gaussian family searched")
    if unfinished:
        reasons.append(f"the search ran out of its {cfg.max_evals} scores while still improving (raise max_evals)")
    return GaussianSearchResult(
        kernel=kernel, params={"l1": l1, "l2": l2, "theta": theta}, loss=float(best_rec["loss"]),
        converged=not reasons, reason="; ".join(reasons), history=history, crops=corners,
        seconds=time.perf_counter() - t0)
