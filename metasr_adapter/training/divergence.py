"""Telling a training run that went wrong: non-finite losses or weights, the recipe key that most likely
caused it with the ``--set`` that fixes it, and PSNR drops against a reference (collapse)."""
from __future__ import annotations

import math
from typing import Any, Mapping

import torch
from torch import nn

__all__ = ["fmt_rate", "rate_hint", "finite_step", "finite_weights", "divergence_message", "psnr_drop"]


def fmt_rate(value: Any, factor: float = 1.0) -> str:
    """A learning rate (or a list of them, e.g. per-step inner rates) as YAML for ``--set``."""
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(f"{float(v) * factor:g}" for v in value) + "]"
    return f"{float(value) * factor:g}"


def rate_hint(recipe: Mapping[str, Any], stage: str, first: str | None = None) -> str:
    """The recipe keys that set ``stage``'s step sizes with their values, ``first`` (the most likely
    culprit) leading, and the ``--set`` that lowers it tenfold."""
    if stage == "pretrain":
        keys = {"pretrain.lr": recipe["pretrain"]["lr"]}
    else:
        m = recipe["meta"]
        keys = {"meta.meta_lr": m["meta_lr"], "meta.inner_lr": m["inner_lr"]}
        if m.get("learn_inner_lr"):
            keys["meta.inner_lr_meta_lr"] = m.get("inner_lr_meta_lr")
    first = first if first in keys else next(iter(keys))
    others = [f"{k} = {fmt_rate(v)}" for k, v in keys.items() if k != first and v is not None]
    text = f"most likely {first} = {fmt_rate(keys[first])} is too large"
    if others:
        text += f" (also check {', '.join(others)})"
    return f"{text}; lower it, e.g. --set {first}={fmt_rate(keys[first], 0.1)}"


def finite_step(info: Mapping[str, Any]) -> bool:
    """Whether a step's logged losses are finite (None: a loss that was not computed)."""
    values: list[Any] = []
    for key in ("loss", "meta_loss", "support_loss", "query_losses"):
        v = info.get(key)
        values.extend(v if isinstance(v, (list, tuple)) else [v])
    return all(v is None or math.isfinite(float(v)) for v in values)


def finite_weights(model: nn.Module) -> bool:
    with torch.no_grad():
        flags = [torch.isfinite(p).all() for p in model.parameters()]
        return bool(torch.stack(flags).all()) if flags else True


def divergence_message(recipe: Mapping[str, Any], stage: str, step: int, info: Mapping[str, Any],
                        cause: str | None = None) -> str:
    """Why ``stage`` stopped at ``step`` (1-based, as in the metrics log) with non-finite numbers, naming
    the recipe key that most likely caused it and the ``--set`` that fixes it."""
    shown = ", ".join(f"{k} {float(info[k]):.4g}" for k in ("loss", "support_loss", "meta_loss")
                      if isinstance(info.get(k), (int, float)))
    what = shown or cause or "non-finite weights"
    if stage == "pretrain":
        return f"pretraining diverged at step {step} ({what}): {rate_hint(recipe, 'pretrain')}"
    support = info.get("support_loss")
    finite_support = isinstance(support, (int, float)) and math.isfinite(support)
    if not info:  # the step itself raised
        how, first = cause or "a non-finite value", "meta.inner_lr"
    elif finite_support and (support <= 1.0 or step == 1):
        # the weights still fit the support images (an image loss of working weights is well below 1):
        # the inner adaptation steps blew up
        how, first = "the inner adaptation steps diverged", "meta.inner_lr"
    elif step == 1 and not finite_support:
        w = recipe["model"]["weights"]
        return (f"meta-training stopped at meta-iteration 1 ({what}): the starting weights give a non-finite loss "
                f"before any meta-update; check model.weights = {w}" if w is not None else
                f"meta-training stopped at meta-iteration 1 ({what}): the starting weights give a non-finite loss "
                f"before any meta-update; check the pretraining ({rate_hint(recipe, 'pretrain')})")
    elif support is not None:
        # the weights were broken before this iteration's inner steps: the meta-updates did it
        how, first = "the earlier meta-updates broke the weights", "meta.meta_lr"
    else:
        how, first = "the meta-update made the weights non-finite", "meta.meta_lr"
    return f"meta-training diverged at meta-iteration {step} ({what}; {how}): {rate_hint(recipe, 'meta', first)}"


def psnr_drop(current: Mapping[str, Any], reference: Mapping[str, Any]) -> tuple[float, float] | None:
    """``(best current, best reference)`` mean PSNR over the adaptation step counts both measured."""
    common = [k for k in current if str(k).isdigit() and k in reference]
    if not common:
        return None
    return max(float(current[k]) for k in common), max(float(reference[k]) for k in common)
