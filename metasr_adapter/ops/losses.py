"""Losses by name: one module that test-time adaptation, pretraining and meta-training all use."""
from __future__ import annotations

from typing import Callable

from torch import Tensor
from torch.nn import functional as F

__all__ = ["LossFn", "LOSSES", "l1_loss", "l2_loss", "get_loss"]

LossFn = Callable[[Tensor, Tensor], Tensor]


def l1_loss(output: Tensor, target: Tensor) -> Tensor:
    """Mean absolute error over all elements (TF ``absolute_difference``, SPEC §4)."""
    return F.l1_loss(output, target, reduction="mean")


def l2_loss(output: Tensor, target: Tensor) -> Tensor:
    """Mean squared error over all elements (MLSR's loss)."""
    return F.mse_loss(output, target, reduction="mean")


#: losses by name, for recipes and ``MetaSR(loss=...)``: 'l1' (MZSR, ZSSR) and 'l2' (MLSR)
LOSSES: dict[str, LossFn] = {"l1": l1_loss, "l2": l2_loss}


def get_loss(loss: str | LossFn) -> LossFn:
    """A loss function from its name in :data:`LOSSES`, or a callable ``loss(output, target)`` as is."""
    if callable(loss):
        return loss
    key = str(loss).strip().lower()
    if key not in LOSSES:
        raise ValueError(f"loss={loss!r}; use one of {sorted(LOSSES)} or a callable loss(output, target)")
    return LOSSES[key]
