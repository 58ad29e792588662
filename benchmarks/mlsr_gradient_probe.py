"""What does one MLSR meta-gradient contain?  A probe of first-order MLSR at the paper's α.

MLSR (Park et al., ECCV 2020, Algorithm 1) meta-trains with first-order MAML: for each task the meta-gradient
is the gradient of the LR → HR loss *at the adapted weights* θ' = θ − α Σ ∇ L_support. If the inner steps
barely moved the weights, that gradient would be almost the plain supervised gradient at θ, and first-order
MLSR little more than continued supervised training on the same patches. This script measures it on the tasks
a recipe draws (on IDN at the paper's α it is not: the cosine is 0.87 before meta-training and 0.55 after;
benchmarks/results/mlsr/gradient_probe_*.md):

* ``‖θ' − θ‖ / ‖θ‖`` after the inner steps, and the query (LR → HR) PSNR at θ and at θ';
* the cosine between three per-task gradients: ``g_sup`` = ∇_θ L_query(θ) (supervised), ``g_fo`` = ∇_θ'
  L_query(θ') (first-order MAML), ``g_so`` = d L_query(θ'(θ)) / dθ (second-order MAML, the exact
  meta-gradient); also for their meta-batch means (what the Adam step sees);
* ``‖g_fo − g_sup‖ / ‖g_sup‖``: the part of the first-order meta-gradient that adaptation contributes.

It repeats this for several α (``--alphas``; 0.65025 is the paper's 1e-5 on 0-255 translated to [0, 1], see
recipes/mlsr_idn_x2_cpu.yaml; plain SGD on IDN becomes unstable between 2x and 4x that).

    python benchmarks/mlsr_gradient_probe.py --weights idn_x2_bicubic --tasks 8 --threads 1 \
        --json benchmarks/results/mlsr/gradient_probe_idn_x2_bicubic.json [--set data.kernel=random]
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from _record import portable_arg, portable_path, result_record  # noqa: E402  (benchmarks/_record.py)


def _flat(grads) -> torch.Tensor:
    return torch.cat([g.reshape(-1) for g in grads])


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.dot(a, b) / (a.norm() * b.norm()).clamp_min(1e-30))


def _psnr(mse: float) -> float:
    return 10 * math.log10(1.0 / max(mse, 1e-12))


def probe_task(model, params: dict, names: list[str], sx, sy, qx, qy, alpha: float, steps: int) -> dict:
    """Per-task measurements (see the module docstring) for one task's support and query pairs."""
    from metasr_adapter.adapt.step import functional_loss
    from metasr_adapter.meta.inner import inner_adapt

    mse = torch.nn.functional.mse_loss
    with torch.enable_grad():
        q0 = functional_loss(model, params, qx, qy, loss_fn=mse)
        g_sup = _flat(torch.autograd.grad(q0, [params[n] for n in names]))
        # second order: the inner gradients stay differentiable, the meta-gradient flows back to θ
        fast_so = inner_adapt(model, params, sx, sy, steps, alpha, create_graph=True, loss_fn=mse)[-1]
        q_so = functional_loss(model, fast_so, qx, qy, loss_fn=mse)
        g_so = _flat(torch.autograd.grad(q_so, [params[n] for n in names]))
        # first order: the same θ' as a leaf; the gradient is taken there
        fast = {n: fast_so[n].detach().requires_grad_(True) for n in names}
        q1 = functional_loss(model, fast, qx, qy, loss_fn=mse)
        g_fo = _flat(torch.autograd.grad(q1, [fast[n] for n in names]))
    theta = _flat([params[n].detach() for n in names])
    moved = _flat([fast[n].detach() for n in names]) - theta
    return {"rel_displacement": float(moved.norm() / theta.norm()), "query_psnr_theta": _psnr(float(q0.detach())),
            "query_psnr_adapted": _psnr(float(q1.detach())), "cos_fo_sup": _cos(g_fo, g_sup), "cos_so_sup": _cos(g_so, g_sup),
            "cos_so_fo": _cos(g_so, g_fo), "rel_fo_minus_sup": float((g_fo - g_sup).norm() / g_sup.norm()),
            "_g": (g_sup, g_fo, g_so)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--weights", default="idn_x2_bicubic", help="bundled name or file (default %(default)s)")
    ap.add_argument("--recipe", default=str(ROOT / "recipes" / "mlsr_idn_x2_cpu.yaml"),
                    help="the recipe whose tasks are drawn (patch size, kernel, data)")
    ap.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                    help="recipe override, e.g. data.kernel=random")
    ap.add_argument("--tasks", type=int, default=8, help="tasks (one meta-batch of this size)")
    ap.add_argument("--iteration", type=int, default=0, help="which meta-batch of the recipe's sampler")
    ap.add_argument("--alphas", type=float, nargs="+", default=[0.65025, 1.3005, 2.601])
    ap.add_argument("--steps", type=int, default=None, help="inner steps (default: the recipe's)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", default=None, help="write the results here (and a .md beside it)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.tasks < 1:
        raise SystemExit(f"--tasks {args.tasks}: give at least 1")

    from metasr_adapter.meta.tasks import MLSRTaskSampler, PatchPool
    from metasr_adapter.training.recipes import load_recipe
    from mlsr_tables import load_network

    recipe = load_recipe(args.recipe, args.overrides)
    d, m = recipe["data"], recipe["meta"]
    steps = args.steps or m["inner_steps"]
    model, fingerprint, _ = load_network(args.weights, recipe["model"]["name"], int(recipe["model"]["scale"]))
    for p in model.parameters():
        p.requires_grad_(False)
    params = {n: p.detach().clone().requires_grad_(True) for n, p in model.named_parameters()}
    names = list(params)
    pool = PatchPool(d["train_dir"], patch_size=d["patch_size"], stride=d["stride"],
                     grad_threshold=d["grad_threshold"], augment=d["augment"], recursive=d["recursive"]).build()
    sampler = MLSRTaskSampler(pool, meta_batch=args.tasks, task_batch=m["task_batch"], scale=d["scales"][0],
                              kernel=d["kernel"], kernel_size=d["kernel_size"], k1_factor=d["kernel_k1_factor"],
                              ds_method=d["ds_method"], seed=recipe["seed"])
    batch = sampler.sample_arrays(args.iteration)
    rows = []
    for alpha in args.alphas:
        t0 = time.perf_counter()
        per_task = [probe_task(model, params, names, batch["support_x"][t], batch["support_y"][t],
                               batch["query_x"][t], batch["query_y"][t], alpha, steps) for t in range(args.tasks)]
        means = [torch.stack([r["_g"][i] for r in per_task]).mean(0) for i in range(3)]
        keys = [k for k in per_task[0] if not k.startswith("_")]
        row = {"alpha": alpha, **{k: sum(r[k] for r in per_task) / len(per_task) for k in keys},
               "batch_cos_fo_sup": _cos(means[1], means[0]), "batch_cos_so_sup": _cos(means[2], means[0]),
               "batch_cos_so_fo": _cos(means[2], means[1]),
               "batch_rel_fo_minus_sup": float((means[1] - means[0]).norm() / means[0].norm()),
               "seconds": time.perf_counter() - t0}
        rows.append(row)
        print(f"α={alpha:g}: ‖Δθ‖/‖θ‖ {row['rel_displacement']:.2e}, query PSNR {row['query_psnr_theta']:.3f} → "
              f"{row['query_psnr_adapted']:.3f} dB, cos(g_fo, g_sup) {row['cos_fo_sup']:.5f} "
              f"(batch {row['batch_cos_fo_sup']:.5f}), cos(g_so, g_sup) {row['cos_so_sup']:.5f}, "
              f"‖g_fo − g_sup‖/‖g_sup‖ {row['rel_fo_minus_sup']:.3e} ({row['seconds']:.0f} s)")
    settings = {"weights": portable_path(args.weights), "fingerprint": fingerprint,
                "recipe": Path(args.recipe).name, "overrides": [portable_arg(o) for o in args.overrides],
                "tasks": args.tasks, "iteration": args.iteration, "steps": steps,
                "patch_size": d["patch_size"], "kernel": d["kernel"], "threads": torch.get_num_threads()}
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"settings": settings, "rows": rows,
                                   "record": result_record(argv, script=__file__)}, indent=2) + "\n")
        lines = [f"MLSR meta-gradient probe: {args.tasks} tasks of `{settings['recipe']}` "
                 f"({d['patch_size']}² HR, {d['kernel']}), {steps} inner SGD steps, weights `{settings['weights']}`. "
                 "Per-task means; 'batch' = the meta-batch mean gradients.", "",
                 "| α | ‖θ'−θ‖/‖θ‖ | query PSNR θ → θ' (dB) | cos(g_fo, g_sup) | cos(g_so, g_sup) | cos(g_so, g_fo) "
                 "| ‖g_fo−g_sup‖/‖g_sup‖ | batch cos(g_fo, g_sup) | batch cos(g_so, g_sup) |",
                 "|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            lines.append(f"| {r['alpha']:g} | {r['rel_displacement']:.2e} | {r['query_psnr_theta']:.3f} → "
                         f"{r['query_psnr_adapted']:.3f} | {r['cos_fo_sup']:.5f} | {r['cos_so_sup']:.5f} | "
                         f"{r['cos_so_fo']:.5f} | {r['rel_fo_minus_sup']:.2e} | {r['batch_cos_fo_sup']:.5f} | "
                         f"{r['batch_cos_so_sup']:.5f} |")
        out.with_suffix(".md").write_text("\n".join(lines) + "\n")
        print(f"wrote {out} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
