"""Seconds per meta-iteration with torch.distributed: N processes x 1 thread against 1 process x N threads.

    python benchmarks/bench_distributed.py                    # 2x1 vs 1x2, first and second order, MB 5 TB 4
    python benchmarks/bench_distributed.py --iters 5 --rounds 3 --json benchmarks/results/distributed_cpu.json

Each layout runs ``torchrun --standalone --nproc_per_node P`` on this script (``--worker``) with
``OMP_NUM_THREADS=T``: every rank builds the same MZSRNet and the same meta-batch of x2 tasks (64²
crops of matplotlib's Grace Hopper photo, bicubic down and up), takes one untimed meta-step, then
times ``--iters`` :meth:`MetaLearner.meta_step` calls; rank 0 reports the median. Layouts alternate
for ``--rounds`` rounds so that load drift hits both; the table gives the median over rounds and the
ratio to the 1-process row. The meta-batch is split over ranks (5 tasks = 3 + 2 on two ranks), so the
slower rank sets the pace.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import result_record  # noqa: E402  (benchmarks/_record.py)


def worker(args: argparse.Namespace) -> None:
    import torch
    import torch.distributed as dist

    from metasr_adapter import distributed as ddp
    from metasr_adapter.adapters.mzsr import MZSRNet
    from metasr_adapter.meta.learner import MAMLConfig, MetaLearner

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_meta import photo_tasks

    ddp.init_from_env("cpu")
    torch.manual_seed(0)
    batch = photo_tasks(args.meta_batch, args.task_batch, 64, seed=0)
    learner = MetaLearner(MZSRNet(), MAMLConfig(first_order=args.order == "fo"))
    learner.meta_step(batch, 0)
    times = []
    for s in range(args.iters):
        ddp.barrier()
        t = time.perf_counter()
        learner.meta_step(batch, s + 1)
        times.append(time.perf_counter() - t)
    if ddp.is_main():
        print("RESULT " + json.dumps({"median": statistics.median(times), "times": times,
                                      "world": ddp.world_size(), "threads": torch.get_num_threads()}))
    if dist.is_initialized():
        dist.barrier()  # no rank tears the group down while another still uses it
        dist.destroy_process_group()


def run_layout(procs: int, threads: int, order: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs), __file__,
           "--worker", "--order", order, "--iters", str(args.iters), "--meta-batch", str(args.meta_batch),
           "--task-batch", str(args.task_batch)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OMP_WAIT_POLICY="PASSIVE")
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"layout {procs}x{threads} {order} failed:\n{out.stderr[-2000:]}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--order", default="fo", choices=("fo", "so"))
    ap.add_argument("--orders", default="fo,so")
    ap.add_argument("--layouts", default="1x2,2x1", help="PROCESSESxTHREADS, comma separated")
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--meta-batch", type=int, default=5)
    ap.add_argument("--task-batch", type=int, default=4)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return 0
    record = result_record(threads=f"per layout {args.layouts} (PROCESSESxTHREADS)", script=__file__)
    layouts = [tuple(int(v) for v in lay.split("x")) for lay in args.layouts.split(",")]
    results: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        for order in args.orders.split(","):
            for procs, threads in layouts:
                r = run_layout(procs, threads, order, args)
                results.setdefault(f"{order} {procs}x{threads}", []).append(r["median"])
    print(f"{'order':<6}{'layout':>8}{'s/meta-iteration':>18}{'vs 1 process':>14}")
    table = {}
    for order in args.orders.split(","):
        base = None
        for procs, threads in layouts:
            key = f"{order} {procs}x{threads}"
            med = statistics.median(results[key])
            base = med if procs == 1 else base
            table[key] = med
            ratio = f"{med / base:.2f}" if base else "–"
            print(f"{order:<6}{f'{procs}x{threads}':>8}{med:>18.2f}{ratio:>14}")
    print(f"load average: {os.getloadavg()}")
    if args.json:
        Path(args.json).write_text(json.dumps({"medians": table, "rounds": results, "meta_batch": args.meta_batch,
                                               "task_batch": args.task_batch, "load": os.getloadavg(),
                                               "record": record}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
