"""Side by side: the two CPU paths of issue #21's third pass, each on and off, in alternating subprocesses.

    python benchmarks/bench_cpu_paths.py --threads 2 --rounds 3 --json benchmarks/results/cpu_paths.json

* ``malloc``: ``retain`` keeps freed memory in the process (:func:`metasr_adapter.allocator.retain_freed_memory`,
  what ``metasr`` does at start) or ``default`` (glibc's thresholds: fresh pages, and page faults, on every
  adaptation step). Process-wide, hence one subprocess per variant.
* ``conv``: ``primitive`` derivatives (:mod:`metasr_adapter.ops.conv`: every order on convolution primitives)
  or ``torch`` (``F.conv2d`` and torch's double backward, whose second-order term is a convolution with the
  output gradient as a 64x64 kernel).

Rows, with the bundled ``mzsr_x2_direct`` weights (speed does not depend on them): one fp32 adaptation step on a
256x256 LR image (the library's default layout for this CPU), the fp32 SR forward of that image (512x512
output), and one second-order meta-iteration (meta-batch 5, task-batch 4, 64x64, 5 inner steps, channels_last)
in fp32 and in bf16 where the CPU has fast bf16. Each variant runs as its own process in every round (variants
alternate, so load drift hits all alike); the table gives per-row medians over rounds, the minor page faults
per call, the ratio to the ``default``/``torch`` variant, and the achieved GFLOP/s against a 2048x2048 fp32
matmul timed in the same processes.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import result_record  # noqa: E402
from _timing import matmul_gflops  # noqa: E402

HERE = Path(__file__).resolve()
TAG = "CPU_PATHS_JSON:"
VARIANTS = ["default/torch", "retain/torch", "default/primitive", "retain/primitive"]
# multiply-adds of MZSRNet (3->64, 6 x 64->64, 64->3; 3x3) per output pixel, times 2 for FLOPs
_FLOP_PER_PIXEL = 2 * 9 * (3 * 64 + 6 * 64 * 64 + 64 * 3)


def _child(malloc: str, conv: str, threads: int | None, repeats: int, meta: bool) -> dict[str, Any]:
    import resource

    import torch

    if threads:
        torch.set_num_threads(threads)
    from metasr_adapter.allocator import retain_freed_memory

    if malloc == "retain":
        retain_freed_memory()
    from metasr_adapter import load_model, load_pretrained
    from metasr_adapter.cli.demo import bundled_photo
    from metasr_adapter.meta.learner import MAMLConfig, MetaLearner, TaskBatch
    from metasr_adapter.ops.conv import set_primitive_derivatives
    from metasr_adapter.precision import bf16_supported

    set_primitive_derivatives(conv == "primitive")

    def timed(fn, n: int) -> tuple[float, float]:
        fn()  # warm-up
        ts, f0 = [], resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        return statistics.median(ts), (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / n

    out: dict[str, Any] = {"matmul_gflops": matmul_gflops(), "rows": {}}

    lr = bundled_photo()[100:356, 100:356]
    msr = load_pretrained("mzsr_x2_direct", precision="fp32")
    session = msr.start(lr, "gd2.0")
    s, f = timed(session.step, repeats)
    # forward + backward ~ 3x the forward's FLOPs, on the son's 256x256 upsampling
    out["rows"]["adapt_step_fp32"] = {"s": s, "faults": f, "gflop": 3 * _FLOP_PER_PIXEL * 256 * 256 / 1e9}
    with torch.no_grad():
        s, f = timed(session.sr_tensor, repeats)
    out["rows"]["sr_forward_512_fp32"] = {"s": s, "faults": f, "gflop": _FLOP_PER_PIXEL * 512 * 512 / 1e9}

    gen = torch.Generator().manual_seed(0)
    batch = TaskBatch(*(torch.rand(5, 4, 3, 64, 64, generator=gen) for _ in range(4)))
    precisions = (["fp32"] + (["bf16"] if bf16_supported(torch.device("cpu")) else [])) if meta else []
    for precision in precisions:
        learner = MetaLearner(load_model("mzsr", "mzsr_x2_direct"),
                              MAMLConfig(inner_steps=5, inner_lr=0.01, precision=precision, channels_last=True),
                              loss_fn="l1")
        s, f = timed(lambda: learner.meta_gradient(batch), max(1, repeats - 1))
        out["rows"][f"meta_so_{precision}"] = {"s": s, "faults": f}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3, help="timed calls per row and process (after a warm-up)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"comma list from {VARIANTS}")
    ap.add_argument("--no-meta", action="store_true", help="skip the meta-iteration rows (a quick run)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        malloc, conv = args.child.split("/")
        print(TAG + json.dumps(_child(malloc, conv, args.threads, args.repeats, not args.no_meta)))
        return

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    for v in variants:
        if v not in VARIANTS:
            raise SystemExit(f"--variants: {v!r} is not one of {VARIANTS}")
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    for r in range(args.rounds):
        for v in variants:
            cmd = [sys.executable, str(HERE), "--child", v, "--repeats", str(args.repeats)]
            if args.no_meta:
                cmd += ["--no-meta"]
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith(TAG)), None)
            if line is None:
                raise SystemExit(f"variant {v} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
            runs[v].append(json.loads(line[len(TAG):]))
            print(f"round {r + 1}/{args.rounds} {v}: " + ", ".join(
                f"{k} {x['s']:.3f}s" for k, x in runs[v][-1]["rows"].items()), flush=True)

    base = variants[0]
    table = []
    for row in runs[base][0]["rows"]:
        for v in variants:
            s = statistics.median(x["rows"][row]["s"] for x in runs[v])
            faults = statistics.median(x["rows"][row]["faults"] for x in runs[v])
            mm = statistics.median(x["matmul_gflops"] for x in runs[v])
            gflop = runs[v][0]["rows"][row].get("gflop")
            table.append({"row": row, "variant": v, "seconds": s, "faults_per_call": faults,
                          "ratio_to_" + base.replace("/", "_"): None, "gflops_per_s": gflop / s if gflop else None,
                          "matmul_gflops": mm})
        ref = next(t["seconds"] for t in table if t["row"] == row and t["variant"] == base)
        for t in table:
            if t["row"] == row:
                t["ratio_to_" + base.replace("/", "_")] = t["seconds"] / ref
    print(f"\n{'row':22s} {'malloc/conv':18s} {'s':>8s} {'ratio':>6s} {'faults':>9s} {'GFLOP/s':>8s} {'of matmul':>9s}")
    for t in table:
        gf = t["gflops_per_s"]
        gf_text = f"{gf:.0f}" if gf else "-"
        share = f"{gf / t['matmul_gflops']:.2f}" if gf else "-"
        ratio = t["ratio_to_" + base.replace("/", "_")]
        print(f"{t['row']:22s} {t['variant']:18s} {t['seconds']:8.3f} {ratio:6.2f} "
              f"{t['faults_per_call']:9.0f} {gf_text:>8s} {share:>9s}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"record": result_record(threads=args.threads), "table": table,
                                               "runs": runs}, indent=1))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
