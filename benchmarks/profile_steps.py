"""Where the time of one adaptation step and one meta-iteration goes (``torch.profiler``), fp32 and bf16.

    python benchmarks/profile_steps.py --threads 1 [--lr PATH] [--precisions fp32,bf16]

Profiles, after a warm-up, (a) one MZSR test-time adaptation step on a 256x256 LR image (Set5 baby when
``../shared`` holds it, else a crop of the photo bundled with matplotlib) and (b) one second-order MAML
meta-iteration of the official size (meta-batch 5, task batch 4, 64² patches, 5 inner steps), with the
bundled ``mzsr_x2_direct`` weights. Writes the operators with the largest self CPU time, which convolution
kernels ran (oneDNN ``mkldnn_convolution`` or the native ``slow_conv2d`` / ``thnn``), the share of time in
layout reorders and copies, and the achieved GFLOP/s of the step against a 2048² fp32 matmul measured in the
same run. Issue #21 item 1.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import portable_path, result_record  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BABY = ROOT.parent / "shared" / "data" / "mzsr_g20" / "Set5" / "baby.png"


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _profile(fn, top: int) -> dict:
    from torch.profiler import ProfilerActivity, profile

    from torch.utils.flop_counter import FlopCounterMode

    fn()  # warm-up (oneDNN primitives, allocator)
    with FlopCounterMode(display=False) as fc:
        fn()
    flops = fc.get_total_flops()
    seconds = min(_timed(fn) for _ in range(2))
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    conv = {e.key: round(e.self_cpu_time_total / total, 4) for e in events if "conv" in e.key.lower()}
    reorder = sum(e.self_cpu_time_total for e in events
                  if any(k in e.key for k in ("copy_", "contiguous", "to_dense", "reorder", "clone")))
    return {"seconds": seconds, "gflop": flops / 1e9, "gflops_per_s": flops / seconds / 1e9,
            "top_self_cpu": [{"op": e.key, "share": round(e.self_cpu_time_total / total, 4), "calls": e.count}
                             for e in events[:top]],
            "convolution_ops": conv, "copy_reorder_share": round(reorder / total, 4)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lr", default=None, help="the LR image (default: Set5 baby from ../shared, else the bundled photo)")
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "profile_steps.json"))
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from metasr_adapter import load_model, load_pretrained
    from metasr_adapter.cli.demo import bundled_photo
    from metasr_adapter.meta.learner import MAMLConfig, MetaLearner, TaskBatch
    from metasr_adapter.ops.imageio import read_image

    lr_path = Path(args.lr) if args.lr else (BABY if BABY.is_file() else None)
    lr = read_image(lr_path) if lr_path else bundled_photo()[100:356, 100:356]
    gen = torch.Generator().manual_seed(0)
    batch = TaskBatch(*(torch.rand(5, 4, 3, 64, 64, generator=gen) for _ in range(4)))
    out = {"lr_image": portable_path(lr_path) if lr_path else "bundled photo crop 256x256",
           "matmul_gflops_fp32": matmul_gflops(), "rows": {}}
    for precision in [p.strip() for p in args.precisions.split(",") if p.strip()]:
        msr = load_pretrained("mzsr_x2_direct", precision=precision)
        session = msr.start(lr, "gd2.0")
        out["rows"][f"adapt_step_{precision}"] = _profile(session.step, args.top)
        learner = MetaLearner(load_model("mzsr", "mzsr_x2_direct"),
                              MAMLConfig(inner_steps=5, inner_lr=0.01, precision=precision), loss_fn="l1")
        out["rows"][f"meta_iteration_so_{precision}"] = _profile(lambda: learner.meta_gradient(batch), args.top)
        for key in (f"adapt_step_{precision}", f"meta_iteration_so_{precision}"):
            r = out["rows"][key]
            print(f"{key}: {r['seconds']:.3f} s, {r['gflops_per_s']:.1f} GFLOP/s "
                  f"({r['gflops_per_s'] / out['matmul_gflops_fp32']:.2f} of the fp32 matmul's "
                  f"{out['matmul_gflops_fp32']:.0f}); copies/reorders {100 * r['copy_reorder_share']:.1f}%")
            for t in r["top_self_cpu"][:6]:
                print(f"    {100 * t['share']:5.1f}%  {t['op']} x{t['calls']}")
    out["record"] = result_record(argv, script=__file__)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
