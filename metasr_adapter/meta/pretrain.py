"""Supervised pretraining of the starting point of meta-training.

Two kinds of training pairs:

* ``degradation='bicubic'`` — MZSR's large-scale pretraining θ_T (SPEC §8): bicubic x2 pairs
  (:class:`PairSampler`), L1 loss, Adam with a staircase rate.
* ``degradation='kernel'`` — pairs from the meta-training task distribution itself (one random
  Gaussian kernel per group of patches, then the task's subsampling; :class:`KernelPairSampler`).
  On a CPU budget this is the cheaper road to a good starting point for MAML: the network learns
  the degradations it will later adapt to, before the (3-4x more expensive per patch)
  meta-iterations refine it.

The official run used DIV2K's MATLAB-bicubic LR images; those are not available here, so the LR
patches are made by the same operator (antialiased MATLAB-bicubic ``imresize`` of the whole
modcropped HR image, rounded to uint8) — see :class:`~metasr_adapter.meta.tasks.PatchPool`.

Every batch is a pure function of ``(seed, step)`` (:class:`PairSampler`), so a resumed run sees
exactly the batches an uninterrupted one would. The loop itself, with checkpoints, lives in
:mod:`metasr_adapter.training.train`; this module provides its pieces.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..ops.degrade import imresize
from .tasks import PatchPool, TaskSampler, _to_tensor, iteration_rng, warn_if_pool_changed

__all__ = ["PRETRAIN_STREAM", "LR_SCHEDULES", "staircase_lr", "cosine_lr", "PairSampler", "KernelPairSampler",
           "PhotoPairSampler", "Pretrainer"]

#: RNG stream id of pretraining batches (meta-training uses stream 0)
PRETRAIN_STREAM = 1
#: learning-rate schedules of :class:`Pretrainer`
LR_SCHEDULES = ("staircase", "cosine")


def staircase_lr(
    step: int, base: float = 4e-4, decay_every: int = 100000, factor: float = 0.5, minimum: float = 1e-4
) -> float:
    """SPEC §8: ``max(base · factor^floor(step / decay_every), minimum)`` (4e-4 → 2e-4 at 100k → 1e-4)."""
    if step < 0:
        raise ValueError(f"step must be >= 0; got {step}")
    if decay_every < 1:
        raise ValueError(f"decay_every must be >= 1; got {decay_every}")
    return max(base * factor ** (step // decay_every), minimum)


def cosine_lr(step: int, base: float, total: int, minimum: float) -> float:
    """Half-cosine from ``base`` at step 0 to ``minimum`` at step ``total`` (and after)."""
    if step < 0:
        raise ValueError(f"step must be >= 0; got {step}")
    if total < 1:
        raise ValueError(f"total must be >= 1; got {total}")
    t = min(step, total) / total
    return minimum + 0.5 * (base - minimum) * (1.0 + math.cos(math.pi * t))


class PairSampler:
    """Batches of (network input, HR) pairs for pretraining, from a pool built with ``lr_scale``.

    ``sample_arrays(step)`` → ``{'x', 'y'}``: ``y`` the HR patches [B, 3, P, P]; ``x`` the LR patch
    upsampled by bicubic ``imresize`` to P×P (SPEC §8) when ``upsample_input``, else the LR patch.
    A pure function of ``(seed, step)``.
    """

    def __init__(
        self,
        pool: PatchPool,
        batch_size: int = 32,
        *,
        seed: int = 0,
        upsample_input: bool = True,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if not isinstance(pool, PatchPool) or pool.lr_scale is None:
            raise ValueError("PairSampler needs a PatchPool built with lr_scale (e.g. lr_scale=2)")
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1")
        self.pool = pool
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.upsample_input = bool(upsample_input)
        self.dtype = dtype

    @torch.no_grad()
    def sample_arrays(self, step: int) -> dict[str, torch.Tensor]:
        rng = iteration_rng(self.seed, step, stream=PRETRAIN_STREAM)
        index = self.pool.draw(rng, self.batch_size)
        hr = _to_tensor(self.pool.hr_patches(index), self.dtype)
        lr = _to_tensor(self.pool.lr_patches(index), self.dtype)
        x = imresize(lr, float(self.pool.lr_scale), output_shape=hr.shape[-2:]) if self.upsample_input else lr
        return {"x": x.contiguous(), "y": hr}

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "pool": self.pool.fingerprint(), "batch_size": self.batch_size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seed = int(state["seed"])
        warn_if_pool_changed(self.pool, state)


class KernelPairSampler:
    """Pretraining batches drawn from MZSR's task distribution (SPEC §3b/§3c), flattened to pairs.

    Batch ``step`` holds ``kernels`` groups of ``batch_size / kernels`` patches; each group is
    blurred by its own random Gaussian kernel and subsampled by ``ds_method`` (a
    :class:`~metasr_adapter.meta.tasks.TaskSampler` meta-batch, on the pretraining RNG stream).
    ``sample_arrays(step)`` → ``{'x', 'y'}`` of shape [B, C, H, W]; a pure function of ``(seed, step)``.
    """

    def __init__(self, pool: PatchPool, batch_size: int = 32, *, kernels: int = 8, seed: int = 0,
                 **task_options: Any) -> None:
        """``task_options``: the degradation settings of :class:`~metasr_adapter.meta.tasks.TaskSampler`
        (``scales``, ``kernel_size``, ``k1_factor``, ``ds_method``, ``noise_std``, ``upsample_input``, ``dtype``)."""
        if kernels < 1 or batch_size < 1 or batch_size % kernels:
            raise ValueError(f"batch_size={batch_size} must be a positive multiple of kernels={kernels} "
                             f"(each kernel blurs batch_size / kernels patches), e.g. batch_size={max(1, kernels) * 4}")
        per_kernel = batch_size // kernels
        if per_kernel % 2:
            raise ValueError(f"batch_size / kernels = {per_kernel} must be even (a task has support and query "
                             f"halves); e.g. batch_size={kernels * (per_kernel + 1)}")
        self.batch_size = int(batch_size)
        self.tasks = TaskSampler(pool, meta_batch=kernels, task_batch=per_kernel // 2, seed=seed,
                                 stream=PRETRAIN_STREAM, **task_options)
        self.pool = pool

    @property
    def seed(self) -> int:
        return self.tasks.seed

    @torch.no_grad()
    def sample_arrays(self, step: int) -> dict[str, torch.Tensor]:
        arrays = self.tasks.sample_arrays(step)
        x, y = arrays["x"], arrays["y"]
        return {"x": x.reshape(-1, *x.shape[2:]).contiguous(), "y": y.reshape(-1, *y.shape[2:]).contiguous()}

    def state_dict(self) -> dict[str, Any]:
        return {**self.tasks.state_dict(), "batch_size": self.batch_size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.tasks.load_state_dict(state)


class PhotoPairSampler:
    """Pretraining pairs for photos: every HR patch gets its own degradation drawn from a
    :class:`~metasr_adapter.ops.degradation_spec.PhotoDegradations` family (grid, blur from sharp to
    blurry, noise, 8-bit rounding, JPEG), applied to the patch with :meth:`DegradationSpec.apply`.

    ``sample_arrays(step)`` → ``{'x', 'y'}``: ``y`` the HR patches, ``x`` the LR patches (bicubic-upsampled
    to the HR size when ``upsample_input``). A pure function of ``(seed, step)``.
    """

    def __init__(self, pool: PatchPool, batch_size: int = 16, *, scale: int = 2, family: Any = None, seed: int = 0,
                 upsample_input: bool = False, dtype: torch.dtype = torch.float32) -> None:
        from ..ops.degradation_spec import PhotoDegradations

        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1")
        if int(scale) != scale or scale < 2 or pool.patch_size % int(scale):
            raise ValueError(f"scale={scale!r} must be an integer >= 2 dividing the patch size {pool.patch_size}")
        self.pool = pool
        self.batch_size = int(batch_size)
        self.scale = int(scale)
        self.family = family if isinstance(family, PhotoDegradations) else PhotoDegradations.from_dict(family)
        self.seed = int(seed)
        self.upsample_input = bool(upsample_input)
        self.dtype = dtype

    @torch.no_grad()
    def sample_arrays(self, step: int) -> dict[str, torch.Tensor]:
        rng = iteration_rng(self.seed, step, stream=PRETRAIN_STREAM)
        index = self.pool.draw(rng, self.batch_size)
        hr = _to_tensor(self.pool.hr_patches(index), torch.float32)
        noise_gen = torch.Generator().manual_seed(int(rng.randint(0, 2**31 - 1)))
        lr = torch.cat([self.family.sample(rng).apply(hr[i : i + 1], self.scale, generator=noise_gen)
                        for i in range(hr.shape[0])])
        x = imresize(lr, float(self.scale), output_shape=hr.shape[-2:]) if self.upsample_input else lr
        return {"x": x.to(self.dtype).contiguous(), "y": hr.to(self.dtype)}

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "pool": self.pool.fingerprint(), "batch_size": self.batch_size,
                "family": self.family.to_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seed = int(state["seed"])
        warn_if_pool_changed(self.pool, state)


class Pretrainer:
    """One pretraining step: mean L1 (SPEC §8; ``loss='l2'`` for MLSR's networks) between
    ``model(x)`` and ``y``, Adam(β=(0.9, 0.999), ε=1e-8) with the rate set before every step:
    SPEC §8's staircase (``schedule='staircase'``), or a half-cosine from ``lr`` to ``lr_min`` over
    ``total`` steps (``schedule='cosine'``, for short budgets). ``precision='bf16'`` runs the network's
    forward and backward under bf16 autocast (fp32 master weights and Adam; 1.7x faster per step on an
    AVX512-BF16 CPU, ``benchmarks/bench_train_step.py``)."""

    def __init__(
        self,
        model: nn.Module,
        *,
        lr: float = 4e-4,
        decay_every: int = 100000,
        decay_factor: float = 0.5,
        lr_min: float = 1e-4,
        loss: str = "l1",
        schedule: str = "staircase",
        total: int | None = None,
        precision: str = "fp32",
    ) -> None:
        from ..precision import PRECISIONS
        from ..ops.losses import get_loss

        if precision not in PRECISIONS:
            raise ValueError(f"precision={precision!r}; use one of {PRECISIONS}")
        self.precision = precision
        if schedule not in LR_SCHEDULES:
            raise ValueError(f"schedule={schedule!r}; choose one of {LR_SCHEDULES}")
        if schedule == "cosine" and (total is None or total < 1):
            raise ValueError(f"schedule='cosine' needs total >= 1 (the number of steps); got {total}")
        self.schedule, self.total = schedule, total
        self.model = model
        self.loss_fn = get_loss(loss)
        self.base_lr, self.decay_every, self.decay_factor, self.lr_min = lr, decay_every, decay_factor, lr_min
        self.optimizer = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-8)

    def lr_at(self, step: int) -> float:
        if self.schedule == "cosine":
            assert self.total is not None
            return cosine_lr(step, self.base_lr, self.total, self.lr_min)
        return staircase_lr(step, self.base_lr, self.decay_every, self.decay_factor, self.lr_min)

    def step(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, float]:
        """Train on ``batch`` (``{'x', 'y'}``) as global step ``step``; returns loss and lr."""
        lr = self.lr_at(step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        from .. import distributed as ddp

        device = next(self.model.parameters()).device
        n = batch["x"].shape[0]
        mine = ddp.shard(n, "pretrain.batch_size")  # the whole batch in a single process
        x, y = batch["x"][mine].to(device), batch["y"][mine].to(device)
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        from ..precision import autocast

        with autocast(self.precision, device.type):  # bf16: the network in bf16, the loss in fp32
            out = self.model(x)
        # the batch mean as a sum of per-rank parts: each rank's mean weighted by its share
        loss = self.loss_fn(out.float(), y) * ((mine.stop - mine.start) / n)
        loss.backward()
        ddp.all_reduce_grads(self.model.parameters())
        total = float(ddp.all_reduce_sum(loss.detach()))
        if not math.isfinite(total):
            raise FloatingPointError(f"pretraining loss is {total} at step {step} (learning rate {lr:g}); "
                                     "lower pretrain.lr")
        self.optimizer.step()
        return {"loss": total, "lr": lr}

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])

