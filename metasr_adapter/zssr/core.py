"""Zero-Shot SR (Shocher, Cohen & Irani, CVPR 2018) in PyTorch.

An image-specific network is trained from scratch on the LR image alone: "HR fathers" are the
LR image and downscaled copies of it (picked with probability growing with their size), "LR
sons" are the fathers degraded by the given kernel (or bicubic), and the network learns to map
the bicubic-upsampled son back to its father. Training uses random 128×128 crops, random
rotations/flips, optional noise on the sons, an L1 loss with Adam from 1e-3, and ZSSR's
linear-fit learning-rate policy (:mod:`metasr_adapter.zssr.lr_policy`). The trained network is then
applied to the LR image itself, with the 8-way geometric self-ensemble (median) and iterative
back-projection. Scale factors can be gradual: each stage's output joins the fathers.
The settings (:class:`ZSSRConfig`, presets) live in :mod:`.config`, the kernel handling in :mod:`.kernels`.

Differences from the official TensorFlow code, all deliberate:

* fathers are a fixed pyramid of downscaled copies sampled ∝ area (the paper's description),
  rather than the official random affine warps (random scale/shear/angle with bicubic warping);
* the default network is :class:`~metasr_adapter.adapters.mzsr.MZSRNet` (8 layers, 64 channels,
  global residual) with ZSSR's initialisation (normal, variance 0.1/fan_in); the official net has
  no biases, so the biases are kept at zero and not trained (``train_bias=False``);
* crops never exceed the image (the official warp pads small images with black);
* the kernel centring uses the pixel-grid geometry of the later official ``kernel_shift``
  (correct for even-sized kernels too) and renormalises the shifted kernel to sum 1.
"""
from __future__ import annotations

import copy
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..adapters.contract import fit_output, takes_upsampled_input
from ..devices import resolve_device
from ..ops.augment import AXIS_PRESERVING_MODES, DIHEDRAL_MODES, dihedral, ensemble_modes, geometric_self_ensemble, random_crop
from ..ops.backprojection import back_project
from ..ops.degrade import degrade, imresize
from ..precision import autocast, bf16_supported
from .config import PRESETS, ZSSRConfig, default_preset, scale_pair
from .kernels import is_kernel_list, kernel_shift, resolve_zssr_kernel
from .lr_policy import LinearFitLRPolicy

__all__ = [
    "ZSSR",
    "ZSSRStep",
    "ZSSRInfo",
    "father_probabilities",
    "zssr_super_resolve",
    # the settings and kernels, defined in .config and .kernels
    "ZSSRConfig",
    "PRESETS",
    "default_preset",
    "scale_pair",
    "kernel_shift",
    "resolve_zssr_kernel",
]


# ----------------------------------------------------------------------------------------------
# building blocks
# ----------------------------------------------------------------------------------------------
def father_probabilities(sizes: Sequence[tuple[int, int]], input_size: tuple[int, int]) -> np.ndarray:
    """Sampling probabilities of HR fathers of ``sizes`` (h, w) for an LR input of ``input_size``.

    A father's weight is its area relative to the input, ``r = (h·w)/(H·W)``, for fathers no larger
    than the input (the paper: proportional to size), and ``1/r`` for the larger, synthesised
    ones (the closer to the input's size, the likelier). Normalised to sum 1.
    """
    area_in = float(input_size[0] * input_size[1])
    if area_in <= 0 or not sizes:
        raise ValueError("father_probabilities needs a non-empty list of sizes and a positive input size")
    ratios = np.array([h * w / area_in for h, w in sizes], dtype=np.float64)
    weights = np.where(ratios <= 1.0, ratios, 1.0 / ratios)
    return weights / weights.sum()


def _init_zssr_net(net: nn.Module, variance: float, train_bias: bool, generator: torch.Generator) -> None:
    """ZSSR's initialisation: weights ~ N(0, variance / fan_in), zero biases (frozen unless ``train_bias``)."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
                w = torch.empty(m.weight.shape, dtype=torch.float32)
                w.normal_(0.0, math.sqrt(variance / fan_in), generator=generator)
                m.weight.copy_(w.to(m.weight))
                if m.bias is not None:
                    m.bias.zero_()
                    m.bias.requires_grad_(train_bias)


@dataclass
class ZSSRStep:
    """One training iteration: stage index and scale, iteration, L1 loss, learning rate used,
    and the reconstruction MSE when it was measured this iteration (else None)."""

    stage: int
    scale: tuple[float, float]
    iteration: int
    loss: float
    lr: float
    rec_mse: float | None = None


@dataclass
class ZSSRInfo:
    """What a run did, per stage (``stages``: dicts) and in total (``seconds``)."""

    stages: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def iterations(self) -> int:
        return int(sum(s["iterations"] for s in self.stages))

    @property
    def iters_per_second(self) -> float:
        t = sum(s["train_seconds"] for s in self.stages)
        return self.iterations / t if t > 0 else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {"stages": self.stages, "seconds": self.seconds, "iterations": self.iterations,
                "iters_per_second": self.iters_per_second}


class _Father:
    """An HR father image (1xCxhxw) and its size."""

    __slots__ = ("image", "size")

    def __init__(self, image: Tensor) -> None:
        self.image = image
        self.size = (int(image.shape[-2]), int(image.shape[-1]))


# ----------------------------------------------------------------------------------------------
# the algorithm
# ----------------------------------------------------------------------------------------------
class ZSSR:
    """Zero-shot SR of one image at a time.

    Args:
        config: a :class:`ZSSRConfig` (default: the 'ideal_x2' settings).
        model: the network to train. Default: a fresh 8-layer, 64-channel MZSRNet with ZSSR's
            initialisation. Any SR module works: one that takes the bicubic-upsampled image
            (``model.upsample_input = True``, like MZSRNet) or one that upsamples itself by the
            (integer) scale. The given module is copied, never changed; the trained copy is
            ``self.net`` after :meth:`run`.
    """

    def __init__(self, config: ZSSRConfig | None = None, model: nn.Module | None = None) -> None:
        self.config = (config if config is not None else ZSSRConfig()).validate()
        if model is not None and not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self._given_model = model
        self.net: nn.Module | None = None
        self.info: ZSSRInfo | None = None

    # -- setup ------------------------------------------------------------------------------
    def _device(self) -> torch.device:
        if self.config.device is not None:
            return resolve_device(self.config.device)
        if self._given_model is not None:
            p = next(iter(self._given_model.parameters()), None)
            if p is not None:
                return p.device
        return resolve_device(None)  # its own network: CUDA when available (the package's rule, devices.py)

    def _fresh_net(self, generator: torch.Generator, device: torch.device) -> nn.Module:
        cfg = self.config
        if self._given_model is None:
            from ..adapters.mzsr import MZSRNet

            net: nn.Module = MZSRNet(channels=3, width=cfg.width, depth=cfg.depth)
            _init_zssr_net(net, cfg.init_variance, cfg.train_bias, generator)
        else:
            net = copy.deepcopy(self._given_model)
            for p in net.parameters():
                p.requires_grad_(True)
        net = net.to(device)
        if cfg.precision == "bf16":
            net = net.to(memory_format=torch.channels_last)
        net.train()
        return net

    def _autocast(self, device: torch.device):
        return autocast(self.config.precision, device.type)

    # -- network plumbing -------------------------------------------------------------------
    def _forward(self, net: nn.Module, son: Tensor, sf: tuple[float, float], out_hw: tuple[int, int]) -> Tensor:
        """Network output for a son (or the LR image), at ``out_hw``."""
        upsample = takes_upsampled_input(net)
        inp = imresize(son, sf, output_shape=out_hw) if upsample else son
        if self.config.precision == "bf16":
            inp = inp.contiguous(memory_format=torch.channels_last)
        with self._autocast(inp.device):
            out = net(inp)
        return fit_output(out.float(), out_hw, max(sf), upsample)

    def _son(self, father: Tensor, sf: tuple[float, float], kernel: np.ndarray | None, ds_method: str,
             generator: torch.Generator) -> Tensor:
        son = degrade(father, kernel, sf, ds_method=ds_method)
        if self.config.noise_std > 0:
            noise = torch.randn(son.shape, generator=generator, dtype=torch.float32)
            son = son + self.config.noise_std * noise.to(son)
        return son.clamp(0, 1)

    # -- main entry -------------------------------------------------------------------------
    def run(
        self,
        lr_img: np.ndarray | Tensor,
        kernel: Any = None,
        scale: Any = 2,
        *,
        progress: bool = True,
        callback: Callable[[ZSSRStep], None] | None = None,
        return_info: bool = False,
    ):
        """Super-resolve ``lr_img`` by ``scale``, training a network on the image itself.

        Args:
            lr_img: HxWx3 (or HxW, HxWx4) uint8/float numpy, or a CxHxW / 1xCxHxW float tensor.
            kernel: the downscaling kernel: ``None``/``'bicubic'`` (the ideal case), a kernel name,
                a ``.mat`` (key ``Kernel`` or ``kernel``) / ``.npy`` path, an array, a
                :class:`~metasr_adapter.ops.kernels.KernelSpec`, or a list of these, one per stage.
                A single kernel is used for the stages at the final scale; earlier gradual
                stages then use bicubic.
            scale: the SR factor, a number or (vertical, horizontal).
            progress: show a tqdm bar per stage.
            callback: called with a :class:`ZSSRStep` after every iteration.
            return_info: also return a :class:`ZSSRInfo`.

        Returns the SR image in the input's format, or ``(sr, info)``.
        """
        from ..ops.imageio import to_tensor

        cfg = self.config
        t_start = time.perf_counter()
        final = scale_pair(scale, "scale")
        stages = [scale_pair(s, "scale factor") for s in cfg.scale_factors] if cfg.scale_factors is not None else [final]
        if stages[-1] != final:
            raise ValueError(
                f"the last scale factor {stages[-1]} of the config differs from scale={scale!r}; "
                f"use a preset for this scale or set scale_factors=None"
            )
        if max(final) <= 1:
            raise ValueError(f"scale={scale!r}: ZSSR needs an upscaling factor > 1, e.g. 2")
        bps = cfg.back_projection_iters
        bps = list(bps) if isinstance(bps, (list, tuple)) else [int(bps)] * len(stages)
        if len(bps) != len(stages):
            raise ValueError(f"back_projection_iters has {len(bps)} entries for {len(stages)} stages")

        # kernels per stage
        if is_kernel_list(kernel):
            if len(kernel) != len(stages):
                raise ValueError(f"{len(kernel)} kernels given for {len(stages)} stages; give one per stage or one")
            specs = [resolve_zssr_kernel(k) for k in kernel]
        else:
            spec = resolve_zssr_kernel(kernel)
            bicubic = resolve_zssr_kernel(None)
            specs = [spec if st == final else bicubic for st in stages]
        stage_kernels: list[np.ndarray | None] = []
        for st, spec in zip(stages, specs):
            k = spec.kernel
            if k is not None and cfg.kernel_shift and spec.ds_method == "direct":
                k = kernel_shift(k, st)
            stage_kernels.append(None if k is None else np.asarray(k))

        device = self._device()
        x, alpha, fmt = to_tensor(lr_img, channels=3, device=device)
        h, w = int(x.shape[-2]), int(x.shape[-1])
        smallest = min(h, w) * cfg.father_min_scale / max(max(s) for s in stages)
        if smallest < 3:
            raise ValueError(
                f"LR image of {h}x{w} pixels is too small for ZSSR at scale {scale}: its smallest training son "
                f"would be under 3 pixels; give a larger image or raise father_min_scale"
            )
        if cfg.precision == "bf16":

            if not bf16_supported(device):
                warnings.warn(
                    f"bf16 autocast has no fast kernels on this {device.type} (no AMX/AVX512-BF16); "
                    "it will run, very slowly — use precision='fp32'",
                    RuntimeWarning,
                    stacklevel=2,
                )

        seed = cfg.seed
        rng = np.random.default_rng(seed)
        gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        net = self._fresh_net(gen, device)
        initial_state = copy.deepcopy(net.state_dict()) if cfg.init_net_for_each_sf else None
        optimizer = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=cfg.learning_rate)

        # HR fathers: the input and a pyramid of downscaled copies; gradual outputs join later
        fathers: list[_Father] = [_Father(x)]
        for sigma in np.linspace(1.0, cfg.father_min_scale, cfg.father_levels)[1:]:
            out_hw = (max(1, int(round(h * sigma))), max(1, int(round(w * sigma))))
            if out_hw != (h, w):
                fathers.append(_Father(imresize(x, float(sigma), output_shape=out_hw).clamp(0, 1)))

        info = ZSSRInfo()
        sr = x
        for stage, (sf, k, bp) in enumerate(zip(stages, stage_kernels, bps)):
            ds_method = specs[stage].ds_method if k is not None else "bicubic"
            if stage > 0 and initial_state is not None:
                net.load_state_dict(initial_state)
                optimizer = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=cfg.learning_rate)
            stage_info = self._train_stage(
                net, optimizer, fathers, x, sf, k, ds_method, rng, gen, stage, len(stages), progress, callback
            )
            t0 = time.perf_counter()
            sr = self._final_test(net, x, sf, k, ds_method, bp)
            stage_info["test_seconds"] = time.perf_counter() - t0
            stage_info["back_projection_iters"] = bp
            info.stages.append(stage_info)
            if stage < len(stages) - 1:
                fathers.append(_Father(sr))
        self.net = net
        info.seconds = time.perf_counter() - t_start
        self.info = info
        if alpha is not None:
            alpha = imresize(alpha, final, output_shape=tuple(sr.shape[-2:]))
        out = fmt.restore(sr, alpha)
        return (out, info) if return_info else out

    # -- training ---------------------------------------------------------------------------
    def _train_stage(
        self,
        net: nn.Module,
        optimizer: torch.optim.Optimizer,
        fathers: list[_Father],
        x: Tensor,
        sf: tuple[float, float],
        kernel: np.ndarray | None,
        ds_method: str,
        rng: np.random.Generator,
        gen: torch.Generator,
        stage: int,
        n_stages: int,
        progress: bool,
        callback: Callable[[ZSSRStep], None] | None,
    ) -> dict[str, Any]:
        cfg = self.config
        h, w = int(x.shape[-2]), int(x.shape[-1])
        # a father must leave a son of at least 2 pixels per side at this stage's scale
        usable = [f for f in fathers if min(f.size[0] / sf[0], f.size[1] / sf[1]) >= 2]
        probs = father_probabilities([f.size for f in usable], (h, w))
        isotropic = sf[0] == sf[1]
        modes = DIHEDRAL_MODES if isotropic else AXIS_PRESERVING_MODES
        policy = LinearFitLRPolicy(
            initial_lr=cfg.learning_rate, min_lr=cfg.min_learning_rate, check_every=cfg.lr_check_every,
            fit_range=cfg.lr_fit_range, min_iters=cfg.lr_min_iters, ratio=cfg.lr_change_ratio, factor=cfg.lr_factor,
        )
        for group in optimizer.param_groups:
            group["lr"] = policy.lr
        losses: list[float] = []
        rec: list[tuple[int, float]] = []
        bar = None
        if progress:
            from tqdm.auto import tqdm

            label = f"x{sf[0]:g}" if isotropic else f"x{sf[0]:g},{sf[1]:g}"
            desc = f"zssr {label}" + (f" [{stage + 1}/{n_stages}]" if n_stages > 1 else "")
            bar = tqdm(total=cfg.max_iters, desc=desc, unit="it", leave=True)
        t0 = time.perf_counter()
        iters = 0
        try:
            for it in range(cfg.max_iters):
                lr_now = policy.lr
                father = usable[int(rng.choice(len(usable), p=probs))].image
                crop, _ = random_crop(father, cfg.crop_size, rng)
                if cfg.allow_rotation:
                    crop = dihedral(crop, int(modes[int(rng.integers(len(modes)))]))
                crop = crop.contiguous()
                with torch.no_grad():
                    son = self._son(crop, sf, kernel, ds_method, gen)
                out = self._forward(net, son, sf, (int(crop.shape[-2]), int(crop.shape[-1])))
                loss = F.l1_loss(out, crop)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                loss_value = float(loss.detach())
                if not math.isfinite(loss_value):
                    raise FloatingPointError(f"ZSSR training diverged at iteration {it} (loss {loss_value})")
                losses.append(loss_value)
                rec_mse = None
                if it % cfg.test_every == 0:
                    rec_mse = self._reconstruction_mse(net, x, sf, kernel, ds_method, gen)
                    rec.append((it, rec_mse))
                    policy.observe(rec_mse, it)
                new_lr = policy.step()
                iters = it + 1
                if bar is not None:
                    bar.update(1)
                    if it % 10 == 0 or policy.done:
                        bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr_now:.0e}")
                if callback is not None:
                    callback(ZSSRStep(stage, sf, it, loss_value, lr_now, rec_mse))
                if policy.done:
                    break
                if new_lr != lr_now:
                    for group in optimizer.param_groups:
                        group["lr"] = new_lr
        finally:
            if bar is not None:
                bar.close()
        train_seconds = time.perf_counter() - t0
        return {
            "scale": list(sf),
            "iterations": iters,
            "train_seconds": train_seconds,
            "iters_per_second": iters / train_seconds if train_seconds > 0 else float("nan"),
            "lr_changes": policy.changes[1:],
            "final_lr": policy.lr,
            "stopped_by_policy": policy.done,
            "losses": losses,
            "rec_mse": rec,
        }

    @torch.no_grad()
    def _reconstruction_mse(self, net: nn.Module, x: Tensor, sf: tuple[float, float], kernel: np.ndarray | None,
                            ds_method: str, gen: torch.Generator) -> float:
        """MSE between the LR image and the network's reconstruction of it from its own son."""
        son = self._son(x, sf, kernel, ds_method, gen)
        out = self._forward(net, son, sf, (int(x.shape[-2]), int(x.shape[-1]))).clamp(0, 1)
        return float(F.mse_loss(out, x))

    @torch.no_grad()
    def _final_test(self, net: nn.Module, x: Tensor, sf: tuple[float, float], kernel: np.ndarray | None,
                    ds_method: str, bp_iters: int) -> Tensor:
        """Self-ensemble (median of the flips/rotations, each back-projected) and a final back-projection."""
        cfg = self.config
        isotropic = sf[0] == sf[1]
        # on the direct grid, flips move the output by s-1 pixels: only identity and transpose (ops.augment)
        modes: Sequence[int] = ensemble_modes(ds_method, isotropic) if cfg.self_ensemble else (0,)

        def apply(inp: Tensor) -> Tensor:
            out_hw = (math.ceil(inp.shape[-2] * sf[0]), math.ceil(inp.shape[-1] * sf[1]))
            return self._forward(net, inp, sf, out_hw).clamp(0, 1)

        def bp(y: Tensor) -> Tensor:
            return back_project(y, x, kernel, sf, ds_method=ds_method, iters=bp_iters) if bp_iters else y

        was_training = net.training
        net.eval()
        try:
            sr = geometric_self_ensemble(apply, x, modes, cfg.ensemble_reduce, post=bp)
        finally:
            net.train(was_training)
        return bp(sr)


# ----------------------------------------------------------------------------------------------
# functional entry points (evaluation; the command line is metasr_adapter.cli.zssr)
# ----------------------------------------------------------------------------------------------
def zssr_super_resolve(
    lr_img: np.ndarray | Tensor,
    kernel: Any = None,
    scale: Any = 2,
    config: ZSSRConfig | None = None,
    *,
    model: nn.Module | None = None,
    progress: bool = False,
) -> np.ndarray | Tensor:
    """Run ZSSR on one image; returns the SR image in the input's format (uint8 in → uint8 out).

    ``config=None`` picks the 'kernel' preset when a blur kernel is given, else 'ideal_x2'.
    """
    if config is None:
        config = ZSSRConfig.preset(default_preset(kernel))
    return ZSSR(config, model).run(lr_img, kernel, scale, progress=progress)
