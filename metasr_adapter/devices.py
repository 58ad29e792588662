"""Device spellings: one parser and one comparison for ``'cpu'``, ``'cuda'``, ``'cuda:1'``, ``torch.device``.

``torch.device('cuda') != torch.device('cuda:0')`` although both name the same GPU once the index is
resolved; every device check in this package goes through :func:`same_device`.

One rule for ``device=None`` across the package: work on a model the caller gives runs where that model
is (``MetaSR``, ``estimate_kernel(model=...)``, ``ZSSR(model=...)``); a function that builds or loads its own
network puts it on CUDA when available, else the CPU (``load_pretrained``, ``load_photo_model``, ZSSR's own
network, KernelGAN, the gaussian estimator's bundled network), as the command line's ``--device`` default
does. ``load_model`` alone returns a CPU module, as ``torch.load`` and ``torchvision.models.get_model`` do.
"""
from __future__ import annotations

import torch

__all__ = ["resolve_device", "same_device"]


def resolve_device(spec: str | torch.device | None = None) -> torch.device:
    """``spec`` as a ``torch.device`` with its index resolved (``'cuda'`` → ``cuda:<current>``).

    ``None`` or ``'auto'`` = CUDA when available, else CPU. Raises ValueError naming the value and
    the fix for an unknown spelling, a CUDA device this machine does not have, or a device that cannot
    compute here (``'meta'``, or an mps/xpu/... backend that is not available).
    """
    if spec is None or spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = spec if isinstance(spec, torch.device) else torch.device(spec)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device {spec!r} is not a device name; use cpu, cuda, cuda:N or auto") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(spec)!r} needs CUDA, which this machine (or this torch build) lacks; "
                             "use device cpu or auto")
        index = torch.cuda.current_device() if dev.index is None else dev.index
        if index >= torch.cuda.device_count():
            raise ValueError(f"device {str(spec)!r}: this machine has {torch.cuda.device_count()} CUDA device(s); "
                             f"use cuda:0..cuda:{torch.cuda.device_count() - 1}")
        return torch.device("cuda", index)
    if dev.type == "cpu":
        return torch.device("cpu")
    if dev.type == "meta":
        raise ValueError(f"device {str(spec)!r} holds shapes without data, so no image can be computed on it; use cpu, "
                         "cuda, cuda:N or auto")
    if not _backend_available(dev.type):
        raise ValueError(f"device {str(spec)!r} is not available on this machine (or this torch build); use cpu, "
                         "cuda, cuda:N or auto")
    return dev


def _backend_available(device_type: str) -> bool:
    """Whether torch can compute on devices of ``device_type`` (mps, xpu...) on this machine."""
    if device_type == "mps":
        mps = getattr(torch.backends, "mps", None)
        return bool(mps is not None and mps.is_available())
    is_available = getattr(getattr(torch, device_type, None), "is_available", None)
    try:
        return bool(is_available()) if callable(is_available) else False
    except Exception:  # a half-installed backend plugin
        return False


def _key(dev: torch.device) -> tuple[str, int]:
    if dev.type == "cpu":
        return ("cpu", 0)
    if dev.index is None and dev.type == "cuda" and torch.cuda.is_available():
        return (dev.type, torch.cuda.current_device())
    return (dev.type, 0 if dev.index is None else dev.index)


def same_device(a: str | torch.device, b: str | torch.device) -> bool:
    """Whether ``a`` and ``b`` name the same device (type and resolved index; ``cpu`` == ``cpu:0``)."""
    da = a if isinstance(a, torch.device) else torch.device(a)
    db = b if isinstance(b, torch.device) else torch.device(b)
    return _key(da) == _key(db)
