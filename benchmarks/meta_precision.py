"""bf16 autocast against fp32 for one meta-gradient: how far it moves, and how much faster it is.

    python benchmarks/meta_precision.py --recipe recipes/mzsr_x2_cpu_sharp_lslr.yaml --batches 3 --threads 1

Builds the recipe's network (its ``model.weights``), task sampler and MAML settings, then for the first
``--batches`` meta-batches computes the meta-gradient (every meta-parameter, learned inner rates included)
once in fp32 and once under bf16 autocast, from the same weights. Reports per batch the cosine and the
relative L2 distance between the two gradients and the seconds each took (the precisions alternate, batch by
batch, so machine noise hits both). A long run may use bf16 when the cosine stays above the tolerance the
recipe states. Writes ``--json`` (default ``benchmarks/results/meta_precision.json``).
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
from _record import portable_path, result_record  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipe", default=str(ROOT / "recipes" / "mzsr_x2_cpu_sharp_lslr.yaml"))
    ap.add_argument("--set", nargs="*", default=[], help="recipe overrides KEY=VALUE")
    ap.add_argument("--batches", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "meta_precision.json"))
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from metasr_adapter.io.weights import load_weights
    from metasr_adapter.meta.learner import MAMLConfig, MetaLearner
    from metasr_adapter.training.recipes import load_recipe
    from metasr_adapter.meta.tasks import MLSRTaskSampler, PatchPool, TaskSampler
    from metasr_adapter.training.network import build_model, weights_file  # recipe -> network, weights file

    recipe = load_recipe(args.recipe, args.set)
    m, d = recipe["meta"], recipe["data"]

    pool = PatchPool(d["train_dir"], patch_size=d["patch_size"], stride=d["stride"], grad_threshold=d["grad_threshold"],
                     augment=d["augment"], recursive=d["recursive"], progress=False).build()
    probe_model = build_model(recipe)
    upsample = bool(getattr(probe_model, "upsample_input", False))
    if d["tasks"] == "mlsr":
        sampler = MLSRTaskSampler(pool, meta_batch=m["meta_batch"], task_batch=m["task_batch"], scale=d["scales"][0],
                                  kernel=d["kernel"], kernel_size=d["kernel_size"], k1_factor=d["kernel_k1_factor"],
                                  ds_method=d["ds_method"], upsample_input=upsample, seed=recipe["seed"],
                                  family=d["photo"], min_var=d["kernel_min_var"])
    else:
        sampler = TaskSampler(pool, meta_batch=m["meta_batch"], task_batch=m["task_batch"], scales=d["scales"],
                              kernel_size=d["kernel_size"], k1_factor=d["kernel_k1_factor"], ds_method=d["ds_method"],
                              noise_std=d["noise_std"], upsample_input=upsample, seed=recipe["seed"],
                              min_var=d["kernel_min_var"])

    def learner(precision: str) -> MetaLearner:
        model = build_model(recipe)
        if recipe["model"]["weights"] is not None:
            load_weights(model, weights_file(recipe["model"]["weights"]))
        cfg = MAMLConfig(inner_steps=m["inner_steps"], inner_lr=m["inner_lr"], first_order=m["first_order"],
                         meta_lr=m["meta_lr"], loss_weighting=m["loss_weighting"], adapt_params=m["adapt_params"],
                         precision=precision, log_query_losses=m["log_query_losses"],
                         learn_inner_lr=m["learn_inner_lr"], inner_lr_meta_lr=m["inner_lr_meta_lr"])
        return MetaLearner(model, cfg, loss_fn=m["loss"])

    learners = {p: learner(p) for p in ("fp32", "bf16")}
    rows = []
    for i in range(args.batches):
        batch = sampler.sample(i)
        grads, secs = {}, {}
        for p in (("fp32", "bf16") if i % 2 == 0 else ("bf16", "fp32")):
            t0 = time.perf_counter()
            learners[p].meta_gradient(batch, i)
            secs[p] = time.perf_counter() - t0
            grads[p] = torch.cat([q.grad.flatten().double() for q in learners[p].meta_parameters])
        a, b = grads["fp32"], grads["bf16"]
        rows.append({"batch": i, "cosine": float(a @ b / (a.norm() * b.norm())), "rel_l2": float((a - b).norm() / a.norm()),
                     "seconds_fp32": secs["fp32"], "seconds_bf16": secs["bf16"]})
        print(f"batch {i}: cosine {rows[-1]['cosine']:.5f}, relative L2 {rows[-1]['rel_l2']:.4f}, "
              f"fp32 {secs['fp32']:.1f} s, bf16 {secs['bf16']:.1f} s")
    speedup = statistics.median(r["seconds_fp32"] / r["seconds_bf16"] for r in rows)
    print(f"median speed-up bf16/fp32: {speedup:.2f}x; worst cosine {min(r['cosine'] for r in rows):.5f}")
    out = {"recipe": portable_path(args.recipe), "overrides": args.set, "rows": rows, "median_speedup": speedup,
           "worst_cosine": min(r["cosine"] for r in rows), "record": result_record(argv, script=__file__)}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
