"""Cost of one training step on this machine: supervised pretraining, first- and second-order MAML.

    python benchmarks/bench_train_step.py                       # 1 process x 2 threads, then 2 processes x 1 thread
    python benchmarks/bench_train_step.py --layouts 1x2 --iters 5 --json out.json
    python benchmarks/bench_train_step.py --configs sup:32:64,fo:5:4,so:5:4 --channels-last both
    python benchmarks/bench_train_step.py --configs sup:32:48,sup:32:64,sup:16:96 --layouts 1x2 --compile
    python benchmarks/bench_train_step.py --configs idn:16:96,mlsr:16:128 --layouts 1x1 --iters 3

Each configuration is ``kind:a:b[:bf16]`` (bf16 = autocast; fast only where the CPU has AVX512-BF16/AMX):

* ``sup:B:P`` — one :class:`~metasr_adapter.meta.pretrain.Pretrainer` step on ``B`` patches of ``P``² from
  :class:`~metasr_adapter.meta.pretrain.KernelPairSampler` (8 random kernels per batch, direct subsampling);
* ``fo:MB:TB`` / ``so:MB:TB`` — one first-/second-order :class:`~metasr_adapter.meta.learner.MetaLearner`
  meta-iteration on a :class:`~metasr_adapter.meta.tasks.TaskSampler` meta-batch (64² patches, 5 inner steps);
* ``idn:B:P`` — one L2 :class:`~metasr_adapter.meta.pretrain.Pretrainer` step of the full IDN (x2, it runs at LR
  resolution) on ``B`` bicubic pairs of ``P``² HR patches (:class:`~metasr_adapter.meta.pretrain.PairSampler`);
* ``mlsr:MB:P`` — one first-order MLSR meta-iteration of the full IDN (:class:`~metasr_adapter.meta.tasks.MLSRTaskSampler`,
  bicubic, ``MB`` tasks of one ``P``² HR patch, 5 inner steps LR↓ → LR, L2, the last step's LR → HR loss), with
  the query loss of every inner step computed for the log; ``mlsrskip:MB:P`` the same without the 4 query
  losses of weight 0 (``MAMLConfig(log_query_losses=False)``).

Besides the wall-clock median, every row reports the median CPU seconds of the process (``cpu_s``): below
``s/step`` when the process waited for a core; equal to it when it got one, though a busy neighbour on the same
core can still slow it (compare the matmul ``peak`` with the idle machine's).

The work of each step is counted once with ``torch.utils.flop_counter.FlopCounterMode`` (every aten op,
double-backward included), and achieved GFLOP/s are reported against this CPU's measured fp32 peak: a
2048² fp32 matmul at the same thread count. Training patches come from ``--train-dir`` (default
``../shared/data/train``, the first ``--images`` images) or, without it, crops of a photo that ships with
matplotlib. Layout ``1xT`` runs one process with T threads; ``Nx1`` runs N one-thread processes at
once and reports the aggregate throughput (steps/s summed over processes). Medians of ``--iters``
timed steps after one warm-up; configurations run round-robin so that load drift hits all alike.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import portable_path, result_record  # noqa: E402  (benchmarks/_record.py)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TRAIN = ROOT.parent / "shared" / "data" / "train"


def matmul_gflops(threads: int, size: int = 2048, reps: int = 5) -> float:
    """Median GFLOP/s of a ``size``² fp32 matmul with ``threads`` threads."""
    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * size**3 / statistics.median(times) / 1e9


def _pool(train_dir: Path | None, images: int, patch: int, lr_scale: int | None = None):
    import tempfile

    import cv2
    import matplotlib
    import numpy as np

    from metasr_adapter.meta.tasks import PatchPool, find_images

    folder = Path(tempfile.mkdtemp(prefix="bench_pool_"))
    if train_dir is not None and train_dir.is_dir():
        for i, f in enumerate(find_images(train_dir)[:images]):
            os.symlink(f.resolve(), folder / f"{i:04d}{f.suffix}")
    else:
        img = cv2.imread(str(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"))
        cv2.imwrite(str(folder / "photo.png"), np.ascontiguousarray(img))
    return PatchPool(folder, patch_size=patch, stride=max(16, patch // 2), lr_scale=lr_scale, progress=False).build()


def build_step(kind: str, a: int, b: int, pool_args: tuple, channels_last: bool, compiled: bool = False,
               precision: str = "fp32"):
    """A zero-argument callable running one training step (``compiled``: the network through torch.compile)."""
    from metasr_adapter.adapters.mzsr import MZSRNet
    from metasr_adapter.meta.learner import MAMLConfig, MetaLearner
    from metasr_adapter.meta.pretrain import KernelPairSampler, Pretrainer
    from metasr_adapter.meta.tasks import TaskSampler

    torch.manual_seed(0)
    if kind in ("idn", "mlsr", "mlsrskip"):
        return _build_idn_step(kind, a, b, pool_args, precision)
    model = MZSRNet()
    if compiled:
        if kind != "sup":
            raise SystemExit("--compile applies to sup:B:P rows (MetaLearner calls the network functionally)")
        net = model
        compiled_net = torch.compile(net)
        model = _Compiled(net, compiled_net)
    if kind == "sup":
        pool = _pool(*pool_args, b)
        sampler = KernelPairSampler(pool, a, kernels=8 if a % 16 == 0 else a // 2, seed=0)
        trainer = Pretrainer(model, lr=1e-4)
        if channels_last:
            model.to(memory_format=torch.channels_last)
        counter = iter(range(10**9))

        def step() -> None:
            from metasr_adapter.precision import autocast

            batch = sampler.sample_arrays(next(counter))
            if channels_last:
                batch = {k: v.contiguous(memory_format=torch.channels_last) for k, v in batch.items()}
            with autocast(precision, "cpu"):
                trainer.step(batch, 0)

        return step
    pool = _pool(*pool_args, 64)
    sampler = TaskSampler(pool, meta_batch=a, task_batch=b, seed=0)
    cfg = MAMLConfig(first_order=(kind == "fo"), channels_last=channels_last, precision=precision)
    learner = MetaLearner(model, cfg)
    counter = iter(range(10**9))

    def meta() -> None:
        learner.meta_step(sampler.sample(next(counter)), 0)

    return meta


def _build_idn_step(kind: str, a: int, b: int, pool_args: tuple, precision: str):
    """IDN rows: ``idn:B:P`` (supervised L2 step on bicubic pairs), ``mlsr:MB:P`` (first-order MLSR iteration)."""
    from metasr_adapter.adapters.idn import IDN
    from metasr_adapter.meta.learner import MAMLConfig, MetaLearner
    from metasr_adapter.meta.pretrain import PairSampler, Pretrainer
    from metasr_adapter.meta.tasks import MLSRTaskSampler

    model = IDN(scale=2)
    counter = iter(range(10**9))
    if kind == "idn":
        sampler = PairSampler(_pool(*pool_args, b, lr_scale=2), a, seed=0, upsample_input=False)
        trainer = Pretrainer(model, lr=1e-4, loss="l2")

        def step() -> None:
            from metasr_adapter.precision import autocast

            with autocast(precision, "cpu"):
                trainer.step(sampler.sample_arrays(next(counter)), 0)

        return step
    tasks = MLSRTaskSampler(_pool(*pool_args, b), meta_batch=a, task_batch=1, kernel="bicubic", seed=0)
    cfg = MAMLConfig(inner_steps=5, inner_lr=0.65, first_order=True, meta_lr=1e-6, loss_weighting="last",
                     precision=precision, log_query_losses=(kind == "mlsr"))
    learner = MetaLearner(model, cfg, loss_fn="l2")

    def meta() -> None:
        learner.meta_step(tasks.sample(next(counter)), 0)

    return meta


class _Compiled(torch.nn.Module):
    """The eager module's parameters, the compiled module's forward."""

    def __init__(self, net: torch.nn.Module, compiled) -> None:
        super().__init__()
        self.net = net
        self._compiled = [compiled]  # not a submodule: parameters are the eager net's

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._compiled[0](x)


def count_flops(step) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        step()
    return float(fc.get_total_flops())


def run_worker(args: argparse.Namespace) -> dict:
    """Time every configuration in this process (``args.threads`` threads)."""
    torch.set_num_threads(args.threads)
    pool_args = (Path(args.train_dir) if args.train_dir else None, args.images)
    rows = {}
    steps = {}
    for spec in args.configs.split(","):
        kind, a, b, *rest = spec.split(":")
        precision = rest[0] if rest else "fp32"
        for cl in ([False, True] if args.channels_last == "both" else [args.channels_last == "on"]):
            for comp in ([False, True] if args.compile and kind == "sup" else [False]):
                name = f"{spec}{':cl' if cl else ''}{':compile' if comp else ''}"
                steps[name] = build_step(kind, int(a), int(b), pool_args, cl, comp, precision)
                steps[name]()  # warm-up (and compilation)
                steps[name]()
                rows[name] = {"flops": count_flops(build_step(kind, int(a), int(b), pool_args, cl)), "times": [],
                              "cpu": []}
    deadline = time.perf_counter() + args.max_seconds
    for _ in range(args.iters):
        for name, step in steps.items():
            t, c = time.perf_counter(), time.process_time()
            step()
            rows[name]["times"].append(time.perf_counter() - t)
            rows[name]["cpu"].append(time.process_time() - c)
        if time.perf_counter() > deadline:
            break
    peak = matmul_gflops(args.threads)
    out = {}
    for name, r in rows.items():
        med = statistics.median(r["times"])
        cpu = statistics.median(r["cpu"])
        out[name] = {"seconds": med, "cpu_seconds": cpu, "gflop": r["flops"] / 1e9,
                     "gflops_per_s": r["flops"] / med / 1e9, "gflops_per_cpu_s": r["flops"] / cpu / 1e9,
                     "n": len(r["times"])}
    return {"threads": args.threads, "matmul_gflops": peak, "rows": out}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--configs", default="sup:32:64,fo:5:4,so:5:4")
    ap.add_argument("--layouts", default="1x2,2x1", help="PROCESSESxTHREADS, comma separated")
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--max-seconds", type=float, default=300, help="stop timing a layout after this long")
    ap.add_argument("--channels-last", choices=("off", "on", "both"), default="off")
    ap.add_argument("--compile", action="store_true", help="also time sup rows with the network through torch.compile")
    ap.add_argument("--train-dir", default=str(DEFAULT_TRAIN) if DEFAULT_TRAIN.is_dir() else None)
    ap.add_argument("--images", type=int, default=20, help="training images used for the patch pool")
    ap.add_argument("--json", default=None)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(run_worker(args)))
        return 0
    record = result_record(threads=f"per layout {args.layouts} (PROCESSESxTHREADS)", script=__file__)
    results = {}
    for layout in args.layouts.split(","):
        procs, threads = (int(v) for v in layout.split("x"))
        cmd = [sys.executable, __file__, "--worker", "--threads", str(threads), "--configs", args.configs,
               "--iters", str(args.iters), "--max-seconds", str(args.max_seconds), "--channels-last",
               args.channels_last, "--images", str(args.images)] + (["--compile"] if args.compile else [])
        if args.train_dir:
            cmd += ["--train-dir", args.train_dir]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        running = [subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env, text=True) for _ in range(procs)]
        outs = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in running]
        results[layout] = outs
    print(f"{'config':<16}{'layout':>8}{'s/step':>10}{'cpu_s':>8}{'GFLOP':>9}{'GFLOP/s':>10}{'peak':>8}{'%peak':>7}"
          f"{'steps/s (all procs)':>22}")
    for layout, outs in results.items():
        for name in outs[0]["rows"]:
            secs = statistics.median(o["rows"][name]["seconds"] for o in outs)
            gflop = outs[0]["rows"][name]["gflop"]
            rate = sum(o["rows"][name]["gflops_per_s"] for o in outs)
            peak = sum(o["matmul_gflops"] for o in outs)
            thr = sum(1.0 / o["rows"][name]["seconds"] for o in outs)
            cpu = statistics.median(o["rows"][name].get("cpu_seconds", math.nan) for o in outs)
            print(f"{name:<16}{layout:>8}{secs:>10.3f}{cpu:>8.3f}{gflop:>9.1f}{rate:>10.1f}{peak:>8.1f}{100 * rate / peak:>6.0f}%"
                  f"{thr:>22.3f}")
    print(f"load average: {os.getloadavg()}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "results": results, "load": os.getloadavg(), "configs": args.configs,
            "train_dir": portable_path(args.train_dir) if args.train_dir else "matplotlib's photo",
            "images": args.images, "record": record}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
