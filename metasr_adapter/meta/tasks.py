"""MZSR's meta-training tasks (SPEC §3): random kernels and support/query sets drawn from a
:class:`~metasr_adapter.meta.patches.PatchPool` (the HR patches, SPEC §3a).

* :class:`TaskSampler` — one meta-batch (SPEC §3b) as a pure function of ``(seed, iteration)``:
  a resumed run regenerates exactly the batches an uninterrupted run would have seen, whichever
  process (or DataLoader worker) makes them.
* :class:`MLSRTaskSampler` — MLSR's tasks (Park et al., ECCV 2020): each task is one HR patch;
  support = (LR↓ → LR), the LR and its own downscaled son, and query = (LR → HR).
* :func:`task_loader` — a ``DataLoader`` that makes the batches of iterations ``start..stop-1``
  in worker processes, so task generation overlaps training.
"""
from __future__ import annotations

import math
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..ops.degrade import degrade, imresize
from ..ops.kernels import DS_METHODS, random_kernel
from .patches import GRAD_THRESHOLD, PatchPool, find_images, gradient_energy, warn_if_pool_changed

__all__ = [
    "TaskSampler",
    "MLSRTaskSampler",
    "TaskDataset",
    "task_loader",
    "iteration_rng",
    # the patch pool the samplers draw from, defined in .patches
    "GRAD_THRESHOLD",
    "gradient_energy",
    "find_images",
    "PatchPool",
    "warn_if_pool_changed",
]


def iteration_rng(seed: int, iteration: int, stream: int = 0) -> np.random.RandomState:
    """The RandomState that makes batch ``iteration`` of a run seeded ``seed`` (``stream`` keeps
    pretraining and meta-training draws apart). A pure function of its arguments."""
    if iteration < 0:
        raise ValueError(f"iteration must be >= 0; got {iteration}")
    ss = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(stream), int(iteration)])
    return np.random.RandomState(np.random.MT19937(ss))



def _to_tensor(patches: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    """uint8 [N, H, W, C] → float [N, C, H, W] in [0, 1] (computed in float32 like the official /255)."""
    t = torch.from_numpy(np.ascontiguousarray(patches.transpose(0, 3, 1, 2))).to(torch.float32) / 255.0
    return t.to(dtype)


def _check_sampler_args(pool: Any, meta_batch: int, task_batch: int, ds_method: str) -> None:
    if not isinstance(pool, PatchPool):
        raise TypeError(f"pool must be a PatchPool; got {type(pool).__name__}")
    if meta_batch < 1 or task_batch < 1:
        raise ValueError(f"meta_batch={meta_batch}, task_batch={task_batch}: both must be >= 1")
    if ds_method not in DS_METHODS:
        raise ValueError(f"ds_method must be one of {DS_METHODS}; got {ds_method!r}")


class TaskSampler:
    """MZSR meta-batches (SPEC §3b) from a :class:`PatchPool`.

    Per task: a scale from ``scales``; one kernel ``random_kernel(k1=k1_factor·scale, kernel_size, k0=min_var)``;
    ``2·task_batch`` HR patches; LR = blur + ``ds_method`` subsampling; ``+ noise_std·randn`` (drawn
    even when 0, like the official code) and clip to [0, 1]; network input = bicubic upsampling of
    the LR back to the HR size when ``upsample_input`` (pre-upsampling networks such as MZSR), else
    the LR itself. The first ``task_batch`` pairs are the support set, the next the query set.

    ``sample(iteration)`` depends only on ``(seed, iteration)``, so the sampler's whole state is
    its seed (:meth:`state_dict`). The degradations run batched in torch over all tasks at once.
    ``stream`` separates independent batch streams of one seed (pretraining on these tasks uses
    :data:`~metasr_adapter.meta.pretrain.PRETRAIN_STREAM`).
    """

    def __init__(
        self,
        pool: PatchPool,
        *,
        meta_batch: int = 5,
        task_batch: int = 4,
        scales: Sequence[float] = (2.0,),
        kernel_size: int = 15,
        k1_factor: float = 2.5,
        ds_method: str = "direct",
        noise_std: float = 0.0,
        upsample_input: bool = True,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
        stream: int = 0,
        min_var: float = 1.0,
    ) -> None:
        _check_sampler_args(pool, meta_batch, task_batch, ds_method)
        scales = [float(s) for s in scales]
        if not scales or min(scales) < 1:
            raise ValueError(f"scales={scales}: give up-scaling factors >= 1, e.g. [2.0]")
        if noise_std < 0:
            raise ValueError(f"noise_std={noise_std} must be >= 0")
        self.pool = pool
        self.meta_batch = int(meta_batch)
        self.task_batch = int(task_batch)
        self.scales = scales
        self.kernel_size = int(kernel_size)
        self.k1_factor = float(k1_factor)
        self.min_var = float(min_var)  # the smallest kernel variance (SPEC §3c: 1)
        if not 0 < self.min_var <= self.k1_factor * min(scales):
            raise ValueError(f"min_var={min_var} must be > 0 and at most k1_factor·scale = {self.k1_factor * min(scales)}")
        self.ds_method = ds_method
        self.noise_std = float(noise_std)
        self.upsample_input = bool(upsample_input)
        self.seed = int(seed)
        self.dtype = dtype
        self.stream = int(stream)
        if len(set(scales)) > 1 and not self.upsample_input:
            raise ValueError("several scales need upsample_input=True: LR sizes differ between tasks and "
                             "cannot be stacked into one batch")

    def _draw(self, iteration: int) -> tuple[np.ndarray, list[float], np.ndarray, list[np.ndarray]]:
        """All random draws of one meta-batch, in the official order (SPEC §3b)."""
        rng = iteration_rng(self.seed, iteration, self.stream)
        mb, tb, ps = self.meta_batch, self.task_batch, self.pool.patch_size
        index = self.pool.draw(rng, 2 * tb * mb)
        scales, kernels, noise = [], [], []
        for _ in range(mb):
            s = float(rng.choice(self.scales))
            scales.append(s)
            kernels.append(random_kernel(self.k1_factor * s, self.kernel_size, rng, k0=self.min_var))
            lh = int(math.ceil(ps * (1.0 / s)))  # LR size as the official fix_scale_and_size computes it
            for _ in range(2 * tb):
                noise.append(rng.randn(lh, lh, 3))
        return index, scales, np.stack(kernels), noise

    @torch.no_grad()
    def sample_arrays(self, iteration: int) -> dict[str, torch.Tensor]:
        """Meta-batch ``iteration`` as a dict of tensors: ``x``/``y`` [MB, 2·TB, C, H, W] (network
        input / HR target; support = ``[:, :TB]``) and ``kernels`` [MB, k, k]."""
        mb, tb = self.meta_batch, self.task_batch
        index, scales, kernels, noise = self._draw(iteration)
        hr = _to_tensor(self.pool.hr_patches(index), self.dtype)  # [MB*2TB, C, P, P], task-major
        ps = hr.shape[-1]
        ktens = torch.from_numpy(kernels).to(self.dtype)
        inputs: list[torch.Tensor | None] = [None] * mb
        for s in sorted(set(scales)):
            tasks = [t for t in range(mb) if scales[t] == s]
            rows = torch.tensor([t * 2 * tb + r for t in tasks for r in range(2 * tb)])
            per_sample_k = ktens[tasks].repeat_interleave(2 * tb, dim=0)
            lr = degrade(hr[rows], per_sample_k, s, self.ds_method)
            nz = np.stack([noise[int(r)] for r in rows]).transpose(0, 3, 1, 2)
            lr = (lr + torch.from_numpy(np.ascontiguousarray(nz)).to(self.dtype) * self.noise_std).clamp(0, 1)
            x = imresize(lr, s, output_shape=(ps, ps)) if self.upsample_input else lr
            for n, t in enumerate(tasks):
                inputs[t] = x[n * 2 * tb : (n + 1) * 2 * tb]
        x = torch.stack(inputs)  # type: ignore[arg-type]
        y = hr.view(mb, 2 * tb, *hr.shape[1:])
        return {"x": x.contiguous(), "y": y.contiguous(), "kernels": ktens}

    def to_task_batch(self, arrays: dict[str, torch.Tensor]):
        """Split :meth:`sample_arrays` output into a :class:`~metasr_adapter.meta.learner.TaskBatch`."""
        from .learner import TaskBatch

        tb = self.task_batch
        x, y = arrays["x"], arrays["y"]
        return TaskBatch(support_x=x[:, :tb], support_y=y[:, :tb], query_x=x[:, tb:], query_y=y[:, tb:],
                         kernels=arrays.get("kernels"))

    def sample(self, iteration: int):
        """Meta-batch ``iteration`` as a :class:`~metasr_adapter.meta.learner.TaskBatch` [MB, TB, C, H, W]."""
        return self.to_task_batch(self.sample_arrays(iteration))

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to regenerate the batch stream (it is a function of seed and step)."""
        return {"seed": self.seed, "pool": self.pool.fingerprint(), "meta_batch": self.meta_batch,
                "task_batch": self.task_batch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seed = int(state["seed"])
        warn_if_pool_changed(self.pool, state)


class MLSRTaskSampler(TaskSampler):
    """MLSR meta-batches (Park et al., ECCV 2020, Algorithm 1) from a :class:`PatchPool`.

    A task is ``task_batch`` HR patches (MLSR: one 512x512 patch, a mini-batch of 16 tasks). Its LR
    is the HR degraded by the task's kernel; its son ``LR↓`` is the LR degraded again by the same
    kernel. The inner steps learn ``LR↓ → LR`` (support, what test-time adaptation can see) and
    the meta-loss scores ``LR → HR`` (query). ``kernel='bicubic'`` is MLSR's main setting (MATLAB
    bicubic both times); ``'random'`` draws one random Gaussian kernel per task (SPEC §3c sampler,
    ``k1 = k1_factor·scale``) followed by ``ds_method`` subsampling, for the paper's non-bicubic
    experiments. ``'photo'`` draws one :class:`~metasr_adapter.ops.degradation_spec.DegradationSpec` per
    task from the photo family ``family`` (grid, blur, noise, 8 bits, JPEG) and makes both the LR and its son
    with it, as the photo path makes the son at test time. The patch size must be divisible by ``scale²``.

    Like :class:`TaskSampler` (whose ``sample``/``state_dict``/``load_state_dict`` it inherits; it
    builds its tasks itself), batch ``iteration`` is a pure function of ``(seed, iteration)``.
    """

    KERNELS = ("bicubic", "random", "photo")

    def __init__(
        self,
        pool: PatchPool,
        *,
        meta_batch: int = 16,
        task_batch: int = 1,
        scale: float = 2.0,
        kernel: str = "bicubic",
        kernel_size: int = 15,
        k1_factor: float = 2.5,
        ds_method: str = "direct",
        upsample_input: bool = False,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
        family: Any = None,
        min_var: float = 1.0,
    ) -> None:
        from ..ops.degradation_spec import PhotoDegradations

        _check_sampler_args(pool, meta_batch, task_batch, ds_method)
        self.family = family if isinstance(family, PhotoDegradations) else PhotoDegradations.from_dict(family)
        if kernel not in self.KERNELS:
            raise ValueError(f"kernel={kernel!r}; choose one of {self.KERNELS}")
        s = float(scale)
        if s != int(s) or s < 2:
            raise ValueError(f"scale={scale!r}: MLSR tasks need an integer factor >= 2")
        ps = pool.patch_size
        if ps % int(s) ** 2:
            raise ValueError(f"patch_size={ps} is not divisible by scale² = {int(s) ** 2}: the son of the LR "
                             f"would not be a whole image; use e.g. patch_size={ps - ps % int(s) ** 2}")
        self.pool = pool
        self.meta_batch, self.task_batch = int(meta_batch), int(task_batch)
        self.scale, self.kernel = s, kernel
        self.kernel_size, self.k1_factor, self.ds_method = int(kernel_size), float(k1_factor), ds_method
        self.min_var = float(min_var)
        if not 0 < self.min_var <= self.k1_factor * s:
            raise ValueError(f"min_var={min_var} must be > 0 and at most k1_factor·scale = {self.k1_factor * s}")
        self.upsample_input = bool(upsample_input)
        self.seed = int(seed)
        self.dtype = dtype
        self.stream = 0

    def _down(self, x: torch.Tensor, k: torch.Tensor | None) -> torch.Tensor:
        if k is None:
            return imresize(x, 1.0 / self.scale).clamp(0, 1)
        return degrade(x, k, self.scale, self.ds_method).clamp(0, 1)

    def _input(self, lr_img: torch.Tensor) -> torch.Tensor:
        if not self.upsample_input:
            return lr_img
        h, w = lr_img.shape[-2:]
        return imresize(lr_img, self.scale, output_shape=(int(h * self.scale), int(w * self.scale)))

    @torch.no_grad()
    def sample_arrays(self, iteration: int) -> dict[str, torch.Tensor]:
        """Meta-batch ``iteration``: ``support_x``/``support_y``/``query_x``/``query_y`` [MB, TB, C, H, W]
        (and ``kernels`` [MB, k, k] with ``kernel='random'``)."""
        mb, tb = self.meta_batch, self.task_batch
        rng = iteration_rng(self.seed, iteration, self.stream)
        index = self.pool.draw(rng, mb * tb)
        hr = _to_tensor(self.pool.hr_patches(index), self.dtype)  # [MB*TB, C, P, P], task-major
        out: dict[str, torch.Tensor] = {}
        if self.kernel == "photo":
            noise_gen = torch.Generator().manual_seed(int(rng.randint(0, 2**31 - 1)))
            lrs, sons = [], []
            for t in range(mb):
                spec = self.family.sample(rng)
                task_hr = hr[t * tb : (t + 1) * tb].double()
                lr_t = spec.apply(task_hr, self.scale, generator=noise_gen)
                lrs.append(lr_t)
                sons.append(spec.apply(lr_t, self.scale, generator=noise_gen))
            lr, son = torch.cat(lrs).to(self.dtype), torch.cat(sons).to(self.dtype)
            pairs = {"support_x": self._input(son), "support_y": lr, "query_x": self._input(lr), "query_y": hr}
            out.update({k: v.reshape(mb, tb, *v.shape[1:]) for k, v in pairs.items()})
            return {k: v.contiguous() for k, v in out.items()}
        if self.kernel == "random":
            ks = np.stack([random_kernel(self.k1_factor * self.scale, self.kernel_size, rng, k0=self.min_var)
                           for _ in range(mb)])
            ktens = torch.from_numpy(ks).to(self.dtype)
            per_sample = ktens.repeat_interleave(tb, dim=0)
            out["kernels"] = ktens
        else:
            per_sample = None
        lr = self._down(hr, per_sample)
        son = self._down(lr, per_sample)
        pairs = {"support_x": self._input(son), "support_y": lr, "query_x": self._input(lr), "query_y": hr}
        out.update({k: v.reshape(mb, tb, *v.shape[1:]) for k, v in pairs.items()})
        return {k: v.contiguous() for k, v in out.items()}

    def to_task_batch(self, arrays: dict[str, torch.Tensor]):
        """:meth:`sample_arrays` output as a :class:`~metasr_adapter.meta.learner.TaskBatch`."""
        from .learner import TaskBatch

        return TaskBatch(support_x=arrays["support_x"], support_y=arrays["support_y"], query_x=arrays["query_x"],
                         query_y=arrays["query_y"], kernels=arrays.get("kernels"))


class TaskDataset(Dataset):
    """Map-style view of iterations ``start..stop-1`` of a sampler (item = ``sampler.sample_arrays``)."""

    def __init__(self, sampler: Any, start: int, stop: int) -> None:
        if not 0 <= start <= stop:
            raise ValueError(f"need 0 <= start <= stop; got start={start}, stop={stop}")
        self.sampler, self.start, self.stop = sampler, int(start), int(stop)

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if not 0 <= i < len(self):
            raise IndexError(i)
        return self.sampler.sample_arrays(self.start + i)


def _identity(x: Any) -> Any:
    return x


def _worker_init(worker_id: int) -> None:
    """DataLoader workers leave Ctrl-C to the training process and die on SIGTERM."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def task_loader(
    sampler: Any, start: int, stop: int, num_workers: int = 1, prefetch_factor: int = 2
) -> Iterator[Any]:
    """Yield the batches of iterations ``start..stop-1`` in order, made in ``num_workers`` worker
    processes (0 = in this process). Items are ``sampler.to_task_batch(arrays)`` when the sampler
    has that method, else the raw dict."""
    if num_workers < 0:
        raise ValueError(f"num_workers={num_workers} must be >= 0")
    if hasattr(sampler, "pool"):
        sampler.pool.build()  # build once here; forked workers share it
    ds = TaskDataset(sampler, start, stop)
    kwargs: dict[str, Any] = {}
    if num_workers > 0:
        kwargs = {"prefetch_factor": prefetch_factor, "persistent_workers": False, "worker_init_fn": _worker_init}
    # a private generator: creating the loader must not consume the global torch RNG (exact resume)
    loader = DataLoader(ds, batch_size=None, shuffle=False, num_workers=num_workers, collate_fn=_identity,
                        generator=torch.Generator().manual_seed(0), **kwargs)
    convert = getattr(sampler, "to_task_batch", _identity)
    for arrays in loader:
        yield convert(arrays)
