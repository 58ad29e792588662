"""Model-agnostic MAML meta-training for super-resolution networks (MZSR's meta-transfer step, SPEC §4).

One meta-iteration, for each task ``t`` of a meta-batch:

* ``N`` inner SGD steps on the support set: ``θ_{j+1} = θ_j - α_j ∇ L(f(support_x; θ_j), support_y)``
  (only the parameters selected by ``adapt_params`` move; the others stay at θ);
* the query loss ``Lq_t[j] = L(f(query_x; θ_{j+1}), query_y)`` after every inner step;
* the meta-loss combines ``mean_t Lq_t[j]`` over the steps ``j`` with per-step weights
  (:func:`query_loss_weights`); Adam takes one step on its gradient w.r.t. θ.

With ``first_order=False`` the gradient flows through the inner gradients (full second-order
MAML, MZSR's default). With ``first_order=True`` the inner gradients are constants
(TF ``stop_gradient``, SPEC §4 ``stop_grad=True``), so the meta-gradient is the sum of the
weighted query-loss gradients taken at the adapted weights (first-order MAML).

Two interchangeable backends (:mod:`.backends`) compute the same numbers: ``'functional'`` (built in, on
:func:`torch.func.functional_call`; tasks one after another, or all at once with
:func:`torch.func.vmap`) and ``'learn2learn'`` (``l2l.algorithms.MAML``, optional dependency). The pieces
beside this class: the inner loop :func:`~.inner.inner_adapt`, the query-loss weights (:mod:`.query_weights`)
and TF1's Adam arithmetic (:class:`~.tf_adam.TFAdam`).

Speed on CPU (benchmarks/bench_meta.py, bench_meta_ab.py, profile_ops.py): ~90 % of a meta-iteration is oneDNN
convolutions (forward, backward, and the double backward of second order). Tasks run in a loop; vmap (grouped
convolutions) was slower. The layout follows the CPU: NHWC on CPUs with AVX-512 (faster there), NCHW on AVX2-only
ones, where NHWC and bf16 were slower. Second-order meta-gradients differentiate MZSRNet's convolutions on oneDNN's
primitives (``conv_derivatives``). When the cores are shared with other processes, set ``OMP_WAIT_POLICY=PASSIVE``
in the environment (before Python starts): spinning OpenMP threads otherwise cost a factor 2-3.
"""
from __future__ import annotations

import contextlib
import functools
import math
from dataclasses import asdict, dataclass
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..adapt.step import gradients, select_parameters
from ..errors import check_choice
from ..ops import winograd
from ..ops.conv import CONV_ALGORITHMS, conv_algorithm, primitive_derivatives
from ..ops.losses import LOSSES, LossFn, get_loss, l1_loss, l2_loss
from ..precision import PRECISIONS, resolve_channels_last
from .backends import LEARN2LEARN_HINT, Backend, make_backend
from .inner import inner_adapt, per_step_lrs
from .query_weights import ANNEAL_SPAN, LOSS_WEIGHTINGS, combine_query_losses, mzsr_loss_weights, query_loss_weights
from .task_threads import TaskThreadPool
from .tf_adam import TFAdam

__all__ = [
    "TaskBatch",
    "MAMLConfig",
    "MetaLearner",
    "inner_adapt",
    "mzsr_loss_weights",
    "query_loss_weights",
    "combine_query_losses",
    "TFAdam",
    "l1_loss",
    "l2_loss",
    "LOSSES",
    "get_loss",
    "LOSS_WEIGHTINGS",
    "BACKENDS",
    "ADAM_VARIANTS",
    "TASK_BATCHING",
    "LEARN2LEARN_HINT",
]

BACKENDS = ("functional", "learn2learn")
ADAM_VARIANTS = ("torch", "tf")
TASK_BATCHING = ("loop", "vmap")
CONV_DERIVATIVES = ("auto", "primitive", "torch")


# --------------------------------------------------------------------------------------------
# Task batches and configuration
# --------------------------------------------------------------------------------------------


@dataclass
class TaskBatch:
    """A meta-batch of SR tasks, tensors ``[MB, TB, C, H, W]``.

    ``support_x``/``query_x`` are the network inputs, ``support_y``/``query_y`` the targets (their
    spatial size may differ from the inputs' for networks that upsample). ``kernels`` ``[MB, kh, kw]``
    (optional) records the degradation of each task; the meta-learner does not use it.
    """

    support_x: Tensor
    support_y: Tensor
    query_x: Tensor
    query_y: Tensor
    kernels: Tensor | None = None

    def __post_init__(self) -> None:
        names = ("support_x", "support_y", "query_x", "query_y")
        for name in names:
            t = getattr(self, name)
            if not isinstance(t, Tensor):
                raise TypeError(f"TaskBatch.{name} is a {type(t).__name__}; expected a torch.Tensor "
                                f"[MB, TB, C, H, W] (NHWC numpy arrays: use TaskBatch.from_numpy)")
            if t.dim() != 5:
                raise ValueError(f"TaskBatch.{name} has shape {tuple(t.shape)}; expected 5-D [MB, TB, C, H, W]")
        mb = self.support_x.shape[0]
        for name in names:
            if getattr(self, name).shape[0] != mb:
                raise ValueError(f"TaskBatch.{name} has meta-batch {getattr(self, name).shape[0]} but support_x has "
                                 f"{mb}; every tensor needs the same first dimension")
        for x, y in (("support_x", "support_y"), ("query_x", "query_y")):
            if getattr(self, x).shape[1] != getattr(self, y).shape[1]:
                raise ValueError(f"TaskBatch.{x} has {getattr(self, x).shape[1]} images per task but {y} has "
                                 f"{getattr(self, y).shape[1]}; inputs and targets must pair up")
        if self.kernels is not None:
            if not isinstance(self.kernels, Tensor):
                raise TypeError(f"TaskBatch.kernels is a {type(self.kernels).__name__}; expected a Tensor [MB, kh, kw] or None")
            if self.kernels.shape[0] != mb:
                raise ValueError(f"TaskBatch.kernels has {self.kernels.shape[0]} kernels for {mb} tasks")

    @property
    def meta_batch(self) -> int:
        """Number of tasks ``MB``."""
        return int(self.support_x.shape[0])

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> TaskBatch:
        """Copy onto ``device`` (and the images to floating ``dtype``); a no-op when nothing changes."""
        def mv(t: Tensor) -> Tensor:
            return t.to(device=device, dtype=dtype if (dtype is not None and t.is_floating_point()) else None)

        k = None if self.kernels is None else self.kernels.to(device=device)
        return TaskBatch(mv(self.support_x), mv(self.support_y), mv(self.query_x), mv(self.query_y), k)

    def task(self, i: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(support_x, support_y, query_x, query_y)`` of task ``i``, each ``[TB, C, H, W]``."""
        return self.support_x[i], self.support_y[i], self.query_x[i], self.query_y[i]

    @classmethod
    def from_numpy(cls, inputa: np.ndarray, labela: np.ndarray, inputb: np.ndarray, labelb: np.ndarray,
                   kernels: np.ndarray | None = None) -> TaskBatch:
        """From the official code's NHWC arrays ``[MB, TB, H, W, C]`` (``inputa`` = support input,
        ``labela`` = support target, ``b`` = query) to NCHW float32 tensors."""
        def conv(name: str, a: np.ndarray) -> Tensor:
            a = np.asarray(a)
            if a.ndim != 5:
                raise ValueError(f"{name} has shape {a.shape}; expected [MB, TB, H, W, C]")
            return torch.from_numpy(np.ascontiguousarray(a.transpose(0, 1, 4, 2, 3), dtype=np.float32))

        k = None if kernels is None else torch.from_numpy(np.asarray(kernels, dtype=np.float32).copy())
        return cls(conv("inputa", inputa), conv("labela", labela), conv("inputb", inputb), conv("labelb", labelb), k)


@dataclass
class MAMLConfig:
    """Meta-training settings; the defaults are the official MZSR values (SPEC §4).

    * ``inner_lr``: one α for every inner step, or a list with one α per step.
    * ``loss_weighting``: ``'mzsr'`` = the official ``get_loss_weights`` with its frozen global step
      (uniform ``1/N``) and ``reduce_mean`` → ``(1/N²)·Σ_j mean_t Lq_t[j]`` (0.04·Σ for N=5);
      ``'maml++'`` = the same weights annealed with the real meta-step (MAML++ multi-step loss, as
      the official code would behave if its global step advanced), also ``reduce_mean``;
      ``'last'`` = the final step's query loss only (plain MAML).
    * ``grad_clip``: clip the meta-gradient's total L2 norm to this value (None = no clipping).
    * ``adapt_params``: fnmatch patterns on parameter names (``'conv8.*'``); only the matching
      parameters take inner steps. All trainable parameters get meta-gradients. None = all.
    * ``backend``: ``'functional'`` (built in) or ``'learn2learn'``.
    * ``precision``: ``'fp32'`` or ``'bf16'`` (autocast: the network in bf16, losses in fp32). Measured on
      the 2-core AVX2 CPU here (no native bf16 instructions), bf16 made MZSR meta-iterations 14-40x
      slower than fp32 (channels_last is the less slow bf16 layout) and moved the meta-gradient by ~19 %
      (θ_T, photo tasks); it is for hardware with bf16 units (AVX512-BF16/AMX CPUs, GPUs).
    * ``task_batching``: ``'loop'`` (tasks one after another, backward per task: least memory) or
      ``'vmap'`` (all tasks at once with :func:`torch.func.vmap`; functional backend only).
    * ``channels_last``: NHWC (channels_last) memory layout for the images (loop batching); ``None`` (default)
      chooses as :class:`~metasr_adapter.MetaSR` does: NHWC with bf16, or where
      :func:`~metasr_adapter.precision.channels_last_trains_faster` says so (CPUs with AVX-512, where an fp32
      second-order meta-gradient took 0.962x the NCHW time: ``python benchmarks/bench_meta_ab.py --threads 2
      --pairs 5 --compare channels_last``); NCHW otherwise (on a 2-core AVX2 CPU NHWC made fp32 meta-iterations
      ~10-20 % slower). The same arithmetic either way, up to float round-off.
    * ``log_query_losses``: compute the query loss after every inner step for the log (True), or only
      after the steps whose weight is not 0 (False; the others are reported as None). Under
      ``loss_weighting='last'`` False skips 4 of the 5 query forward passes (38 % of an MLSR
      meta-iteration's FLOPs on IDN); the meta-gradient is the same either way.
    * ``learn_inner_lr``: meta-learn the inner learning rates with the weights, one per adapted parameter
      tensor and inner step (MAML++'s LSLR), initialised at ``inner_lr``. They are kept as log α (always
      > 0) and stepped by their own Adam at ``inner_lr_meta_lr``: at the weights' β (~1e-5) an α near 0.65
      would hardly move in a CPU run. :meth:`MetaLearner.learned_inner_lrs` returns them; ``metasr train``
      saves them in the weights' metadata, and :class:`~metasr_adapter.MetaSR` adapts with them by
      default. Loop task batching with the functional backend only.
    * ``reuse_frozen_prefix``: when ``adapt_params`` leaves the first layers out of the inner loop (ANIL-style)
      and the network offers the cut (:func:`~metasr_adapter.adapters.contract.frozen_prefix`; MZSRNet does),
      run those layers once per task for the support and the query images instead of at every inner step
      (loop task batching, functional backend). The same operations on the same values: the losses and the
      meta-gradient are unchanged (``tests/test_meta.py``), only the repeated work goes.
    * ``conv_derivatives``: how networks built on :func:`metasr_adapter.ops.conv.conv2d` (MZSRNet) differentiate
      their convolutions while the meta-gradient is built. ``'primitive'``: every order on oneDNN's convolution
      primitives, as TensorFlow's gradients do; ``'torch'``: torch's own double backward, which computes the
      second-order weight term as a convolution with the output gradient as a 64x64 kernel. ``'auto'`` (default):
      ``'primitive'`` for second-order MAML on CPU, where it measured faster (README, speed section), else
      ``'torch'``. The same arithmetic up to float round-off; other networks are not affected.
    * ``conv_algorithm``: what computes those convolutions where the primitive path runs. ``'direct'``: oneDNN.
      ``'winograd'``: :mod:`metasr_adapter.ops.winograd` for the 3x3 layers with >= 16 channels in fp32 (every
      convolution, input and weight gradient of the graph and of its last backward), about 1e-5 relative round-off
      per convolution against ``'direct'``, which ReLU and L1 kinks can amplify in a meta-gradient as they amplify
      any perturbation (``tests/test_winograd.py``). Needs fp32 and the primitive path
      (``conv_derivatives='torch'`` conflicts; under ``'auto'`` it acts on second-order iterations on CPU).
      ``'auto'`` (default): ``'winograd'`` where its native kernels build (a C++ compiler) on a CPU with AVX-512
      (:func:`metasr_adapter.ops.winograd.chosen_by_auto`), in fp32 second-order iterations on CPU with
      ``task_threads=1``, else ``'direct'``; :meth:`MetaLearner.conv_algorithm_in_use` says which. On a 2-core
      AVX-512 EPYC the native kernels took an MZSR second-order meta-gradient to 0.47x oneDNN's time (README,
      speed section; ``python benchmarks/bench_meta_ab.py --threads 2 --pairs 8 --compare conv_algorithm``). The
      recipes that reproduce a result name ``'direct'``.
    * ``task_threads``: how many tasks of a meta-batch run at the same time on CPU (default 1: one after another,
      the exact-parity path). With ``n > 1``, ``n`` worker threads with one oneDNN/OpenMP thread each share the
      tasks (an equal run of consecutive tasks each, on its own copy of the module), so that one thread's Python
      and autograd time overlaps another's convolutions, as TensorFlow's executor overlaps graph nodes; a
      remainder of fewer than ``n`` tasks runs on the calling thread with its own thread count. The per-task
      gradients are summed in task order, so a run is reproducible, but one-thread kernels round differently
      (about 1e-4 of the meta-gradient of MZSR, whose L1 and ReLU kinks amplify round-off); ``n`` task graphs are
      in memory at once. On a 2-core AVX-512 EPYC, 2 took an MZSR second-order meta-gradient to 0.978x the time
      in fp32 and 0.979x in bf16 (medians of 8 interleaved pairs: ``python benchmarks/bench_meta_ab.py --threads 2
      --pairs 8 --precisions fp32,bf16 --compare task_threads``; README, speed section). Functional backend, loop
      task batching, ``conv_algorithm='direct'`` and a model on CPU.
    * ``adam_variant``: ``'torch'`` = ``torch.optim.Adam`` (ε added to the bias-corrected sqrt(v̂));
      ``'tf'`` = :class:`TFAdam`, TF1's ``AdamOptimizer`` arithmetic (ε added to the raw sqrt(v), i.e. an
      effective ε/sqrt(1-β2^t): 31.6·ε at the first step). The two differ visibly only while many
      |g| are below ~ε/sqrt(1-β2^t) — e.g. MZSR's first meta-steps, where most meta-gradient entries
      are < 1e-6.
    """

    inner_steps: int = 5
    inner_lr: float | list[float] = 0.01
    first_order: bool = False
    meta_lr: float = 1e-4
    loss_weighting: str = "mzsr"
    grad_clip: float | None = None
    adapt_params: list[str] | None = None
    backend: str = "functional"
    precision: str = "fp32"
    task_batching: str = "loop"
    channels_last: bool | None = None
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    adam_variant: str = "torch"
    anneal_span: float = ANNEAL_SPAN
    log_query_losses: bool = True
    learn_inner_lr: bool = False
    inner_lr_meta_lr: float = 1e-3
    reuse_frozen_prefix: bool = True
    conv_derivatives: str = "auto"
    conv_algorithm: str = "auto"
    task_threads: int = 1

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError/TypeError naming the first bad field."""
        if isinstance(self.inner_steps, bool) or not isinstance(self.inner_steps, int) or self.inner_steps < 1:
            raise ValueError(f"inner_steps={self.inner_steps!r}: needs an int >= 1")
        self.inner_lrs()  # validates inner_lr
        if not isinstance(self.first_order, bool):
            raise TypeError(f"first_order={self.first_order!r}: needs True or False")
        if not isinstance(self.log_query_losses, bool):
            raise TypeError(f"log_query_losses={self.log_query_losses!r}: needs True or False")
        if not (isinstance(self.meta_lr, (int, float)) and self.meta_lr > 0):
            raise ValueError(f"meta_lr={self.meta_lr!r}: needs a number > 0")
        check_choice("loss_weighting", self.loss_weighting, LOSS_WEIGHTINGS)
        check_choice("backend", self.backend, BACKENDS)
        check_choice("precision", self.precision, PRECISIONS)
        check_choice("task_batching", self.task_batching, TASK_BATCHING)
        check_choice("adam_variant", self.adam_variant, ADAM_VARIANTS)
        check_choice("conv_derivatives", self.conv_derivatives, CONV_DERIVATIVES)
        check_choice("conv_algorithm", self.conv_algorithm, ("auto", *CONV_ALGORITHMS))
        if self.conv_algorithm == "winograd" and self.conv_derivatives == "torch":
            raise ValueError("conv_algorithm='winograd' runs on the convolution primitives, which "
                             "conv_derivatives='torch' switches off: use conv_derivatives='auto' or 'primitive'")
        if self.conv_algorithm == "winograd" and self.precision != "fp32":
            raise ValueError(f"conv_algorithm='winograd' computes in fp32; precision={self.precision!r} "
                             "would leave it unused: use conv_algorithm='direct'")
        if self.task_batching == "vmap" and self.backend != "functional":
            raise ValueError(f"task_batching='vmap' needs backend='functional' (got backend={self.backend!r}); "
                             "use task_batching='loop' with learn2learn")
        if self.grad_clip is not None and not (isinstance(self.grad_clip, (int, float)) and self.grad_clip > 0):
            raise ValueError(f"grad_clip={self.grad_clip!r}: needs a number > 0, or None for no clipping")
        if self.adapt_params is not None:
            if isinstance(self.adapt_params, str) or not all(isinstance(p, str) for p in self.adapt_params):
                raise TypeError(f"adapt_params={self.adapt_params!r}: needs a list of fnmatch patterns, "
                                f"e.g. ['conv8.*'] (or None for all parameters)")
            if len(self.adapt_params) == 0:
                raise ValueError("adapt_params=[] selects nothing to adapt; give patterns or None for all")
        if self.channels_last is not None and not isinstance(self.channels_last, bool):
            raise TypeError(f"channels_last={self.channels_last!r}: needs True, False or None (chosen for the device)")
        if not (self.adam_eps >= 0 and len(self.adam_betas) == 2):
            raise ValueError(f"adam_eps={self.adam_eps!r}, adam_betas={self.adam_betas!r}: need eps >= 0 and two betas")
        if not self.anneal_span > 0:
            raise ValueError(f"anneal_span={self.anneal_span!r}: needs a number > 0")
        if not isinstance(self.reuse_frozen_prefix, bool):
            raise TypeError(f"reuse_frozen_prefix={self.reuse_frozen_prefix!r}: needs True or False")
        if not isinstance(self.learn_inner_lr, bool):
            raise TypeError(f"learn_inner_lr={self.learn_inner_lr!r}: needs True or False")
        if not (isinstance(self.inner_lr_meta_lr, (int, float)) and self.inner_lr_meta_lr > 0):
            raise ValueError(f"inner_lr_meta_lr={self.inner_lr_meta_lr!r}: needs a number > 0")
        if isinstance(self.task_threads, bool) or not isinstance(self.task_threads, int) or self.task_threads < 1:
            raise ValueError(f"task_threads={self.task_threads!r}: needs an int >= 1 (1: tasks one after another)")
        if self.task_threads > 1 and (self.backend, self.task_batching) != ("functional", "loop"):
            raise ValueError(f"task_threads={self.task_threads} needs backend='functional' and task_batching='loop' "
                             f"(got {self.backend!r}, {self.task_batching!r}); or use task_threads=1")
        if self.task_threads > 1 and self.conv_algorithm == "winograd":
            raise ValueError(f"task_threads={self.task_threads} needs conv_algorithm='direct' or 'auto' (the native "
                             f"Winograd kernels share the cores among their own threads); or use task_threads=1")
        if self.learn_inner_lr and (self.backend, self.task_batching) != ("functional", "loop"):
            raise ValueError(f"learn_inner_lr=True needs backend='functional' and task_batching='loop' (got "
                             f"{self.backend!r}, {self.task_batching!r})")

    def inner_lrs(self) -> list[float]:
        """α for each inner step (length ``inner_steps``)."""
        return per_step_lrs(self.inner_lr, self.inner_steps)


def _loss_list(losses: Tensor, skipped: list[bool]) -> list[float | None]:
    """Per-step losses for the info dict: None where the loss was not computed (a real NaN stays NaN)."""
    return [None if k else float(v) for v, k in zip(losses, skipped)]


# --------------------------------------------------------------------------------------------
# The meta-learner
# --------------------------------------------------------------------------------------------


class MetaLearner:
    """MAML meta-training of any ``nn.Module`` that maps an image batch to an image batch.

    ``meta_loss(batch, step)`` builds the differentiable meta-objective; ``meta_step(batch, step)``
    runs one full meta-iteration (zero grads, backward, optional clipping, Adam) and returns floats.
    The config is read at every call, so e.g. ``learner.config.first_order`` may change between steps
    (a first-order warm-up); backend, task batching, Adam variant, patterns and the loss are fixed at
    construction, and ``meta_lr`` sets the optimiser's initial rate (change it, or attach a scheduler,
    on ``learner.optimizer``).
    """

    def __init__(self, model: nn.Module, config: MAMLConfig | None = None, *, loss_fn: str | LossFn = l1_loss) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model is a {type(model).__name__}; expected a torch.nn.Module")
        self.model = model
        self.config = config if config is not None else MAMLConfig()
        self.config.validate()
        self.loss_fn = loss_fn = get_loss(loss_fn)
        self.adapt_names = select_parameters(model, self.config.adapt_params)
        self.params = [p for p in model.parameters() if p.requires_grad]
        groups: list[dict[str, Any]] = [{"params": self.params}]
        #: learned inner rates as log α, [adapted tensors, inner steps] (``config.learn_inner_lr``)
        self.log_inner_lr: nn.Parameter | None = None
        if self.config.learn_inner_lr:
            start = torch.tensor(self.config.inner_lrs(), dtype=self.params[0].dtype, device=self.params[0].device)
            self.log_inner_lr = nn.Parameter(start.log().expand(len(self.adapt_names), -1).clone())
            groups.append({"params": [self.log_inner_lr], "lr": self.config.inner_lr_meta_lr})
        adam = TFAdam if self.config.adam_variant == "tf" else torch.optim.Adam
        self.optimizer = adam(groups, lr=self.config.meta_lr, betas=tuple(self.config.adam_betas),
                              eps=self.config.adam_eps)
        self._backend = make_backend(self.config.backend, self.config.task_batching, model, self.adapt_names, loss_fn,
                                     reuse_frozen_prefix=self.config.reuse_frozen_prefix)
        self._backend_key = (self.config.backend, self.config.task_batching, self.config.adam_variant)
        self.iteration = 0
        self._task_pool: TaskThreadPool | None = None  # config.task_threads > 1: made on first use

    # ---- helpers
    @property
    def device(self) -> torch.device:
        return self.params[0].device

    def _prepare(self, batch: TaskBatch) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        if not isinstance(batch, TaskBatch):
            raise TypeError(f"batch is a {type(batch).__name__}; expected a metasr_adapter.meta.learner.TaskBatch")
        cfg = self.config
        cfg.validate()
        if (cfg.backend, cfg.task_batching, cfg.adam_variant) != self._backend_key:
            raise ValueError(f"config.backend/task_batching/adam_variant changed to "
                             f"{(cfg.backend, cfg.task_batching, cfg.adam_variant)} after construction "
                             f"{self._backend_key}; build a new MetaLearner")
        b = batch.to(self.device)
        tensors = [b.support_x, b.support_y, b.query_x, b.query_y]
        if self.channels_last and cfg.task_batching == "loop":
            # [MB,TB,C,H,W] laid out so that every task's [TB,C,H,W] slice is NHWC
            tensors = [t.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3) for t in tensors]
        return tuple(tensors)  # type: ignore[return-value]

    @contextlib.contextmanager
    def _conv_derivatives(self) -> Iterator[None]:
        """The convolution derivatives and algorithm ``config.conv_derivatives`` and ``config.conv_algorithm`` ask
        for, switched on while graphs are built."""
        cfg = self.config
        if cfg.conv_algorithm == "winograd" and self.device.type != "cpu":
            raise ValueError(f"conv_algorithm='winograd' runs on CPU; the model is on {self.device}: "
                             "use conv_algorithm='direct'")
        with primitive_derivatives(self._primitive_derivatives()), conv_algorithm(self.conv_algorithm_in_use()):
            yield

    def _primitive_derivatives(self) -> bool:
        cfg = self.config
        return cfg.conv_derivatives == "primitive" or (
            cfg.conv_derivatives == "auto" and not cfg.first_order and self.device.type == "cpu")

    def conv_algorithm_in_use(self) -> str:
        """``config.conv_algorithm``, with ``'auto'`` resolved: ``'winograd'`` when the primitive path runs (second
        order on CPU, unless ``conv_derivatives='torch'``) in fp32 with ``task_threads=1`` and
        :func:`~metasr_adapter.ops.winograd.chosen_by_auto` (the native kernels build, on an AVX-512 CPU), else
        ``'direct'``."""
        cfg = self.config
        if cfg.conv_algorithm != "auto":
            return cfg.conv_algorithm
        if (cfg.precision == "fp32" and cfg.task_threads == 1 and self.device.type == "cpu"
                and self._primitive_derivatives() and winograd.chosen_by_auto()):
            return "winograd"
        return "direct"

    @property
    def channels_last(self) -> bool:
        """Whether the images of the meta-iterations are laid out NHWC: ``config.channels_last``, or when that is
        None, bf16 or a CPU where NHWC trains faster (:func:`~metasr_adapter.precision.channels_last_trains_faster`)."""
        return resolve_channels_last(self.config.channels_last, self.device, self.config.precision)

    def _weights(self, step: int) -> tuple[Tensor, str]:
        cfg = self.config
        return query_loss_weights(cfg.loss_weighting, step, cfg.inner_steps, span=cfg.anneal_span)

    def _skipped(self, weights: Tensor) -> list[bool]:
        """Per inner step: its query loss is not computed (weight 0 and ``log_query_losses=False``)."""
        return [float(w) == 0.0 and not self.config.log_query_losses for w in weights]

    def _chunks(self, mb: int) -> Iterator[slice]:
        size = self._backend.chunk or mb
        for s in range(0, mb, size):
            yield slice(s, min(s + size, mb))

    def _param_lrs(self) -> dict[str, Tensor] | None:
        if self.log_inner_lr is None:
            return None
        rates = self.log_inner_lr.exp()
        return {n: rates[i] for i, n in enumerate(self.adapt_names)}

    def _losses(self, tensors: tuple[Tensor, ...], sl: slice, weights: Tensor,
                backend: Backend | None = None) -> tuple[Tensor, Tensor]:
        cfg = self.config
        xa, ya, xb, yb = (t[sl] for t in tensors)
        need = [float(w) != 0.0 for w in weights]
        return (backend or self._backend).task_losses(
            xa, ya, xb, yb, cfg.inner_lrs(), first_order=cfg.first_order, precision=cfg.precision, need_graph=need,
            skip=self._skipped(weights), param_lrs=self._param_lrs())

    @property
    def meta_parameters(self) -> list[nn.Parameter]:
        """Everything the meta-optimiser steps: the network's trainable parameters, and the learned log α."""
        return self.params + ([self.log_inner_lr] if self.log_inner_lr is not None else [])

    def learned_inner_lrs(self) -> dict[str, list[float]] | None:
        """The learned inner rates, adapted parameter name → one α per inner step (None without
        ``learn_inner_lr``); ``metasr_adapter.adapt.schedules.PerParameterSchedule`` adapts with them."""
        if self.log_inner_lr is None:
            return None
        rates = self.log_inner_lr.detach().exp().cpu().tolist()
        return {n: rates[i] for i, n in enumerate(self.adapt_names)}

    def set_inner_lrs(self, rates: Mapping[str, Sequence[float]]) -> None:
        """Start the learned inner rates at ``rates`` (name → one α > 0 per inner step, the format of
        :meth:`learned_inner_lrs` and of LSLR weights' saved schedule): continues an LSLR run."""
        if self.log_inner_lr is None:
            raise ValueError("set_inner_lrs needs a learner built with learn_inner_lr=True")
        names, steps = set(self.adapt_names), self.log_inner_lr.shape[1]
        if set(rates) != names:
            missing, extra = sorted(names - set(rates)), sorted(set(rates) - names)
            raise ValueError(f"the given inner rates do not match the adapted parameters: missing {missing}, "
                             f"unexpected {extra}; give one list per adapted parameter")
        table = []
        for n in self.adapt_names:
            row = [float(a) for a in rates[n]]
            if len(row) != steps or not all(math.isfinite(a) and a > 0 for a in row):
                raise ValueError(f"inner rates of {n!r}: {row}; expected {steps} finite rates > 0 "
                                 f"(one per inner step, config.inner_steps={self.config.inner_steps})")
            table.append(row)
        with torch.no_grad():
            self.log_inner_lr.copy_(torch.tensor(table, dtype=self.log_inner_lr.dtype).log())

    # ---- public API
    def meta_loss(self, batch: TaskBatch, step: int = 0) -> tuple[Tensor, dict[str, Any]]:
        """The meta-objective of ``batch`` (a scalar with a graph to the parameters) and an info dict of
        floats: 'meta_loss', 'support_loss' (mean over tasks at θ, SPEC ``total_loss1``),
        'query_losses' (per inner step, mean over tasks, SPEC ``total_losses2``), 'loss_weights'."""
        tensors = self._prepare(batch)
        weights, reduction = self._weights(step)
        with self._conv_derivatives():
            sup, qry = self._losses(tensors, slice(None), weights)
        total = qry.mean(0)
        loss = combine_query_losses(total, weights, reduction)
        info = {"meta_loss": float(loss.detach()), "support_loss": float(sup.detach().mean()),
                "query_losses": _loss_list(total.detach(), self._skipped(weights)), "loss_weights": [float(w) for w in weights]}
        return loss, info

    def meta_gradient(self, batch: TaskBatch, step: int = 0) -> dict[str, Any]:
        """Accumulate the meta-gradient of ``batch`` into ``.grad`` (zeroed first), one backward pass
        per chunk of tasks; returns the same info as :meth:`meta_loss` (without clipping or Adam).

        Under ``torch.distributed`` (see :mod:`metasr_adapter.distributed`) every rank holds the whole
        batch, works on its share of the tasks, and the gradients and losses are summed over ranks:
        the result is the single-process one up to float round-off."""
        from .. import distributed as ddp

        tensors = self._prepare(batch)
        weights, reduction = self._weights(step)
        mb = tensors[0].shape[0]
        mine = ddp.shard(mb, "meta_batch")
        self.optimizer.zero_grad(set_to_none=True)
        chunks = [slice(mine.start + sl.start, mine.start + sl.stop) for sl in self._chunks(mine.stop - mine.start)]
        if self.config.task_threads > 1 and len(chunks) > 1:
            sups, qrys = self._concurrent_gradient(tensors, chunks, weights, reduction, mb)
        else:
            sups, qrys = [], []
            for sl in chunks:
                with self._conv_derivatives():
                    sup, qry = self._losses(tensors, sl, weights)
                part = combine_query_losses(qry, weights, reduction).sum() / mb
                if part.requires_grad:
                    part.backward()
                sups.append(sup.detach())
                qrys.append(qry.detach())
        ddp.all_reduce_grads(self.meta_parameters)
        sums = ddp.all_reduce_sum(torch.cat([torch.cat(sups).sum().view(1), torch.cat(qrys).sum(0)]))
        total = sums[1:] / mb
        return {"meta_loss": float(combine_query_losses(total, weights, reduction)),
                "support_loss": float(sums[0] / mb),
                "query_losses": _loss_list(total, self._skipped(weights)), "loss_weights": [float(w) for w in weights]}

    def _concurrent_gradient(self, tensors: tuple[Tensor, ...], chunks: list[slice], weights: Tensor, reduction: str,
                             mb: int) -> tuple[list[Tensor], list[Tensor]]:
        """:meth:`meta_gradient`'s chunks split over the ``config.task_threads`` worker threads (an equal run of
        consecutive chunks each, on a copy of the module), a remainder on this thread; the chunks' gradients are
        summed into ``.grad`` in chunk order (as the one-after-another backward passes accumulate them). Returns
        the chunks' detached losses."""
        if self.device.type != "cpu":
            raise ValueError(f"task_threads={self.config.task_threads} runs tasks on CPU threads; the model is on "
                             f"{self.device}: use task_threads=1")
        n = self.config.task_threads
        if self._task_pool is None or self._task_pool.threads != n:
            if self._task_pool is not None:
                self._task_pool.close()
            self._task_pool = TaskThreadPool(n)
        params = self.meta_parameters
        named = {str(j): p for j, p in enumerate(params)}
        replicas = [self._backend.replica() for _ in range(n)]

        Part = tuple[Tensor, Tensor, dict[str, Tensor]]  # a chunk's support and query losses and its gradients

        def chunk_gradient(sl: slice, backend: Backend) -> Part:
            sup, qry = self._losses(tensors, sl, weights, backend)
            part = combine_query_losses(qry, weights, reduction).sum() / mb
            grads = gradients(named, list(named), part)[1] if part.requires_grad else {}
            return sup.detach(), qry.detach(), grads

        def chunks_gradients(mine: list[slice], backend: Backend) -> list[Part]:
            return [chunk_gradient(sl, backend) for sl in mine]

        per_worker = len(chunks) // n  # consecutive chunks per worker, one after another without waiting between
        results = []
        with self._conv_derivatives():  # process-wide switches: set once, around every thread's graphs
            if per_worker:
                jobs = [functools.partial(chunks_gradients, chunks[w * per_worker:(w + 1) * per_worker], b)
                        for w, b in enumerate(replicas)]
                results = [r for rs in self._task_pool.run(jobs) for r in rs]
            results += chunks_gradients(chunks[n * per_worker:], self._backend)
        for j, p in enumerate(params):
            grads = [r[2][str(j)] for r in results if str(j) in r[2]]
            if grads:
                total = grads[0]
                for g in grads[1:]:
                    total = total + g
                p.grad = total
        return [r[0] for r in results], [r[1] for r in results]

    def meta_step(self, batch: TaskBatch, step: int | None = None) -> dict[str, Any]:
        """One meta-iteration: meta-gradient, optional norm clipping, one Adam step.

        ``step`` is the meta-iteration index used by ``loss_weighting='maml++'`` (default: the
        learner's own counter). Returns floats: 'meta_loss', 'support_loss', 'query_losses' (list),
        'grad_norm' (before clipping), 'loss_weights' (list).
        """
        step = self.iteration if step is None else int(step)
        info = self.meta_gradient(batch, step)
        if self.config.grad_clip is not None:
            norm = nn.utils.clip_grad_norm_(self.params, float(self.config.grad_clip))
        else:
            grads = [p.grad for p in self.params if p.grad is not None]  # None: the meta-loss does not reach it
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])) if grads else torch.zeros(())
        self.optimizer.step()
        self.iteration += 1
        info["grad_norm"] = float(norm)
        if self.log_inner_lr is not None:  # learned rates: their spread, for the log
            rates = self.log_inner_lr.detach().exp()
            info["inner_lr_min"], info["inner_lr_max"] = float(rates.min()), float(rates.max())
        return info

    def state_dict(self) -> dict[str, Any]:
        """Model weights, Adam state, the iteration counter and the config (for reference)."""
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "iteration": self.iteration, "config": asdict(self.config)}
        if self.log_inner_lr is not None:
            state["log_inner_lr"] = self.log_inner_lr.detach().clone()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output (model, Adam state, iteration counter)."""
        missing = [k for k in ("model", "optimizer") if k not in state]
        if missing:
            raise KeyError(f"MetaLearner state is missing {missing}; expected the output of MetaLearner.state_dict()")
        if (self.log_inner_lr is not None) != ("log_inner_lr" in state):
            raise ValueError("the MetaLearner state was saved with learn_inner_lr="
                             f"{'log_inner_lr' in state} but this learner has learn_inner_lr={self.log_inner_lr is not None}")
        self.model.load_state_dict(state["model"])
        if self.log_inner_lr is not None:
            with torch.no_grad():
                self.log_inner_lr.copy_(state["log_inner_lr"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.iteration = int(state.get("iteration", 0))
