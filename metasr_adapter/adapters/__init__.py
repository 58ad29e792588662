"""Network adapters: SR architectures that :class:`~metasr_adapter.MetaSR` can wrap.

Architectures are registered by name and imported lazily, so one broken optional
architecture never breaks ``import metasr_adapter``.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping

from torch import nn

from ..errors import UnknownNameError

__all__ = ["register_model", "get_model", "get_model_factory", "list_models", "scale_kwargs",
           "state_dict_from_foreign", "foreign_variables"]

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
        raise UnknownNameError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
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


def foreign_variables(names: list[str]) -> list[str] | None:
    """The variables to read from a checkpoint whose names follow a layout an adapter converts (the
    official MZSR TensorFlow checkpoint), or None when no adapter knows the layout."""
    from .mzsr import official_tf_names, official_tf_prefix

    prefix = official_tf_prefix(names)
    return None if prefix is None else official_tf_names(names, prefix)


def state_dict_from_foreign(arrays: Mapping[str, Any]) -> dict[str, Any] | None:
    """``arrays`` converted to a PyTorch state dict by the adapter whose foreign layout they follow
    (official MZSR TF names → :class:`~.mzsr.MZSRNet`), or None when no adapter knows them."""
    from .mzsr import mzsr_state_dict_from_tf, official_tf_prefix

    prefix = official_tf_prefix(list(arrays))
    return None if prefix is None else mzsr_state_dict_from_tf(arrays, prefix=prefix)
