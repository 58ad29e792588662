"""The inner loop of MAML as a function: a few differentiable SGD steps from given weights, the same step
test-time adaptation takes (:func:`metasr_adapter.adapt.step.sgd_step`)."""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

from torch import Tensor, nn

from ..adapt.step import autograd_ready, functional_loss, grad_mode, sgd_step
from ..ops.losses import LossFn, l1_loss

__all__ = ["inner_adapt", "per_step_lrs"]


def per_step_lrs(lr: float | Sequence[float], steps: int) -> list[float]:
    """``lr`` as one α per inner step: a number repeated, or a list of exactly ``steps`` numbers."""
    if isinstance(lr, (int, float)) and not isinstance(lr, bool):
        return [float(lr)] * steps
    if isinstance(lr, (list, tuple)) and all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in lr):
        if len(lr) != steps:
            raise ValueError(f"inner_lr has {len(lr)} values for {steps} inner steps; give one α per step or a single number")
        return [float(a) for a in lr]
    raise TypeError(f"inner_lr={lr!r}: needs a number or a list of numbers (one per inner step)")


def inner_adapt(model: nn.Module, params: Mapping[str, Tensor], x: Tensor, y: Tensor, steps: int,
                lr: float | Sequence[float], *, create_graph: bool, loss_fn: LossFn = l1_loss,
                adapt: Sequence[str] | None = None, precision: str = "fp32", return_losses: bool = False,
                param_lrs: Mapping[str, Tensor] | None = None,
                forward: Callable[[Any, Mapping[str, Tensor]], Tensor] | None = None,
                ) -> list[dict[str, Tensor]] | tuple[list[dict[str, Tensor]], list[Tensor]]:
    """``steps`` SGD steps ``θ_{j+1} = θ_j - α_j ∇_θ loss_fn(model(x; θ_j), y)`` on the names in ``adapt``.

    ``params``: name → tensor (e.g. ``dict(model.named_parameters())``); names left out of the dict
    are taken from the module. ``lr``: one α or one per step. ``create_graph=True`` keeps the inner
    gradients differentiable (second order); ``False`` treats them as constants (first order) while the
    returned weights still depend on ``params``. ``param_lrs``: name → tensor ``[steps]`` of per-tensor rates
    that replace ``lr`` for those names (learned rates: the result is differentiable in them). Returns the
    parameter dicts after steps 1..``steps`` (and, with ``return_losses``, the support losses at
    θ_0..θ_{steps-1}). ``forward(x, weights)``: what runs the network on ``x`` (default: the model itself); with a
    :class:`~metasr_adapter.adapters.contract.FrozenPrefix`'s suffix, ``x`` is its prefix's state, computed once.
    """
    lrs = per_step_lrs(lr, steps)
    param_lrs = param_lrs or {}
    fast = dict(params)
    names = [n for n, p in fast.items() if p.is_floating_point()] if adapt is None else list(adapt)
    missing = [n for n in names if n not in fast]
    if missing:
        raise ValueError(f"adapt names {missing} are not in params; params has {sorted(fast)[:8]}...")
    with grad_mode():  # the steps need gradients, also under torch.no_grad() / torch.inference_mode()
        x = autograd_ready(x) if isinstance(x, Tensor) else x
        y = autograd_ready(y)
        for n in names:  # e.g. detached weights at test time: gradients are still needed for the steps
            if not fast[n].requires_grad:
                fast[n] = autograd_ready(fast[n]).detach().requires_grad_(True)
    trajectory: list[dict[str, Tensor]] = []
    losses: list[Tensor] = []

    def support_loss(weights: dict[str, Tensor]) -> Tensor:
        return functional_loss(model, weights, x, y, loss_fn=loss_fn, forward=forward)

    for j, alpha in enumerate(lrs):
        rate = (lambda n, j=j, alpha=alpha: param_lrs[n][j] if n in param_lrs else alpha) if param_lrs else alpha
        fast, loss = sgd_step(fast, names, support_loss, rate, create_graph=create_graph, differentiable=True,
                              precision=precision)
        trajectory.append(fast)
        losses.append(loss)
    return (trajectory, losses) if return_losses else trajectory
