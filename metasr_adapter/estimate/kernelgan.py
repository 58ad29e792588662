"""Zero-shot blur-kernel estimation with an internal GAN, in the manner of KernelGAN.

Written from the paper (Bell-Kligler, Shocher, Irani, "Blind Super-Resolution Kernel Estimation using an
Internal-GAN", NeurIPS 2019), not from its code. The idea: the kernel that made the LR image is the one that,
applied to the LR image again (with the same subsampling), keeps the distribution of its patches. A
generator ``G`` downscales crops of the LR image; a patch discriminator ``D`` tells patches of ``G(LR)`` from
patches of the LR image. ``G`` is a deep *linear* network (convolutions without nonlinearities, the last one
with stride 2), so it is one blur + direct x2 subsampling, and the kernel is read out by passing a delta
through its layers. Kernel priors keep it a plausible blur: it sums to 1, has little mass near its
boundary, is sparse, has its centre of mass at the central pixel, and starts close to a bicubic kernel.

Differences from the paper, chosen to keep this affordable on a CPU (see :class:`KernelGANConfig`):

* 400 iterations by default, against the paper's 3000 (with the learning-rate decay moved to match);
* ``G`` and ``D`` see the luma channel (the paper feeds colour channels; the kernel is shared by them);
* the bicubic prior compares the kernel itself with a bicubic x2 kernel (the paper compares ``G``'s output
  with the bicubic downscaling of its input): the same pull at the start, without an alignment question;
* the kernel is centred on a pixel (not shifted by half a pixel for x2), because this project's direct
  subsampling keeps the top-left pixel of every 2×2 block (see :func:`~metasr_adapter.ops.degrade.degrade`);
* the sum-to-one and boundary priors weigh 10× the paper's 0.5: with few iterations the generator leaves
  stray taps far from the centre, and a strong boundary prior alone shrank the kernel's sum (measured);
* the kernel is the mean of the generator's kernels over the last quarter of the iterations (the mean of
  linear maps is a linear map), then negative taps are clipped, taps under 2% of the peak zeroed, and the
  result normalised.

Measured on crops of BSD100, Urban100 and the matplotlib photo blurred with known kernels (500 iterations;
``tests/test_estimate.py`` runs a cheaper 200): the estimate beats the bicubic start and, for wide kernels,
MZSR's default ``gd2.0``, but it is noisy: for kernels near ``gd2.0`` it was 1-3 dB (kernel PSNR) worse
than simply assuming ``gd2.0``.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..ops.degrade import cubic
from .checks import window_texture
from .kernel_metrics import center_of_mass, pad_to

__all__ = ["KernelGANConfig", "KernelGANResult", "LinearGenerator", "PatchDiscriminator", "kernelgan"]


@dataclass
class KernelGANConfig:
    """Settings of :func:`kernelgan`; the paper's values where they are affordable."""

    iters: int = 500                                   #: paper: 3000
    g_crop: int = 64                                   #: side of G's input crops (LR pixels); paper: 64
    g_kernels: tuple[int, ...] = (7, 5, 3, 1, 1, 1)   #: G's filter sizes: a 13×13 receptive field, as the paper
    g_width: int = 64                                  #: G's channels
    d_width: int = 64                                  #: D's channels
    d_kernel: int = 7                                  #: D's first filter, its receptive field (paper: 7×7)
    d_depth: int = 6                                   #: D's layers
    lr_g: float = 2e-4                                 #: Adam learning rates, betas (0.5, 0.999), as the paper
    lr_d: float = 2e-4
    decay_at: float = 0.75                             #: learning rates ×0.1 at this fraction of ``iters``
    w_sum: float = 5.0                                 #: weights of the kernel priors: sum and boundaries 10x the
    w_boundaries: float = 5.0                          #: paper's 0.5 (few iterations leave stray taps); others as it
    w_sparse: float = 5.0
    w_center: float = 1.0
    w_bicubic: float = 5.0
    bicubic_iters: float = 1 / 6                       #: fraction of ``iters`` with the bicubic prior (500/3000)
    sparse_power: float = 0.2
    ksize: int = 15                                    #: side of the returned kernel (>= G's receptive field)
    average_last: float = 0.25                         #: the kernel is averaged over this last fraction of iters
    zero_below: float = 0.02                           #: taps below this fraction of the peak are set to 0
    tol_change: float = 0.15                           #: "converged": kernel change across the averaged tail
    tol_center: float = 1.0                            #: ... centre of mass within this many pixels of the centre

    @property
    def receptive_field(self) -> int:
        """G's receptive field: the side of the kernel it applies."""
        return sum(self.g_kernels) - len(self.g_kernels) + 1

    def validate(self) -> "KernelGANConfig":
        if self.iters < 1 or self.g_crop < self.receptive_field + 2 * self.d_kernel:
            raise ValueError(f"iters={self.iters} must be >= 1 and g_crop={self.g_crop} >= "
                             f"{self.receptive_field + 2 * self.d_kernel} (G's field plus room for D)")
        if self.ksize < self.receptive_field or self.ksize % 2 == 0 or self.receptive_field % 2 == 0:
            raise ValueError(f"ksize={self.ksize} must be odd and >= G's receptive field {self.receptive_field} (odd)")
        return self


@dataclass
class KernelGANResult:
    """The estimated kernel, whether it settled, and the training curves."""

    kernel: np.ndarray
    converged: bool
    reason: str
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    raw: np.ndarray | None = None                     #: G's averaged kernel before post-processing

    @property
    def raw_sum(self) -> float:
        return float(self.raw.sum()) if self.raw is not None else 1.0


class LinearGenerator(nn.Module):
    """Deep linear downscaler: valid convolutions without bias or nonlinearity; the last has stride 2."""

    def __init__(self, kernels: tuple[int, ...] = (7, 5, 3, 1, 1, 1), width: int = 64, scale: int = 2) -> None:
        super().__init__()
        chans = [1] + [width] * (len(kernels) - 1) + [1]
        layers = [nn.Conv2d(chans[i], chans[i + 1], k, stride=scale if i == len(kernels) - 1 else 1, bias=False)
                  for i, k in enumerate(kernels)]
        self.layers = nn.ModuleList(layers)
        self.field = sum(kernels) - len(kernels) + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x

    def kernel(self) -> torch.Tensor:
        """The single (field × field) correlation kernel that the layers compose to (differentiable).

        A delta in the middle of a (2·field - 1)² image, passed through every layer at stride 1, comes out
        as the kernel flipped (the layers correlate); flipping it back gives the kernel.
        """
        r = self.field
        delta = torch.zeros(1, 1, 2 * r - 1, 2 * r - 1, dtype=self.layers[0].weight.dtype,
                            device=self.layers[0].weight.device)
        delta[..., r - 1, r - 1] = 1.0
        x = delta
        for layer in self.layers:
            x = F.conv2d(x, layer.weight)
        return x[0, 0].flip(0, 1)


class PatchDiscriminator(nn.Module):
    """Fully convolutional patch discriminator: one ``k``×``k`` layer (its receptive field), then 1×1
    layers with batch norm and ReLU, spectral normalisation throughout, and a per-pixel sigmoid."""

    def __init__(self, channels: int = 1, width: int = 64, kernel: int = 7, depth: int = 6) -> None:
        super().__init__()
        sn = nn.utils.parametrizations.spectral_norm
        mods: list[nn.Module] = [sn(nn.Conv2d(channels, width, kernel))]
        for _ in range(depth - 2):
            mods += [sn(nn.Conv2d(width, width, 1)), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        mods += [sn(nn.Conv2d(width, 1, 1)), nn.Sigmoid()]
        self.body = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def bicubic_kernel(size: int, scale: int = 2) -> np.ndarray:
    """An odd ``size``² bicubic downscaling kernel for ``scale`` centred on a pixel (the bicubic prior)."""
    d = np.arange(size) - (size - 1) / 2
    w = cubic(d / scale) / scale
    k = np.outer(w, w)
    return k / k.sum()


class _Priors:
    """The paper's kernel priors, as functions of the composed kernel."""

    def __init__(self, r: int, cfg: KernelGANConfig, dtype: torch.dtype, device: torch.device | None = None) -> None:
        c = (r - 1) / 2
        yy, xx = torch.meshgrid(torch.arange(r, dtype=dtype, device=device), torch.arange(r, dtype=dtype, device=device),
                                indexing="ij")
        rho = torch.sqrt((yy - c) ** 2 + (xx - c) ** 2)
        free = r / 4  # no penalty within this radius; full weight from the edge's midpoints outwards
        self.mask = ((rho - free) / (c - free)).clamp(0, 1)
        self.yy, self.xx, self.c = yy, xx, c
        self.bicubic = torch.tensor(bicubic_kernel(r), dtype=dtype, device=device)
        self.cfg = cfg

    def __call__(self, k: torch.Tensor, with_bicubic: bool) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.cfg
        total = k.sum()
        terms = {
            "sum": (1 - total).abs(),
            "boundaries": (k.abs() * self.mask).sum(),
            "sparse": (k.abs() + 1e-8).pow(cfg.sparse_power).mean(),
            "center": torch.sqrt(((k * self.yy).sum() / total - self.c) ** 2
                                 + ((k * self.xx).sum() / total - self.c) ** 2 + 1e-12),
        }
        loss = (cfg.w_sum * terms["sum"] + cfg.w_boundaries * terms["boundaries"]
                + cfg.w_center * terms["center"])
        if with_bicubic:
            terms["bicubic"] = ((k - self.bicubic) ** 2).sum()
            loss = loss + cfg.w_bicubic * terms["bicubic"]
        else:  # sparsity works against the smooth bicubic start, so it joins afterwards
            loss = loss + cfg.w_sparse * terms["sparse"]
        return loss, {n: float(v.detach()) for n, v in terms.items()}


def _sampler(img: torch.Tensor, crop: int, generator: torch.Generator,
             device: torch.device | None = None) -> Callable[[], torch.Tensor]:
    """Random ``crop``² crops of a 1x1xHxW image, drawn with probability growing with their texture (as the
    paper samples crops by gradient magnitude), each position at least a little likely. The positions are
    drawn on the CPU (``generator``'s device); the crops are cut from a copy of the image on ``device``."""
    h, w = img.shape[-2:]
    energy = window_texture(img, crop).flatten()
    prob = energy.sqrt() + 0.1 * energy.sqrt().mean() + 1e-12
    prob = (prob / prob.sum()).float()
    cols = w - crop + 1
    src = img if device is None else img.to(device)

    def draw() -> torch.Tensor:
        idx = int(torch.multinomial(prob, 1, generator=generator))
        i, j = divmod(idx, cols)
        return src[..., i:i + crop, j:j + crop]

    return draw


def _postprocess(k: np.ndarray, cfg: KernelGANConfig) -> np.ndarray:
    """Clip negative taps, zero negligible ones, normalise, pad to ``ksize``."""
    k = np.clip(k, 0, None)
    if k.max() <= 0:
        raise FloatingPointError("KernelGAN produced an all-negative kernel")
    k[k < cfg.zero_below * k.max()] = 0
    return pad_to(k / k.sum(), cfg.ksize)


def kernelgan(lr_img: torch.Tensor, cfg: KernelGANConfig | None = None, *, seed: int = 0, progress: bool = False,
              callback: Callable[[dict[str, float]], None] | None = None,
              device: str | torch.device | None = None) -> KernelGANResult:
    """Estimate the x2 kernel of ``lr_img`` (the checked 1x3xHxW float64 image) with an internal GAN.

    ``device``: where G and D train (None = CUDA when available, else CPU). The crops are drawn and the
    networks initialised on the CPU from ``seed`` whatever the device, so devices differ only by rounding.
    """
    from ..devices import resolve_device

    cfg = (cfg or KernelGANConfig()).validate()
    dev = resolve_device(device)
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(int(seed))
    dtype = torch.float32
    w = torch.tensor([0.299, 0.587, 0.114], dtype=lr_img.dtype).view(1, 3, 1, 1)
    luma = (lr_img[:, :3] * w).sum(1, keepdim=True).to(dtype)
    h, wd = luma.shape[-2:]
    g_crop = min(cfg.g_crop, h, wd)
    g_crop -= (g_crop - cfg.receptive_field) % 2  # an even G output
    if g_crop < cfg.receptive_field + 2 * cfg.d_kernel:
        raise ValueError(f"LR image of {h}x{wd} pixels is too small for KernelGAN (needs {cfg.receptive_field + 2 * cfg.d_kernel} "
                         "pixels per side); use a larger image, or method='gaussian'")
    d_crop = (g_crop - cfg.receptive_field) // 2 + 1
    draw_g, draw_d = _sampler(luma, g_crop, gen, dev), _sampler(luma, d_crop, gen, dev)

    with torch.random.fork_rng(devices=[]):  # seeded initialisation, the caller's global RNG untouched
        torch.manual_seed(int(seed))
        G = LinearGenerator(cfg.g_kernels, cfg.g_width)
        D = PatchDiscriminator(1, cfg.d_width, cfg.d_kernel, cfg.d_depth)
    G, D = G.to(dev), D.to(dev)
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr_g, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr_d, betas=(0.5, 0.999))
    priors = _Priors(cfg.receptive_field, cfg, dtype, dev)
    decay_iter = int(cfg.decay_at * cfg.iters)
    bicubic_until = int(round(cfg.bicubic_iters * cfg.iters))
    history: list[dict[str, float]] = []
    snapshots: list[tuple[int, np.ndarray]] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.iters, desc="estimate kernel (kernelgan)", unit="it", leave=False)
    try:
        with torch.inference_mode(False), torch.enable_grad():
            for it in range(cfg.iters):
                if it == decay_iter:
                    for opt in (opt_g, opt_d):
                        for group in opt.param_groups:
                            group["lr"] *= 0.1
                x, real = draw_g(), draw_d()
                fake = G(x)
                # D: real LR patches -> 1, G's downscaled patches -> 0 (least squares, as the paper's LSGAN)
                opt_d.zero_grad(set_to_none=True)
                d_real, d_fake = D(real), D(fake.detach())
                loss_d = 0.5 * (F.mse_loss(d_real, torch.ones_like(d_real)) + F.mse_loss(d_fake, torch.zeros_like(d_fake)))
                loss_d.backward()
                opt_d.step()
                # G: fool D, under the kernel priors
                opt_g.zero_grad(set_to_none=True)
                d_g = D(fake)
                loss_adv = F.mse_loss(d_g, torch.ones_like(d_g))
                k = G.kernel()
                loss_k, terms = priors(k, with_bicubic=it < bicubic_until)
                (loss_adv + loss_k).backward()
                opt_g.step()
                rec = {"iter": it, "loss_d": float(loss_d.detach()), "loss_g": float(loss_adv.detach()),
                       "loss_k": float(loss_k.detach()), **terms}
                if not all(math.isfinite(v) for v in rec.values()):
                    raise FloatingPointError(f"KernelGAN diverged at iteration {it} (losses {rec}); try another seed")
                history.append(rec)
                if it % 5 == 0 or it == cfg.iters - 1:
                    snapshots.append((it, k.detach().double().cpu().numpy().copy()))
                if bar is not None:
                    bar.update(1)
                    if it % 10 == 0:
                        bar.set_postfix(d=f"{rec['loss_d']:.3f}", g=f"{rec['loss_g']:.3f}")
                if callback is not None:
                    callback(rec)
    finally:
        if bar is not None:
            bar.close()
    tail = [kk for i, kk in snapshots if i >= (1 - cfg.average_last) * cfg.iters] or [snapshots[-1][1]]
    raw = np.mean(tail, axis=0)  # G is linear: the mean kernel is the kernel of the mean downscaler
    kernel = _postprocess(raw.copy(), cfg)
    reasons = []
    if len(tail) >= 4:  # the averaged kernel of the tail's first half against that of its second half
        half = len(tail) // 2
        a, b = np.mean(tail[:half], axis=0), np.mean(tail[half:], axis=0)
        change = float(np.linalg.norm(a - b) / max(np.linalg.norm(raw), 1e-12))
        if change > cfg.tol_change:
            reasons.append(f"the kernel still changed by {100 * change:.0f}% over the averaged last iterations "
                           f"(tolerance {100 * cfg.tol_change:.0f}%): run more iterations (iters=)")
    r, c = center_of_mass(kernel)
    off = math.hypot(r - (cfg.ksize - 1) / 2, c - (cfg.ksize - 1) / 2)
    if off > cfg.tol_center:
        reasons.append(f"the kernel's centre of mass is {off:.1f} px off its centre (tolerance {cfg.tol_center:g})")
    raw_sum = float(raw.sum())
    neg = float(-raw[raw < 0].sum() / max(raw[raw > 0].sum(), 1e-12))
    if abs(raw_sum - 1) > 0.2 or neg > 0.2:
        reasons.append(f"G's kernel is not a plausible blur (sum {raw_sum:.2f}, negative mass {100 * neg:.0f}%)")
    return KernelGANResult(kernel=kernel, converged=not reasons, reason="; ".join(reasons), history=history,
                           seconds=time.perf_counter() - t0, raw=raw)
