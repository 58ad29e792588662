"""Side by side in one process: MZSR's second-order meta-gradient with torch's double backward and with the
convolution-primitive derivatives (``MAMLConfig.conv_derivatives``), interleaved call by call.

    python benchmarks/bench_conv_derivatives.py --threads 2 --pairs 5 --precisions fp32,bf16 \\
        --json benchmarks/results/conv_derivatives_ab.json

One learner per precision (MZSRNet, random initialisation: speed does not depend on the weights), the official
size (meta-batch 5, task-batch 4, 64x64 patches, 5 inner steps, NHWC). After one warm-up call of each variant,
``--pairs`` pairs of :meth:`~metasr_adapter.meta.learner.MetaLearner.meta_gradient` calls alternate the variant
that goes first. These CPUs are shared: the speed of a whole process drifts by 10-20 % between runs, so a
comparison of separate processes needs many rounds; here both variants see the same drift, and the table gives
the median of the per-pair ratios. Issue #21.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import result_record  # noqa: E402

VARIANTS = ("torch", "primitive")


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure(precision: str, pairs: int, seed: int = 0) -> dict:
    from metasr_adapter import MZSRNet
    from metasr_adapter.meta.learner import MAMLConfig, MetaLearner, TaskBatch

    gen = torch.Generator().manual_seed(seed)
    batch = TaskBatch(*(torch.rand(5, 4, 3, 64, 64, generator=gen) for _ in range(4)))
    torch.manual_seed(seed)
    learner = MetaLearner(MZSRNet(), MAMLConfig(inner_steps=5, inner_lr=0.01, channels_last=True, precision=precision))
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}

    def run(variant: str) -> float:
        learner.config.conv_derivatives = variant
        return _timed(lambda: learner.meta_gradient(batch, 0))

    for v in VARIANTS:  # warm-up: oneDNN primitives, the allocator
        run(v)
    for i in range(pairs):
        for v in (VARIANTS if i % 2 == 0 else VARIANTS[::-1]):
            times[v].append(run(v))
    ratios = [p / t for p, t in zip(times["primitive"], times["torch"])]
    return {"seconds": times, "median_seconds": {v: statistics.median(times[v]) for v in VARIANTS},
            "primitive_over_torch": {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--pairs", type=int, default=5, help="interleaved pairs of timed calls per precision")
    ap.add_argument("--precisions", default="fp32", help="comma list of fp32, bf16")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if args.pairs < 1:
        ap.error(f"--pairs {args.pairs}: needs at least 1")
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    bad = [p for p in precisions if p not in ("fp32", "bf16")]
    if bad:
        ap.error(f"--precisions: {bad} not in fp32, bf16")
    if args.threads:
        torch.set_num_threads(args.threads)
    from metasr_adapter.allocator import retain_freed_memory

    retain_freed_memory()  # as `metasr` does
    rows = {}
    for p in precisions:
        rows[p] = r = measure(p, args.pairs)
        m, q = r["median_seconds"], r["primitive_over_torch"]
        print(f"{p}: torch {m['torch']:.3f} s, primitive {m['primitive']:.3f} s; primitive/torch median {q['median']:.3f} "
              f"(pairs {q['min']:.3f}..{q['max']:.3f})", flush=True)
    if args.json:
        out = {"rows": rows, "threads": torch.get_num_threads(), "record": result_record(argv, script=__file__)}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
