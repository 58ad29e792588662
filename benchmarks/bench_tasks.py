"""Task-generation throughput of the MZSR sampler (SPEC §3): tasks per second for 0/1/2 workers.

    python benchmarks/bench_tasks.py [--train-dir DIR] [--batches 40] [--workers 0 1 2] [--threads 1]

A task is one kernel with its ``2·task_batch`` (support + query) patch pairs; a meta-batch holds
``meta_batch`` tasks. Without ``--train-dir`` the images are crops of matplotlib's bundled photo.
The pool is built once, before timing.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from metasr_adapter.meta.tasks import PatchPool, TaskSampler, task_loader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import portable_path, result_record  # noqa: E402  (benchmarks/_record.py)


def _photo_folder(folder: Path) -> Path:
    import cv2
    import matplotlib

    img = cv2.imread(str(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"))
    for k, (i, j) in enumerate([(0, 0), (0, 200), (250, 0), (250, 200), (100, 100)]):
        cv2.imwrite(str(folder / f"crop{k}.png"), img[i : i + 340, j : j + 300])
    return folder


def bench(sampler: TaskSampler, workers: int, batches: int, warmup: int = 2) -> dict[str, float]:
    it = task_loader(sampler, 0, batches + warmup, num_workers=workers)
    for _ in range(warmup):  # worker start-up and first batches are not counted
        next(it)
    t0 = time.perf_counter()
    n = 0
    for _ in it:
        n += 1
    dt = time.perf_counter() - t0
    return {"workers": workers, "batches": n, "seconds": dt, "batches_per_s": n / dt,
            "tasks_per_s": n * sampler.meta_batch / dt}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train-dir", default=None, help="folder of HR images (default: photo crops)")
    ap.add_argument("--batches", type=int, default=40, help="meta-batches timed per setting")
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--meta-batch", type=int, default=5, help="SPEC §4 Directx2: 5")
    ap.add_argument("--task-batch", type=int, default=4, help="SPEC §4 Directx2: 4")
    ap.add_argument("--ds-method", default="direct", choices=["direct", "bicubic"])
    ap.add_argument("--threads", type=int, default=1, help="torch threads in the main process")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.train_dir) if args.train_dir else _photo_folder(Path(tmp))
        t0 = time.perf_counter()
        pool = PatchPool(root).build()
        build_s = time.perf_counter() - t0
        sampler = TaskSampler(pool, meta_batch=args.meta_batch, task_batch=args.task_batch, ds_method=args.ds_method)
        print(f"pool: {len(pool.files)} images, {pool.num_patches} patches x 8 orientations, built in {build_s:.1f} s")
        print(f"meta-batch {args.meta_batch} tasks x 2x{args.task_batch} pairs of 64x64, {args.ds_method}; "
              f"torch {torch.__version__}, {platform.processor() or platform.machine()}, main threads {args.threads}")
        results = []
        for w in args.workers:
            r = bench(sampler, w, args.batches)
            results.append(r)
            print(f"workers={w}: {r['tasks_per_s']:7.1f} tasks/s  ({r['batches_per_s']:.2f} meta-batches/s, "
                  f"{1000 / r['batches_per_s']:.1f} ms per meta-batch)")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "pool_build_s": build_s, "results": results,
            "train_dir": portable_path(args.train_dir) if args.train_dir else "crops of matplotlib's photo",
            "meta_batch": args.meta_batch, "task_batch": args.task_batch, "ds_method": args.ds_method,
            "record": result_record(argv, script=__file__)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
