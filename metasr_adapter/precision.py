"""Numeric precision: the accepted names, the autocast context, and whether bf16 is fast here."""
from __future__ import annotations

import contextlib

import torch

__all__ = ["PRECISIONS", "autocast", "bf16_supported"]

#: ``fp32`` (exact; the default everywhere) or ``bf16`` (autocast: the network in bf16, losses in fp32)
PRECISIONS = ("fp32", "bf16")


def autocast(precision: str, device_type: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device_type`` for ``precision='bf16'``, else a no-op context."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}; use one of {PRECISIONS}")
    if precision == "bf16":
        return torch.autocast(device_type=device_type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def bf16_supported(device: torch.device) -> bool:
    """Whether bf16 autocast is fast on ``device`` (GPUs; CPUs with AMX or AVX512-BF16)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        cpu = getattr(torch, "cpu", None)
        checks = [getattr(cpu, "_is_amx_tile_supported", None), getattr(cpu, "_is_avx512_bf16_supported", None)]
        return any(c is not None and c() for c in checks)
    return False
