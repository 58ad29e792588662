"""Side by side in one process: MZSR's second-order meta-gradient under two values of one ``MAMLConfig`` setting,
interleaved call by call.

    python benchmarks/bench_meta_ab.py --threads 2 --pairs 5 --precisions fp32,bf16 \
        --json benchmarks/results/conv_derivatives_ab.json
    python benchmarks/bench_meta_ab.py --threads 2 --pairs 5 --compare channels_last \
        --json benchmarks/results/meta_channels_last_ab.json
    python benchmarks/bench_meta_ab.py --threads 2 --pairs 8 --compare conv_algorithm \
        --json benchmarks/results/meta_winograd_ab.json
    python benchmarks/bench_meta_ab.py --threads 2 --pairs 8 --precisions fp32,bf16 --compare task_threads \
        --json benchmarks/results/meta_task_threads_ab.json

``--compare conv_derivatives`` (default): torch's double backward against the convolution-primitive derivatives;
``--compare channels_last``: NCHW against NHWC images; ``--compare conv_algorithm``: oneDNN against Winograd
(:mod:`metasr_adapter.ops.winograd`; fp32 only; its first call's ``torch.compile`` time is part of the warm-up,
recorded as ``warmup_seconds``); ``--compare task_threads``: tasks one after another against two at once
on worker threads with one oneDNN thread each (:mod:`metasr_adapter.meta.task_threads`). One learner per
precision (MZSRNet, random initialisation: speed does not depend on the weights), the official size (meta-batch
5, task-batch 4, 64x64 patches, 5 inner steps; NHWC unless NHWC is compared). After one warm-up call of each
value, ``--pairs`` pairs of :meth:`~metasr_adapter.meta.learner.MetaLearner.meta_gradient` calls alternate the
value that goes first. These CPUs are shared: the speed of a whole process drifts by 10-20 % between runs, so a
comparison of separate processes needs many rounds; here both values see the same drift, and the table gives the
median of the per-pair ratios (second value over first). Issue #21.
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

#: the setting compared -> its two values (the ratio is the second's time over the first's)
COMPARISONS = {"conv_derivatives": ("torch", "primitive"), "channels_last": (False, True),
               "conv_algorithm": ("direct", "winograd"), "task_threads": (1, 2)}


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def official_size_learner(seed: int = 0, **config):
    """``(learner, batch)``: MZSRNet at random initialisation and one task batch of the official size (meta-batch
    5, task-batch 4, 64x64 patches, 5 inner steps, NHWC); ``config`` adds or overrides ``MAMLConfig`` fields."""
    from metasr_adapter import MZSRNet
    from metasr_adapter.meta.learner import MAMLConfig, MetaLearner, TaskBatch

    gen = torch.Generator().manual_seed(seed)
    batch = TaskBatch(*(torch.rand(5, 4, 3, 64, 64, generator=gen) for _ in range(4)))
    torch.manual_seed(seed)
    return MetaLearner(MZSRNet(), MAMLConfig(**{"inner_steps": 5, "inner_lr": 0.01, "channels_last": True,
                                                **config})), batch


def measure(precision: str, pairs: int, compare: str = "conv_derivatives", seed: int = 0) -> dict:
    learner, batch = official_size_learner(seed, precision=precision)
    values = COMPARISONS[compare]
    names = [str(v) for v in values]
    times: dict[str, list[float]] = {n: [] for n in names}

    def run(value) -> float:
        setattr(learner.config, compare, value)
        return _timed(lambda: learner.meta_gradient(batch, 0))

    warmup = {str(v): run(v) for v in values}  # oneDNN primitives, the allocator, torch.compile (winograd)
    for i in range(pairs):
        for v in (values if i % 2 == 0 else values[::-1]):
            times[str(v)].append(run(v))
    ratios = [b / a for a, b in zip(times[names[0]], times[names[1]])]
    return {"compare": compare, "warmup_seconds": warmup, "seconds": times,
            "median_seconds": {n: statistics.median(times[n]) for n in names},
            "ratio": {"of": f"{names[1]} / {names[0]}", "median": statistics.median(ratios), "min": min(ratios),
                      "max": max(ratios)}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--pairs", type=int, default=5, help="interleaved pairs of timed calls per precision")
    ap.add_argument("--precisions", default="fp32", help="comma list of fp32, bf16")
    ap.add_argument("--compare", choices=sorted(COMPARISONS), default="conv_derivatives",
                    help="the MAMLConfig setting whose two values are compared")
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
        rows[p] = r = measure(p, args.pairs, args.compare)
        m, q = r["median_seconds"], r["ratio"]
        first, second = m
        print(f"{p}, {args.compare}: {first} {m[first]:.3f} s, {second} {m[second]:.3f} s; {q['of']} median "
              f"{q['median']:.3f} (pairs {q['min']:.3f}..{q['max']:.3f})", flush=True)
    if args.json:
        out = {"rows": rows, "threads": torch.get_num_threads(), "record": result_record(argv, script=__file__)}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
