"""The interchangeable MAML implementations behind :class:`~metasr_adapter.meta.learner.MetaLearner`: for a slice
of tasks, the support loss at θ ``[m]`` and the query losses after each inner step ``[m, N]``, differentiable
w.r.t. the model's parameters. ``'loop'`` (tasks one after another), ``'vmap'`` (all at once) and learn2learn's
``MAML`` give the same numbers."""
from __future__ import annotations

import contextlib
import copy
from typing import Mapping

import torch
from torch import Tensor, nn
from torch.func import grad_and_value, vmap

from ..adapt.step import functional_loss, sgd_update
from ..adapters.contract import frozen_prefix
from ..ops.losses import LossFn
from ..precision import autocast
from .inner import inner_adapt

__all__ = ["Backend", "make_backend", "LEARN2LEARN_HINT"]

LEARN2LEARN_HINT = (
    "pip install learn2learn==0.2.0 (source-only: it needs Cython 3, `--no-build-isolation`, and "
    "torchvision/gym/scipy/requests/tqdm at import time), or use backend='functional', which gives "
    "the same results without an extra dependency"
)


class Backend:
    """Internal interface of a MAML implementation."""

    #: tasks per backward pass in MetaLearner.meta_step (None = all at once)
    chunk: int | None = 1

    def __init__(self, model: nn.Module, adapt: list[str], loss_fn: LossFn) -> None:
        self.model = model
        self.adapt = adapt
        self.loss_fn = loss_fn

    def task_losses(self, xa: Tensor, ya: Tensor, xb: Tensor, yb: Tensor, lrs: list[float], *, first_order: bool,
                    precision: str, need_graph: list[bool], skip: list[bool],
                    param_lrs: Mapping[str, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """Inputs ``[m, TB, C, H, W]``; returns support losses ``[m]`` and query losses ``[m, N]``.
        ``need_graph[j]``: step j's query loss enters the meta-objective; ``skip[j]``: it is not computed
        at all (NaN in its column). ``param_lrs``: learned per-tensor rates (loop backend only)."""
        raise NotImplementedError


class _LoopBackend(Backend):
    """Built in: tasks one after another, inner steps with :func:`inner_adapt`."""

    chunk = 1

    def __init__(self, model: nn.Module, adapt: list[str], loss_fn: LossFn, *, reuse_prefix: bool = True,
                 source: nn.Module | None = None) -> None:
        super().__init__(model, adapt, loss_fn)
        self.reuse_prefix = reuse_prefix
        #: ANIL-style inner loops (only the last layers adapt): the frozen layers run once per task and input
        self.cut = frozen_prefix(model, adapt) if reuse_prefix else None
        #: the module whose trainable parameters the losses differentiate (``model`` itself, or the original of a
        #: :meth:`replica`)
        self.source = model if source is None else source

    def replica(self) -> "_LoopBackend":
        """The same backend on a copy of the model, for another thread: ``functional_call`` swaps a module's
        parameters while it runs, so two threads cannot share one module. The losses still differentiate this
        backend's model's parameters; the copy lends its structure and its frozen tensors (copied now)."""
        return _LoopBackend(copy.deepcopy(self.model), self.adapt, self.loss_fn, reuse_prefix=self.reuse_prefix,
                            source=self.source)

    def task_losses(self, xa, ya, xb, yb, lrs, *, first_order, precision, need_graph, skip, param_lrs=None):
        params = {n: p for n, p in self.source.named_parameters() if p.requires_grad}
        sup, qry = [], []
        for t in range(xa.shape[0]):
            support, query, forward = xa[t], xb[t], None
            if self.cut is not None:  # the same ops as the whole network's, with the prefix's part done once
                with autocast(precision, support.device.type):
                    support, query = self.cut.prefix(support, params), self.cut.prefix(query, params)
                forward = self.cut.suffix
            traj, sl = inner_adapt(self.model, params, support, ya[t], len(lrs), lrs, create_graph=not first_order,
                                   loss_fn=self.loss_fn, adapt=self.adapt, precision=precision, return_losses=True,
                                   param_lrs=param_lrs, forward=forward)
            q = []
            for fast, g, k in zip(traj, need_graph, skip):
                if k:
                    q.append(_skipped_loss(sl[0]))
                    continue
                with contextlib.nullcontext() if g else torch.no_grad():
                    q.append(functional_loss(self.model, fast, query, yb[t], loss_fn=self.loss_fn,
                                             precision=precision, forward=forward))
            sup.append(sl[0])
            qry.append(torch.stack(q))
        return torch.stack(sup), torch.stack(qry)


class _VmapBackend(Backend):
    """Built in: all tasks at once, ``vmap`` over the task dimension with ``torch.func`` inner gradients
    (convolutions with per-task weights become grouped convolutions)."""

    chunk = None

    def task_losses(self, xa, ya, xb, yb, lrs, *, first_order, precision, need_graph, skip, param_lrs=None):
        if param_lrs:
            raise ValueError("learned inner learning rates need the loop backend")  # MAMLConfig.validate says so first
        params = {n: p for n, p in self.model.named_parameters() if p.requires_grad}
        adapted = {n: params[n] for n in self.adapt}
        fixed = {n: p for n, p in params.items() if n not in adapted}
        model, loss_fn = self.model, self.loss_fn

        def loss_at(ad: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
            return functional_loss(model, {**fixed, **ad}, x, y, loss_fn=loss_fn, precision=precision)

        step_grad = grad_and_value(loss_at)

        def one_task(ad, xs, ys, xq, yq):
            fast, qs, s0 = ad, [], None
            for alpha, skip_j in zip(lrs, skip):
                g, loss = step_grad(fast, xs, ys)
                if s0 is None:
                    s0 = loss
                if first_order:
                    g = {k: v.detach() for k, v in g.items()}
                fast = sgd_update(fast, g, alpha, differentiable=True)
                if not skip_j:
                    qs.append(loss_at(fast, xq, yq))
            return s0, torch.stack(qs)

        sup, computed = vmap(one_task, in_dims=(None, 0, 0, 0, 0))(adapted, xa, ya, xb, yb)
        columns = iter(computed.unbind(1))
        qry = torch.stack([_skipped_loss(sup) if k else next(columns) for k in skip], 1)
        if not all(need_graph):  # zero-weight steps: values for logging only
            qry = torch.stack([q if g else q.detach() for q, g in zip(qry.unbind(1), need_graph)], 1)
        return sup, qry


def _skipped_loss(like: Tensor) -> Tensor:
    """The placeholder of a query loss that was not computed (``log_query_losses=False``): NaN, no graph."""
    return torch.full_like(like.detach(), float("nan"))


def _import_learn2learn():
    try:
        import learn2learn as l2l
    except ImportError as e:
        raise ImportError(f"MAMLConfig(backend='learn2learn') needs learn2learn, which cannot be imported here "
                          f"({e}). {LEARN2LEARN_HINT}") from e
    return l2l


class _L2LBackend(Backend):
    """learn2learn's ``l2l.algorithms.MAML``: ``clone()`` per task, ``adapt()`` per inner step
    (``maml_update`` with per-parameter gradients when only some parameters are adapted)."""

    chunk = 1

    def __init__(self, model: nn.Module, adapt: list[str], loss_fn: LossFn) -> None:
        super().__init__(model, adapt, loss_fn)
        self.l2l = _import_learn2learn()
        self.maml = self.l2l.algorithms.MAML(model, lr=0.0, first_order=False, allow_unused=True, allow_nograd=True)
        trainable = [n for n, p in model.named_parameters() if p.requires_grad]
        self.adapt_all = set(adapt) == set(trainable)

    def _loss(self, learner: nn.Module, x: Tensor, y: Tensor, precision: str) -> Tensor:
        with autocast(precision, x.device.type):
            out = learner(x)
        return self.loss_fn(out.to(y.dtype), y)

    def task_losses(self, xa, ya, xb, yb, lrs, *, first_order, precision, need_graph, skip, param_lrs=None):
        if param_lrs:
            raise ValueError("learned inner learning rates need the loop backend")  # MAMLConfig.validate says so first
        adapt = set(self.adapt)
        sup, qry = [], []
        for t in range(xa.shape[0]):
            learner = self.maml.clone()
            q, s0 = [], None
            for alpha, g, k in zip(lrs, need_graph, skip):
                loss = self._loss(learner, xa[t], ya[t], precision)
                if s0 is None:
                    s0 = loss
                if self.adapt_all:
                    learner.lr = alpha
                    learner.adapt(loss, first_order=first_order)
                else:
                    named = list(learner.module.named_parameters())
                    sel = [p for n, p in named if n in adapt]
                    grads = iter(torch.autograd.grad(loss, sel, create_graph=not first_order,
                                                     retain_graph=not first_order, allow_unused=True))
                    full = [next(grads) if n in adapt else None for n, _ in named]
                    self.l2l.algorithms.maml.maml_update(learner.module, alpha, full)
                if k:
                    q.append(_skipped_loss(s0))
                    continue
                with contextlib.nullcontext() if g else torch.no_grad():
                    q.append(self._loss(learner, xb[t], yb[t], precision))
            sup.append(s0)
            qry.append(torch.stack(q))
        return torch.stack(sup), torch.stack(qry)


def make_backend(name: str, task_batching: str, model: nn.Module, adapt: list[str], loss_fn: LossFn, *,
                 reuse_frozen_prefix: bool = False) -> Backend:
    """The backend that ``MAMLConfig(backend=name, task_batching=...)`` asks for."""
    if name == "learn2learn":
        return _L2LBackend(model, adapt, loss_fn)
    if task_batching == "vmap":
        return _VmapBackend(model, adapt, loss_fn)
    return _LoopBackend(model, adapt, loss_fn, reuse_prefix=reuse_frozen_prefix)
