"""Adam with the arithmetic of TF1's ``AdamOptimizer`` (SPEC §4), for the meta-gradient parity tests."""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

__all__ = ["TFAdam"]


class TFAdam(torch.optim.Optimizer):
    """Adam with TF1 ``AdamOptimizer`` arithmetic (SPEC §4):
    ``m ← β1·m + (1-β1)·g``, ``v ← β2·v + (1-β2)·g²``,
    ``θ ← θ - lr·sqrt(1-β2^t)/(1-β1^t) · m/(sqrt(v) + ε)``."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        if not lr > 0 or not eps >= 0 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"TFAdam(lr={lr}, betas={betas}, eps={eps}): need lr > 0, eps >= 0, 0 <= beta < 1")
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps})

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if not st:
                    st["step"] = torch.zeros((), dtype=torch.float64)
                    st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                st["step"] += 1
                t = float(st["step"])
                m, v = st["exp_avg"], st["exp_avg_sq"]
                m.mul_(b1).add_(p.grad, alpha=1 - b1)
                v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                lr_t = group["lr"] * (1 - b2**t) ** 0.5 / (1 - b1**t)
                p.addcdiv_(m, v.sqrt().add_(group["eps"]), value=-lr_t)
        return loss
