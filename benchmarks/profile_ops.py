"""Wall time per operator of one second-order MZSR meta-iteration, with each operator's input layouts.

    python benchmarks/profile_ops.py --threads 2 [--precision fp32|bf16] [--conv-derivatives auto|torch|primitive] \\
        [--json benchmarks/results/profile_ops_meta_fp32.json]

A ``TorchDispatchMode`` times every ATen call of one ``meta_gradient`` (meta-batch 5, task-batch 4, 64x64, 5 inner
steps, NHWC, MZSRNet from random initialisation) and groups the calls by operator, input shapes and memory layouts
(``cl`` = NHWC, ``nchw``, ``s(...)`` = other strides). CPU operators run synchronously, so a call's wall time is
its cost; the mode adds a few microseconds per call. ``torch.profiler`` was misleading here: on this CPU it
inflated the elementwise operators' share about tenfold (``benchmarks/profile_steps.py`` keeps its view).
Prints the largest groups with their milliseconds per call and the total outside operators (Python, autograd
bookkeeping). Issue #21.
"""
from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import result_record  # noqa: E402


def layout(t: torch.Tensor) -> str:
    """``cl``, ``nchw`` or ``s(strides)`` with the shape, for 4-D tensors; the shape otherwise."""
    shape = tuple(t.shape)
    if t.dim() != 4:
        return str(shape)
    if t.is_contiguous():
        return f"nchw{shape}"
    if t.is_contiguous(memory_format=torch.channels_last):
        return f"cl{shape}"
    return f"s{tuple(t.stride())}{shape}"


class OpTimer(TorchDispatchMode):
    """Sums the wall time of every ATen call by (operator, layouts of its inputs above ``min_numel`` elements)."""

    def __init__(self, min_numel: int = 1000) -> None:
        super().__init__()
        self.min_numel = min_numel
        self.seconds: collections.Counter = collections.Counter()
        self.calls: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        t0 = time.perf_counter()
        out = func(*args, **(kwargs or {}))
        dt = time.perf_counter() - t0
        key = (str(func), tuple(layout(a) for a in args if isinstance(a, torch.Tensor) and a.numel() > self.min_numel))
        self.seconds[key] += dt
        self.calls[key] += 1
        return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--conv-derivatives", choices=["auto", "torch", "primitive"], default="auto")
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from metasr_adapter import MZSRNet
    from metasr_adapter.allocator import retain_freed_memory
    from metasr_adapter.meta.learner import MAMLConfig, MetaLearner, TaskBatch

    retain_freed_memory()  # as `metasr` does
    gen = torch.Generator().manual_seed(0)
    batch = TaskBatch(*(torch.rand(5, 4, 3, 64, 64, generator=gen) for _ in range(4)))
    torch.manual_seed(0)
    learner = MetaLearner(MZSRNet(), MAMLConfig(inner_steps=5, inner_lr=0.01, channels_last=True,
                                                precision=args.precision, conv_derivatives=args.conv_derivatives))
    learner.meta_gradient(batch, 0)  # warm-up
    plain = min(_timed(lambda: learner.meta_gradient(batch, 0)) for _ in range(2))
    timer = OpTimer()
    with timer:
        timed = _timed(lambda: learner.meta_gradient(batch, 0))
    in_ops = sum(timer.seconds.values())
    rows = [{"op": op, "inputs": list(inputs), "calls": timer.calls[(op, inputs)], "seconds": round(s, 4),
             "ms_per_call": round(1e3 * s / timer.calls[(op, inputs)], 3)}
            for (op, inputs), s in timer.seconds.most_common()]
    print(f"meta_gradient: {plain:.3f} s (best of 2); under the timer {timed:.3f} s, {in_ops:.3f} s in operators, "
          f"{timed - in_ops:.3f} s outside them")
    for r in rows[:args.top]:
        print(f"  {r['seconds']:7.3f} s  {r['calls']:5d} x {r['ms_per_call']:7.2f} ms  {r['op']}  {' '.join(r['inputs'])}")
    if args.json:
        out = {"precision": args.precision, "conv_derivatives": args.conv_derivatives, "seconds": plain,
               "seconds_timed": timed, "seconds_in_operators": in_ops, "operators": rows,
               "record": result_record(argv, script=__file__)}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


if __name__ == "__main__":
    raise SystemExit(main())
