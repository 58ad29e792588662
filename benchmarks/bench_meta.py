"""Seconds per MAML meta-iteration of :class:`metasr_adapter.meta.learner.MetaLearner`, side by side in one process.

    python benchmarks/bench_meta.py                         # MZSR: meta-batch 5, task-batch 4, 64x64, 5 steps
    python benchmarks/bench_meta.py --threads 1 --iters 3 --configs "so:fp32:loop:nchw,so:fp32:loop:cl"
    python benchmarks/bench_meta.py --meta-batch 2 --task-batch 2 --json out.json

Every configuration is ``order:precision:batching:layout[:backend]`` with order ``so``/``fo`` (second/first
order), precision ``fp32``/``bf16``, batching ``loop``/``vmap`` (tasks one after another, or all at once with
``torch.func.vmap`` = grouped convolutions), layout ``nchw``/``cl`` (channels_last images; ``vmap`` is always
NCHW) and backend ``functional`` (default) or ``learn2learn`` (skipped with a note when not importable).
A suffix ``@anil`` adapts only ``--anil-params`` in the inner loop (ANIL-style; the frozen layers run once per
task, ``MAMLConfig.reuse_frozen_prefix``), ``@anil-uncut`` the same without reusing them (every inner step runs
the whole network): ``so:bf16:loop:cl@anil``. Their error column measures how far ANIL's meta-gradient is
from full MAML's, not round-off. A suffix ``@last`` meta-learns from the query loss after the last inner step
alone (``loss_weighting='last'``, plain MAML) and skips the other steps' query passes (``log_query_losses=False``);
its error column measures how far that objective's gradient is from MZSR's uniform weighting.

For each configuration the script builds the same MZSRNet (θ_T from ``--weights`` when given, else a seeded
random init) and the same meta-batch of real SR tasks (64x64 crops of matplotlib's Grace Hopper photo, inputs
bicubic down x2 and up again), computes one meta-gradient at θ (untimed warm-up) and compares it with the
fp32 second-order loop/NCHW meta-gradient (``||g - g_ref|| / ||g_ref||`` over all parameters; for first-order
rows this is the first-order approximation error). Then it times ``--iters`` full ``meta_step`` calls
(gradient, Adam) per configuration, round-robin over the configurations so that load drift hits all rows
alike, and prints the medians. The official TF code takes 16–21 s per second-order meta-iteration at meta-batch
5, task-batch 4 on a 2-core CPU (SPEC §0/§4).

The machine's load changes absolute times a lot; compare rows of one run (the ratio column), and watch the
1-minute load average printed with the table. When other processes share the cores, run with
``OMP_WAIT_POLICY=PASSIVE`` (or ``--threads 1``): by default the OpenMP threads spin at every barrier
waiting for a descheduled partner, which made 2 threads 2-3x slower than 1 thread on a loaded 2-core machine.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from metasr_adapter.adapters.mzsr import MZSRNet, mzsr_state_dict_from_tf
from metasr_adapter.meta.learner import MAMLConfig, MetaLearner, TaskBatch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import portable_path, result_record  # noqa: E402  (benchmarks/_record.py)

DEFAULT_CONFIGS = (
    "so:fp32:loop:nchw,so:fp32:loop:cl,so:fp32:vmap:nchw,so:bf16:loop:cl,"
    "fo:fp32:loop:nchw,fo:fp32:loop:cl,fo:fp32:vmap:nchw,fo:bf16:loop:cl"
)
TF_SECONDS = "16-21"


def photo_tasks(mb: int, tb: int, size: int, seed: int) -> TaskBatch:
    """A meta-batch of x2 SR tasks from random crops of a real photo (support and query disjoint crops)."""
    import cv2
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(f"cannot read {path}")
    hr = torch.from_numpy(np.ascontiguousarray(img[:, :, ::-1])).permute(2, 0, 1).float() / 255.0
    g = torch.Generator().manual_seed(seed)
    n = mb * 2 * tb
    ys = torch.randint(0, hr.shape[1] - size, (n,), generator=g)
    xs = torch.randint(0, hr.shape[2] - size, (n,), generator=g)
    crops = torch.stack([hr[:, y:y + size, x:x + size] for y, x in zip(ys.tolist(), xs.tolist())])
    lr = F.interpolate(crops, scale_factor=0.5, mode="bicubic", antialias=True, align_corners=False)
    ilr = F.interpolate(lr, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)
    x = ilr.view(mb, 2 * tb, 3, size, size)
    y = crops.view(mb, 2 * tb, 3, size, size)
    return TaskBatch(x[:, :tb].contiguous(), y[:, :tb].contiguous(), x[:, tb:].contiguous(), y[:, tb:].contiguous())


def parse_config(text: str) -> dict:
    body, _, variant = text.strip().partition("@")
    if variant not in ("", "anil", "anil-uncut", "last"):
        raise ValueError(f"config {text!r}: the suffix is @anil, @anil-uncut or @last")
    parts = body.split(":")
    if len(parts) not in (4, 5):
        raise ValueError(f"config {text!r}: expected order:precision:batching:layout[:backend], e.g. so:fp32:loop:cl")
    order, precision, batching, layout = parts[:4]
    backend = parts[4] if len(parts) == 5 else "functional"
    if order not in ("so", "fo") or layout not in ("nchw", "cl"):
        raise ValueError(f"config {text!r}: order is so|fo and layout nchw|cl")
    return {"name": text.strip(), "order": order, "precision": precision, "batching": batching, "layout": layout,
            "backend": backend, "inner_loop": variant if variant in ("anil", "anil-uncut") else "all",
            "query_losses": "last" if variant == "last" else "every step"}


def make_model(weights: str | None, seed: int) -> MZSRNet:
    net = MZSRNet()
    if weights:
        net.load_state_dict(mzsr_state_dict_from_tf(np.load(weights)))
    else:
        net.reset_parameters(torch.Generator().manual_seed(seed))
    return net


def flat_grad(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.detach().flatten().double() for p in model.parameters()])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--meta-batch", type=int, default=5)
    ap.add_argument("--task-batch", type=int, default=4)
    ap.add_argument("--size", type=int, default=64, help="patch size (square)")
    ap.add_argument("--inner-steps", type=int, default=5)
    ap.add_argument("--iters", type=int, default=3, help="timed meta-iterations per configuration")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    ap.add_argument("--configs", default=DEFAULT_CONFIGS, help="comma-separated order:precision:batching:layout[:backend]")
    ap.add_argument("--weights", default=None, help="official θ_T .npz (MODEL/convK arrays); default: random init")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--anil-params", default="conv7.*,conv8.*",
                    help="comma-separated fnmatch patterns that adapt in @anil / @anil-uncut configurations")
    ap.add_argument("--json", default=None, help="also write the rows here")
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    configs = [parse_config(c) for c in args.configs.split(",") if c.strip()]
    batch = photo_tasks(args.meta_batch, args.task_batch, args.size, args.seed)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, meta-batch {args.meta_batch}, "
          f"task-batch {args.task_batch}, {args.size}x{args.size}, {args.inner_steps} inner steps, "
          f"{args.iters} timed iterations each; OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}; "
          f"load before: {os.getloadavg()[0]:.2f}", flush=True)

    # reference meta-gradient: fp32, second order, loop, NCHW
    ref_model = make_model(args.weights, args.seed)
    ref = MetaLearner(ref_model, MAMLConfig(inner_steps=args.inner_steps, channels_last=False))
    ref.meta_gradient(batch)
    g_ref = flat_grad(ref_model)

    # build and warm up every configuration (its meta-gradient at θ gives the error column), then time
    # round-robin: iteration i of every configuration runs before iteration i+1 of any, so load drift
    # hits all rows alike
    rows, learners = [], []
    for c in configs:
        cfg_kw = dict(inner_steps=args.inner_steps, first_order=c["order"] == "fo", precision=c["precision"],
                      task_batching=c["batching"], channels_last=c["layout"] == "cl", backend=c["backend"])
        if c["inner_loop"] != "all":
            cfg_kw.update(adapt_params=args.anil_params.split(","), reuse_frozen_prefix=c["inner_loop"] == "anil")
        if c["query_losses"] == "last":
            cfg_kw.update(loss_weighting="last", log_query_losses=False)
        try:
            model = make_model(args.weights, args.seed)
            learner = MetaLearner(model, MAMLConfig(**cfg_kw))
        except ImportError as e:
            rows.append({**c, "median_s": None, "times_s": [], "rel_err": None, "note": str(e).split(".")[0]})
            print(f"{c['name']}: skipped ({rows[-1]['note']})", flush=True)
            continue
        t0 = time.perf_counter()
        learner.meta_gradient(batch)  # warm-up; gradient at θ
        warm = time.perf_counter() - t0
        g = flat_grad(model)
        rel = float((g - g_ref).norm() / g_ref.norm())
        rows.append({**c, "median_s": None, "times_s": [], "rel_err": rel, "warmup_s": warm, "note": ""})
        learners.append((rows[-1], learner))
        print(f"{c['name']}: warm-up {warm:.2f} s, meta-grad rel err {rel:.2e}", flush=True)
    for i in range(args.iters):
        for row, learner in learners:
            t0 = time.perf_counter()
            learner.meta_step(batch)
            row["times_s"].append(time.perf_counter() - t0)
        print(f"round {i + 1}: " + ", ".join(f"{row['name']} {row['times_s'][-1]:.2f}" for row, _ in learners)
              + f" (load {os.getloadavg()[0]:.2f})", flush=True)
    for row, _ in learners:
        row["median_s"] = statistics.median(row["times_s"])

    base = {r["order"]: r["median_s"] for r in rows
            if r["median_s"] and r["precision"] == "fp32" and r["batching"] == "loop" and r["layout"] == "nchw"
            and r["backend"] == "functional" and r["inner_loop"] == "all" and r["query_losses"] == "every step"}
    print()
    print(f"| backend | order | precision | batching | layout | inner loop | query losses | s/iter (median of "
          f"{args.iters}) | vs fp32 loop NCHW | meta-grad rel err vs fp32 2nd order |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if r["median_s"] is None:
            print(f"| {r['backend']} | {r['order']} | {r['precision']} | {r['batching']} | {r['layout']} | "
                  f"{r['inner_loop']} | {r['query_losses']} | skipped: {r['note']} | | |")
            continue
        b = base.get(r["order"])
        ratio = f"{r['median_s'] / b:.2f}x" if b else "-"
        print(f"| {r['backend']} | {r['order']} | {r['precision']} | {r['batching']} | {r['layout']} | "
              f"{r['inner_loop']} | {r['query_losses']} | {r['median_s']:.2f} | {ratio} | {r['rel_err']:.2e} |")
    print(f"\nofficial TF (SPEC §4, 2-core CPU, meta-batch 5, task-batch 4, second order): {TF_SECONDS} s/iteration; "
          f"load after: {os.getloadavg()[0]:.2f}")
    if args.json:
        shown = {**vars(args), "weights": portable_path(args.weights), "json": portable_path(args.json)}
        Path(args.json).write_text(json.dumps({"args": shown, "threads": torch.get_num_threads(),
                                               "torch": torch.__version__, "rows": rows,
                                               "record": result_record(argv, script=__file__)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
