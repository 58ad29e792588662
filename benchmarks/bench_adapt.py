"""Speed of ``MetaSR.adapt`` on Set5 baby (256x256 LR -> 512x512), fp32 vs bf16, side by side.

    python benchmarks/bench_adapt.py [--lr PATH] [--weights W] [--repeats 3] [--steps 1,10]
    python benchmarks/bench_adapt.py --precisions fp32,fp32+compile      # torch.compile (compile time excluded)
    python benchmarks/bench_adapt.py --precisions fp32+nchw,fp32+cl --rounds 3 --threads 1   # layouts
    python benchmarks/bench_adapt.py --precisions fp32,fp32+winograd,bf16 --threads 2      # Winograd's kernels

Reports the median wall time of the adaptation loop and of the whole call, the peak resident
memory growth, and the speed ratio against the official TensorFlow code (SPEC §0: 0.445 s /
3.90 s adaptation loop, 1.62 s / 5.16 s whole call, on a 2-core CPU). Without ``--lr`` a
256x256 crop of the photo bundled with matplotlib stands in for baby.
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from metasr_adapter import MetaSR, MZSRNet
from metasr_adapter.cli.demo import bundled_photo
from metasr_adapter.ops.imageio import read_image
from metasr_adapter.precision import bf16_supported

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import portable_path, result_record  # noqa: E402  (benchmarks/_record.py)

OFFICIAL = {1: (0.445, 1.62), 10: (3.90, 5.16)}  # steps -> (adaptation loop s, whole call s)


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def time_adapt(msr: MetaSR, lr: np.ndarray, steps: int, repeats: int) -> dict:
    loops, calls = [], []
    for _ in range(repeats + 1):  # first run warms up
        t0 = time.perf_counter()
        session = msr.start(lr, "gd2.0")
        t1 = time.perf_counter()
        for _ in range(steps):
            session.step()
        t2 = time.perf_counter()
        session.result()
        t3 = time.perf_counter()
        loops.append(t2 - t1)
        calls.append(t3 - t0)
    return {"loop_s": statistics.median(loops[1:]), "call_s": statistics.median(calls[1:])}


def _wrapper(net: MZSRNet, config: str) -> MetaSR:
    """``PRECISION[+compile][+nchw|+cl][+winograd]`` -> a MetaSR (layout default: the library's choice for this
    CPU; ``+winograd``: ``conv_algorithm='winograd'``)."""
    prec, *opts = config.split("+")
    bad = [o for o in opts if o not in ("compile", "nchw", "cl", "winograd")]
    if bad:
        raise SystemExit(f"--precisions {config!r}: unknown option {bad[0]!r}; use +compile, +nchw, +cl or "
                         "+winograd")
    layout = True if "cl" in opts else False if "nchw" in opts else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return MetaSR(net, 2, precision=prec, compile="compile" in opts, channels_last=layout,
                      conv_algorithm="winograd" if "winograd" in opts else "direct")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lr", default=None, help="LR image (default: a 256x256 crop of the bundled photo)")
    ap.add_argument("--weights", default=None, help="weights for MZSRNet (speed does not depend on them)")
    ap.add_argument("--steps", default="1,10")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per configuration and round")
    ap.add_argument("--rounds", type=int, default=1,
                    help="round-robin rounds over the configurations (medians over rounds x repeats)")
    ap.add_argument("--precisions", default="fp32,bf16",
                    help="comma-separated PRECISION[+compile][+nchw|+cl][+winograd]: fp32, bf16, fp32+compile "
                         "(torch.compile'd network), fp32+nchw / fp32+cl (force the layout of the adaptation "
                         "steps), fp32+winograd (MetaSR(conv_algorithm='winograd'))")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    lr = read_image(args.lr) if args.lr else bundled_photo()[100:356, 128:384]
    net = MZSRNet()
    if args.weights:
        from metasr_adapter.io.weights import load_weights

        load_weights(net, args.weights)
    print(f"CPU: {cpu_name()}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"fast bf16: {bf16_supported(torch.device('cpu'))}; LR {lr.shape[1]}x{lr.shape[0]}")
    configs = args.precisions.split(",")
    step_counts = [int(s) for s in args.steps.split(",")]
    wrappers = {c: _wrapper(net, c) for c in configs}
    for c, msr in wrappers.items():
        if "compile" in c:
            time_adapt(msr, lr, max(step_counts), 1)  # compile every size first
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times: dict[tuple[str, int], list[dict]] = {(c, k): [] for c in configs for k in step_counts}
    for r in range(args.rounds):
        for c in configs:
            for k in step_counts:
                times[(c, k)].append(time_adapt(wrappers[c], lr, k, args.repeats))
    rows = []
    for c in configs:
        for steps in step_counts:
            got = times[(c, steps)]
            r = {"loop_s": statistics.median(t["loop_s"] for t in got),
                 "call_s": statistics.median(t["call_s"] for t in got)}
            r.update(precision=c, steps=steps, channels_last=wrappers[c].channels_last,
                     peak_rss_mb=(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_rss) / 1024)
            off = OFFICIAL.get(steps)
            if off:
                r["speedup_loop_vs_official"] = off[0] / r["loop_s"]
                r["speedup_call_vs_official"] = off[1] / r["call_s"]
            rows.append(r)
            print(f"{c:12s} {steps:3d} steps: loop {r['loop_s']:.3f} s, call {r['call_s']:.3f} s"
                  + (f"  (official TF: {off[0]:.3f} / {off[1]:.2f} s -> x{r['speedup_loop_vs_official']:.2f} /"
                     f" x{r['speedup_call_vs_official']:.2f})" if off else ""))
    base = {r["steps"]: r for r in rows if r["precision"] == configs[0]}
    for r in rows:
        if r["precision"] != configs[0]:
            ratio = r["loop_s"] / base[r["steps"]]["loop_s"]
            r[f"loop_vs_{configs[0]}"] = ratio
            print(f"{r['precision']} / {configs[0]}, {r['steps']} steps: adaptation loop {ratio:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "cpu": cpu_name(), "torch": torch.__version__, "rows": rows,
            "lr_image": portable_path(args.lr) if args.lr else "bundled photo, 256x256 crop",
            "weights": portable_path(args.weights), "record": result_record(script=__file__)}, indent=2))


if __name__ == "__main__":
    main()
