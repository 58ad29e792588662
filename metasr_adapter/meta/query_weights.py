"""How a meta-iteration weighs the query losses after each inner step (SPEC §4 ``get_loss_weights``; MAML++'s
annealed multi-step loss; the last step only), and the weighted sum itself."""
from __future__ import annotations

import torch
from torch import Tensor

from ..errors import check_choice

__all__ = ["LOSS_WEIGHTINGS", "ANNEAL_SPAN", "mzsr_loss_weights", "query_loss_weights", "combine_query_losses"]

LOSS_WEIGHTINGS = ("mzsr", "maml++", "last")
#: MAML++ multi-step-loss annealing span of the official get_loss_weights (SPEC §4: decay = (1/N)/(10000/3))
ANNEAL_SPAN = 10000.0 / 3.0


def mzsr_loss_weights(step: int | float, n_steps: int = 5, anneal: bool = False, *, span: float = ANNEAL_SPAN,
                      dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> Tensor:
    """The official ``get_loss_weights`` (SPEC §4) as a ``[n_steps]`` tensor.

    ``base = 1/N``, ``decay = base/span``, ``min_v = 0.03/N``; the first ``N-1`` weights are
    ``max(base - s·decay, min_v)``, the last ``min(base + s·(N-1)·decay, 1 - (N-1)·min_v)``.
    ``anneal=False`` freezes ``s = 0`` as the official code does (its global step never
    advances): uniform ``1/N`` = 0.2 for N = 5. ``anneal=True`` uses ``s = step``.
    """
    if n_steps < 1:
        raise ValueError(f"n_steps={n_steps}: needs >= 1")
    if anneal and step < 0:
        raise ValueError(f"step={step}: the meta-step is >= 0")
    s = float(step) if anneal else 0.0
    base = 1.0 / n_steps
    decay = base / span
    min_v = 0.03 / n_steps
    w = [max(base - s * decay, min_v)] * (n_steps - 1)
    w.append(min(base + s * (n_steps - 1) * decay, 1.0 - (n_steps - 1) * min_v))
    return torch.tensor(w, dtype=dtype, device=device)


def query_loss_weights(mode: str, step: int, n_steps: int, *, span: float = ANNEAL_SPAN) -> tuple[Tensor, str]:
    """``(weights [n_steps], reduction)`` of a ``loss_weighting`` mode; reduction 'mean' or 'sum'."""
    check_choice("loss_weighting", mode, LOSS_WEIGHTINGS)
    if mode in ("mzsr", "maml++"):  # float64 here; cast to the losses' dtype when combined
        return mzsr_loss_weights(step, n_steps, anneal=mode == "maml++", span=span, dtype=torch.float64), "mean"
    w = torch.zeros(n_steps, dtype=torch.float64)
    w[-1] = 1.0
    return w, "sum"


def combine_query_losses(query_losses: Tensor, weights: Tensor, reduction: str) -> Tensor:
    """``reduce(query_losses · weights)`` over the last dimension (the inner steps).

    Steps with weight 0 are left out of the sum (so no gradient work is spent on them).
    """
    if query_losses.shape[-1] != weights.shape[-1]:
        raise ValueError(f"{query_losses.shape[-1]} query losses but {weights.shape[-1]} weights")
    w = weights.to(query_losses)
    keep = [j for j in range(w.shape[-1]) if float(w[j]) != 0.0]
    total = (query_losses[..., keep] * w[keep]).sum(-1)
    return total / w.shape[-1] if reduction == "mean" else total
