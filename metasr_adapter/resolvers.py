"""Kernel names that the adaptation layer accepts but a higher layer resolves.

``MetaSR.adapt(img, kernel="estimate")`` estimates the blur kernel first. The estimators (``estimate/``) build
on the adaptation layer (``adapt/``: they score candidate kernels by adapting to them), so ``adapt/`` may not
import them. It looks the name up here instead, and the package's ``__init__`` — the composition root, above
every layer — registers ``"estimate"`` as a lazy ``"module:attr"`` reference, imported at its first use. The
wiring holds for every import path (``metasr_adapter/__init__.py`` runs before any submodule) and keeps
``import metasr_adapter`` free of torch.

A resolver is called as ``resolver(msr, lr_img, ds_method, seed=seed)`` and returns ``(kernel, info)``: a
kernel ``MetaSR.start`` accepts (a :class:`~metasr_adapter.ops.kernels.KernelSpec`, an array...) and what
``AdaptInfo.kernel_estimate`` records. :func:`register_kernel_resolver` adds your own names.

A root-level utility: it imports nothing of the package.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable

__all__ = ["register_kernel_resolver", "kernel_resolver", "kernel_resolver_names"]

KernelResolver = Callable[..., tuple[Any, Any]]

#: name (lower case) -> a resolver, or ``"module:attr"`` imported at first use
_RESOLVERS: dict[str, str | KernelResolver] = {}


def register_kernel_resolver(name: str, resolver: str | KernelResolver, *, replace: bool = False) -> None:
    """Make ``kernel=name`` (any case) resolve through ``resolver``: a callable, or ``"module:attr"`` imported
    on first use. A name that is taken raises ValueError unless ``replace=True``."""
    key = name.strip().lower()
    if not key:
        raise ValueError("a kernel resolver needs a name, e.g. 'estimate'")
    if isinstance(resolver, str) and ":" not in resolver:
        raise ValueError(f"resolver {resolver!r}: give a callable or 'module:attr'")
    if key in _RESOLVERS and not replace:
        raise ValueError(f"kernel name {name!r} already has a resolver; pass replace=True to change it")
    _RESOLVERS[key] = resolver


def kernel_resolver_names() -> list[str]:
    """The kernel names resolved here (``['estimate']`` unless more were registered)."""
    return sorted(_RESOLVERS)


def kernel_resolver(kernel: Any) -> KernelResolver | None:
    """The resolver of ``kernel`` when it is a registered name (any case, surrounding spaces ignored), else
    None: every other kernel (a name such as ``gd2.0``, a file, an array) is resolved by the kernels module."""
    if not isinstance(kernel, str):
        return None
    key = kernel.strip().lower()
    resolver = _RESOLVERS.get(key)
    if isinstance(resolver, str):
        module, _, attr = resolver.partition(":")
        resolver = getattr(importlib.import_module(module), attr)
        _RESOLVERS[key] = resolver
    return resolver
