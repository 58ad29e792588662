"""Timing helpers shared by the benchmark scripts."""
from __future__ import annotations

import statistics
import time
from typing import Callable, Mapping


def elapsed_ms(fn: Callable[[], object]) -> float:
    """Milliseconds one call of ``fn`` takes."""
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def interleave(calls: Mapping[str, Callable[[], object]], repeats: int, *, warmup: bool = True) -> dict[str, float]:
    """Median milliseconds of each callable over ``repeats`` rounds, alternating the order from round to round (so
    that load drift hits all alike); with ``warmup``, one untimed call of each first."""
    if warmup:
        for fn in calls.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in calls}
    items = list(calls.items())
    for i in range(repeats):
        for label, fn in (items if i % 2 == 0 else items[::-1]):
            times[label].append(elapsed_ms(fn))
    return {k: statistics.median(v) for k, v in times.items()}


def matmul_gflops(repeats: int = 5) -> float:
    """GFLOP/s of a 2048x2048 fp32 matrix product in this process (the best of ``repeats`` after a warm-up): the
    machine's reachable peak, measured beside a benchmark's rows so that their GFLOP/s can be read as a share of it."""
    import torch

    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * 2048 ** 3 / best / 1e9
