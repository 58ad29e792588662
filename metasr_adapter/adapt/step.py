"""The adaptation step, written once: ``θ ← θ − α·∇θ L(θ)`` on the adapted parameters.

Test-time adaptation (:class:`~metasr_adapter.adapt.session.Adaptation`), meta-training's inner loop
(:func:`~metasr_adapter.meta.inner.inner_adapt`) and the kernel search's scorer
(:mod:`metasr_adapter.estimate.gaussian_search`) all step with it. In the spirit of learn2learn's
``clone()`` / ``adapt(loss)``, but functional: weights are a ``{name: tensor}`` dict that the network runs on
(``torch.func.functional_call``), and a step returns a new dict.

* :func:`clone_weights` — private copies of a network's parameters, the adapted ones requiring gradients;
* :func:`gradients` — a loss closure evaluated at the weights (bf16 autocast when asked) and its gradients;
* :func:`sgd_update` — ``θ − α·g`` per tensor, with one rate or one per tensor (schedules' ``step_size``,
  learned rates);
* :func:`sgd_step` — both.

Every one works inside ``torch.no_grad()`` and ``torch.inference_mode()`` (pipelines call adaptation there):
autograd is switched on for the step, and the weights it returns are normal tensors. With
``differentiable=True`` the new weights stay functions of the old ones (meta-training: with
``create_graph=True`` through the gradients too, second order); otherwise they are fresh leaves (test time).

The rule for which parameters adapt (:func:`select_parameters`) lives here too, for meta-training and test
time alike, and :func:`functional_loss`, the loss of a network on given weights.
"""
from __future__ import annotations

import contextlib
import fnmatch
from typing import Callable, Iterable, Iterator, Mapping, Sequence, Union

import torch
from torch import Tensor, nn
from torch.func import functional_call

from ..ops.losses import LossFn, l1_loss
from ..precision import autocast

__all__ = ["grad_mode", "autograd_ready", "select_parameters", "clone_weights", "functional_loss", "gradients",
           "sgd_update", "sgd_step", "Rate"]

#: a learning rate: one for every tensor (a number, or a tensor to differentiate through), or per tensor name
Rate = Union[float, Tensor, Callable[[str], Union[float, Tensor]]]
Weights = Mapping[str, Tensor]
LossClosure = Callable[[dict[str, Tensor]], Tensor]


@contextlib.contextmanager
def grad_mode(enabled: bool = True) -> Iterator[None]:
    """Autograd on (or off with ``enabled=False``) whatever the caller's mode, also inside ``torch.no_grad()``
    and ``torch.inference_mode()``; tensors made here are normal tensors that autograd can use later."""
    with torch.inference_mode(False), torch.set_grad_enabled(enabled):
        yield


def autograd_ready(t: Tensor) -> Tensor:
    """``t``, or a normal copy of it when it was made under ``torch.inference_mode()`` (autograd cannot save
    inference tensors for its backward pass)."""
    if not t.is_inference():
        return t
    with torch.inference_mode(False):
        return t.clone()


def select_parameters(model: nn.Module, patterns: Sequence[str] | None, *, include_frozen: bool = False) -> list[str]:
    """Names of the parameters that adapt: the trainable ones matching any fnmatch pattern (None = all
    trainable). This one rule serves meta-training's inner steps and test-time adaptation alike.

    ``include_frozen`` lets patterns also name ``requires_grad=False`` parameters (the caller asks for
    them explicitly). A pattern that matches nothing raises ValueError listing the names.
    """
    names = [n for n, p in model.named_parameters() if p.requires_grad or include_frozen]
    if not names:
        raise ValueError(f"{type(model).__name__} has no trainable parameters (all requires_grad=False); "
                         "pass adapt_params=['*'] to adapt them anyway")
    if patterns is None:
        return names
    if isinstance(patterns, str):
        raise TypeError(f"patterns={patterns!r}: needs a list of fnmatch patterns, e.g. [{patterns!r}]")
    for pat in patterns:
        if not any(fnmatch.fnmatchcase(n, pat) for n in names):
            shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
            raise ValueError(f"adapt_params pattern {pat!r} matches no trainable parameter of "
                             f"{type(model).__name__}; names are: {shown}")
    return [n for n in names if any(fnmatch.fnmatchcase(n, pat) for pat in patterns)]


def clone_weights(items: Iterable[tuple[str, Tensor]], names: Iterable[str]) -> dict[str, Tensor]:
    """Private copies of ``items`` (``(name, tensor)`` pairs, e.g. ``model.named_parameters()``), detached from
    them; those in ``names`` require gradients. The network's own parameters are never touched."""
    adapted = set(names)
    with grad_mode(False):
        return {n: p.detach().clone().requires_grad_(n in adapted) for n, p in items}


def functional_loss(model: nn.Module, params: Weights, x: Tensor, y: Tensor, *, loss_fn: LossFn = l1_loss,
                    precision: str = "fp32", forward: Callable[[object, Weights], Tensor] | None = None) -> Tensor:
    """``loss_fn(model(x; params), y)``; under bf16 autocast the network runs in bf16, the loss in fp32.
    Parameters and buffers missing from ``params`` are the module's own. ``forward(x, params)`` replaces the
    model's own call (a :class:`~metasr_adapter.adapters.contract.FrozenPrefix` suffix, ``x`` its prefix's state)."""
    with autocast(precision, y.device.type):
        out = functional_call(model, dict(params), (x,)) if forward is None else forward(x, params)
    return loss_fn(out.to(y.dtype), y)


def _device_type(params: Weights, names: Sequence[str]) -> str:
    return params[names[0]].device.type if names else "cpu"


def gradients(params: Weights, names: Sequence[str], loss: LossClosure | Tensor, *, create_graph: bool = False,
              precision: str = "fp32") -> tuple[Tensor, dict[str, Tensor]]:
    """``(loss, {name: ∂loss/∂params[name]})`` for ``names``; names the loss does not use are left out.

    ``loss``: a closure ``loss(params) -> scalar`` (run here, under autograd and, for ``precision='bf16'``,
    under bf16 autocast on the weights' device), or a loss already computed from ``params`` under autograd.
    ``create_graph=True`` keeps the gradients differentiable (second-order MAML).
    """
    with grad_mode():
        if callable(loss):
            with autocast(precision, _device_type(params, names)):
                value = loss(dict(params))
        else:
            value = loss
        grads = torch.autograd.grad(value, [params[n] for n in names], create_graph=create_graph, allow_unused=True)
    return value, {n: g for n, g in zip(names, grads) if g is not None}


def sgd_update(params: Weights, grads: Mapping[str, Tensor], rate: Rate, *, differentiable: bool = False
               ) -> dict[str, Tensor]:
    """``θ − α·g`` for each tensor in ``grads``; the others are passed on as they are.

    ``rate``: one α (a number, or a tensor the result is differentiable in), or ``rate(name)`` giving each
    tensor's own (a schedule's :func:`~metasr_adapter.adapt.schedules.step_size`, learned rates).
    ``differentiable=False`` returns the new weights as fresh leaves that require gradients (test time: each
    step starts from the last one's weights); True keeps them functions of ``params`` (and of the rates).
    A number α is applied as ``torch.sub(θ, g, alpha=α)``, one rounding, as an in-place SGD step would.
    """
    new = dict(params)
    with grad_mode(differentiable):
        for n, g in grads.items():
            alpha = rate(n) if callable(rate) else rate
            theta = params[n]
            if isinstance(alpha, Tensor):
                step = theta - alpha * g
            else:
                step = torch.sub(theta, g, alpha=float(alpha))
            new[n] = step if differentiable else step.requires_grad_(True)
    return new


def sgd_step(params: Weights, names: Sequence[str], loss: LossClosure | Tensor, rate: Rate, *,
             create_graph: bool = False, differentiable: bool | None = None, precision: str = "fp32"
             ) -> tuple[dict[str, Tensor], Tensor]:
    """One adaptation step: ``(new weights, the loss before it)`` — :func:`gradients` then :func:`sgd_update`.

    ``differentiable`` defaults to ``create_graph``: second-order meta-training keeps both the graph through
    the gradients and through the update; first-order meta-training passes ``create_graph=False,
    differentiable=True`` (the gradients are constants, the new weights still depend on the old); test time
    leaves both False.
    """
    differentiable = create_graph if differentiable is None else differentiable
    if create_graph and not differentiable:
        raise ValueError("create_graph=True (second order) needs differentiable=True: the update must keep the graph")
    value, grads = gradients(params, names, loss, create_graph=create_graph, precision=precision)
    return sgd_update(params, grads, rate, differentiable=differentiable), value
