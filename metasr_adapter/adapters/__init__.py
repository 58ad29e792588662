"""Network adapters: SR architectures that :class:`~metasr_adapter.MetaSR` can wrap.

Architectures are registered by name and imported lazily, so one broken optional
architecture never breaks ``import metasr_adapter``.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable

from torch import nn

__all__ = ["register_model", "get_model", "get_model_factory", "list_models", "scale_kwargs"]

# name -> "module:attribute" (imported on first use) or a factory callable
_REGISTRY: dict[str, str | Callable[..., nn.Module]] = {
    "mzsr": "metasr_adapter.adapters.mzsr:MZSRNet",
    "rcan": "metasr_adapter.adapters.rcan:RCAN",
    "idn": "metasr_adapter.adapters.idn:IDN",
    # any BasicSR architecture: get_model("basicsr", type="RCAN", upscale=2, ...) (needs basicsr)
    "basicsr": "metasr_adapter.integrations.basicsr:build_basicsr_network",
}


def register_model(name: str, factory: str | Callable[..., nn.Module]) -> None:
    """Register ``factory`` (a callable, or ``"module:attr"`` imported lazily) under ``name``."""
    key = name.lower()
    if key in _REGISTRY:
        raise ValueError(f"model name {name!r} is already registered; pick another name")
    _REGISTRY[key] = factory


def list_models() -> list[str]:
    """Names accepted by :func:`get_model`."""
    return sorted(_REGISTRY)


def get_model_factory(name: str) -> Callable[..., nn.Module]:
    """The class or callable registered under ``name`` (imported now if it was registered lazily)."""
    key = name.lower()
    if key not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    factory = _REGISTRY[key]
    if isinstance(factory, str):
        module_name, _, attr = factory.partition(":")
        factory = getattr(importlib.import_module(module_name), attr)
    return factory


def get_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered architecture by name (weights are loaded separately)."""
    return get_model_factory(name)(**kwargs)


def scale_kwargs(name: str, scale: float) -> dict[str, int]:
    """``{'scale': N}`` for architectures built for one SR factor (a ``scale`` constructor argument,
    e.g. RCAN, IDN), ``{}`` for the others (MZSR works at any factor)."""
    import inspect

    try:
        params = inspect.signature(get_model_factory(name)).parameters
    except (TypeError, ValueError):
        return {}
    if "scale" not in params:
        return {}
    if float(scale) != int(scale):
        raise ValueError(f"scale {scale:g}: the {name} network upsamples by an integer factor; use 2, 3 or 4")
    return {"scale": int(scale)}
