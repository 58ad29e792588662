"""Numeric precision: the accepted names, the autocast context, and whether bf16 is fast here."""
from __future__ import annotations

import contextlib

import torch

__all__ = ["PRECISIONS", "autocast", "bf16_supported", "auto_precision", "channels_last_trains_faster",
           "resolve_channels_last"]

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


def auto_precision(device: torch.device) -> str:
    """``'bf16'`` where bf16 autocast is fast (:func:`bf16_supported`), else ``'fp32'``: the default of the
    command line's ``adapt`` and ``demo`` and of the photo path. Measured on an AVX512-BF16 EPYC: MZSR's
    Table 2 cells on Set5 moved by at most 0.04 dB (``benchmarks/results/table2_precision/``), real photos by
    at most 0.003 dB, at 1.7-1.8x the speed. The library's own default stays fp32 (exact)."""
    return "bf16" if bf16_supported(device) else "fp32"


def channels_last_trains_faster(device: torch.device) -> bool:
    """Whether an NHWC (channels_last) forward + backward of a convolution network beats NCHW on ``device``.

    Measured on MZSR adaptation steps (fp32, 1 thread, ``benchmarks/bench_adapt.py --precisions
    fp32+nchw,fp32+cl``): on an AVX-512 EPYC, NHWC took 0.88x the NCHW time (oneDNN runs NHWC without the
    per-call reorders to its blocked layout that NCHW needs); on an AVX2-only Zen 3, 1.7x. So: CPUs with
    AVX-512. GPUs keep NCHW (cuDNN's default; not measured here).
    """
    if device.type != "cpu":
        return False
    check = getattr(getattr(torch, "cpu", None), "_is_avx512_supported", None)
    return bool(check is not None and check())


def resolve_channels_last(choice: bool | None, device: torch.device, precision: str) -> bool:
    """The NHWC decision of adaptation and meta-training: ``choice`` when given, else NHWC in bf16 or where
    :func:`channels_last_trains_faster` says so."""
    if choice is not None:
        return bool(choice)
    return precision == "bf16" or channels_last_trains_faster(device)
