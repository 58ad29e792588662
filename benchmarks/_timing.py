"""Timing helpers shared by the benchmark scripts."""
from __future__ import annotations

import time


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
