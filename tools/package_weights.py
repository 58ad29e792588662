"""Turn a finished training run into bundled weights: ``NAME.safetensors`` + ``NAME.json`` + ``NAME.md``.

    python tools/package_weights.py runs/mzsr_x2_cpu --name mzsr_x2_direct \
        --description "MZSR x2, direct subsampling (g^d kernels)" --table2 benchmarks/results/table2

Reads the run folder written by ``metasr train`` (``meta_trained.pth``, ``recipe.yaml``,
``checkpoint.pt``, ``run_info.json``, ``eval.json``, ``metrics.jsonl``) and writes into
``metasr_adapter/weights/``:

* ``NAME.safetensors`` — the weights with their adapter metadata in the header (arch, kwargs, scale,
  ds_method, schedule, loss, adapt_params, recipe, commit);
* ``NAME.json`` — the :class:`~metasr_adapter.io.pretrained.WeightsInfo` sidecar: sha256, lineage
  (recipe, commits, data, hardware, stages, wall time) and measured scores;
* ``NAME.md`` — the model card, generated from the same facts (Table 2 rows from ``--table2`` when
  its cells exist).

Refuses a run that has not finished (no ``meta_trained.pth`` or its checkpoint is not at ``done``), or
whose starting point was loaded from a file (shipped weights descend from random initialisation).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from metasr_adapter.io.pretrained import WEIGHTS_DIR  # noqa: E402
from metasr_adapter.io.weights import read_weights, save_weights  # noqa: E402

KERNEL_ORDER = ("gd0.2", "gd2.0", "gdani", "gb1.3")


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h ({seconds / 60:.0f} min)"


def lineage(run: Path) -> dict:
    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    ckpt = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)
    if ckpt.get("stage") != "done":
        raise SystemExit(f"{run}: the run is at stage {ckpt.get('stage')!r}, not 'done'; finish it with --resume")
    if recipe["model"]["weights"] is not None:
        raise SystemExit(f"{run}: started from {recipe['model']['weights']}; bundled weights must start from random "
                         "initialisation")
    info = json.loads((run / "run_info.json").read_text()) if (run / "run_info.json").is_file() else {"sessions": []}
    stages = {k: float(v) for k, v in ckpt.get("stage_seconds", {}).items()}
    p, m = recipe["pretrain"], recipe["meta"]
    threads = sorted({s.get("threads") for s in info["sessions"] if s.get("threads")})
    return {
        "start": f"random initialisation (seed {recipe['seed']})",
        "recipe": recipe.get("name"),
        "recipe_resolved": recipe,
        "commits": sorted({s["commit"] for s in info["sessions"] if s.get("commit")}),
        "sessions": info["sessions"],
        "data": {"train_dir": Path(recipe["data"]["train_dir"]).name,
                 "images": "T91 + BSDS300-train (BSDS200): 291 images; the paper trained on DIV2K, not available here"},
        "stages": {
            "pretrain": {"iterations": p["iterations"], "degradation": p["degradation"], "batch": p["batch_size"],
                         "patch": p["patch_size"], "seconds": stages.get("pretrain")},
            "meta": {"iterations": m["iterations"], "first_order_until": m["second_order_from"],
                     "meta_batch": m["meta_batch"], "task_batch": m["task_batch"], "seconds": stages.get("meta")},
        },
        "train_seconds": sum(v for k, v in stages.items() if k in ("pretrain", "meta")),
        "threads": threads,
        "hardware": sorted({f"{s.get('cpu')} ({s.get('cpu_count')} cores)" for s in info["sessions"]}),
    }


def table2_rows(table2: Path | None, ds_method: str) -> dict:
    if table2 is None or not table2.is_dir():
        return {}
    rows = {}
    for f in sorted(table2.glob("*_*.json")):
        name, kernel = f.stem.rsplit("_", 1)
        if kernel not in KERNEL_ORDER or (kernel.startswith("gb") != (ds_method == "bicubic")):
            continue
        c = json.loads(f.read_text())
        rows[f"{name}/{kernel}"] = {"images": len(c["images"]), "psnr": c["mean_psnr"], "ssim": c["mean_ssim"]}
    return rows


def model_card(name: str, description: str, info: dict, lin: dict, set5: dict | None, t2: dict) -> str:
    st = lin["stages"]
    lines = [
        f"# {name}",
        "",
        description,
        "",
        f"* Architecture: `{info['arch']}` {json.dumps(info['arch_kwargs'])}, x{info['scale']:g}, "
        f"{info['params']:,} parameters, {info['bytes'] / 1e6:.2f} MB.",
        f"* Test-time use: `MetaSR(load_model('mzsr', '{name}'), {info['scale']:g}, schedule='{info['schedule']}')`, "
        f"or `load_pretrained('{name}')`, or `metasr adapt LR.png --weights {name}`. Kernels blurred then "
        f"**{info['ds_method']}**-subsampled.",
        f"* sha256 `{info['sha256']}`.",
        "",
        "## Lineage",
        "",
        f"* Start: {lin['start']}. Nothing here descends from the official MZSR weights.",
        f"* Recipe: `recipes/{lin['recipe']}.yaml` (`--threads 1`), code at commit(s) "
        f"{', '.join('`' + c[:10] + '`' for c in lin['commits'])}; resumed "
        f"{max(0, len(lin['sessions']) - 1)} time(s) (a resume continues exactly).",
        f"* Stage 1, supervised pretraining on the {st['pretrain']['degradation']}-degraded task distribution: "
        f"{st['pretrain']['iterations']} steps of {st['pretrain']['batch']} patches of {st['pretrain']['patch']}², "
        f"{_hours(st['pretrain']['seconds'] or 0)}.",
        f"* Stage 2, MAML: {st['meta']['iterations']} meta-iterations (meta-batch {st['meta']['meta_batch']}, task "
        f"batch {st['meta']['task_batch']}, 5 inner steps), first order until {st['meta']['first_order_until']}, "
        f"second order after; {_hours(st['meta']['seconds'] or 0)}.",
        f"* Training wall time: {_hours(lin['train_seconds'])} on {', '.join(lin['hardware'])}, "
        f"{'/'.join(map(str, lin['threads']))} thread(s), fp32, no GPU (probes and evaluation not counted).",
        f"* Data: {lin['data']['images']}.",
        "",
        "## Scores",
        "",
    ]
    if set5:
        mp = set5["mean_psnr"]
        lines += [
            f"Training-run evaluation (`{set5['settings'].get('lr_dir') and 'official MZSR LR inputs' or 'synthesised LR'}`, "
            f"{set5['settings']['kernel']}), Y-PSNR (dB) after k steps:",
            "",
            "| bicubic | " + " | ".join(f"{k}" for k in range(11)) + " |",
            "|---" * 12 + "|",
            f"| {mp['bicubic']:.2f} | " + " | ".join(f"{mp[str(k)]:.2f}" for k in range(11)) + " |",
            "",
        ]
    if t2:
        lines += ["MZSR Table 2 protocol (`benchmarks/table2.py`), Y-PSNR / SSIM:", "",
                  "| set / kernel | images | bicubic | 0 steps | 1 step | 10 steps |", "|---|---|---|---|---|---|"]
        for key, r in t2.items():
            p, s = r["psnr"], r["ssim"]
            lines.append(f"| {key} | {r['images']} | " + " | ".join(f"{p[c]:.2f} / {s[c]:.4f}" for c in
                                                                 ("bicubic", "0", "1", "10")) + " |")
        lines.append("")
    below = [f"{k} ({r['psnr']['10']:.2f} dB after 10 steps, bicubic {r['psnr']['bicubic']:.2f})"
             for k, r in t2.items() if r["psnr"]["10"] < r["psnr"]["bicubic"]]
    lines += [
        "## Limits",
        "",
        *([f"* Below bicubic even after 10 steps: {', '.join(below)}. The kernel lies outside the training "
           "distribution; the network's starting point sharpens too much there, and adaptation recovers only "
           "part of it."] if below else []),
        f"* Trained for {lin['train_seconds'] * max(lin['threads'] or [1]) / 3600:.1f} CPU-hours on 291 images; the "
        "paper's model saw DIV2K, 500k pretraining steps and 60k-100k second-order meta-iterations on a GPU.",
        "* Trained on Gaussian kernels with variances in [1, 5) (x2); kernels far outside (e.g. g^d_0.2) rely on "
        "adaptation alone.",
        "* The training images (T91, BSDS300) carry their owners' research-use terms; the weights are released "
        "with the project's licence.",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--name", required=True)
    ap.add_argument("--description", required=True)
    ap.add_argument("--table2", type=Path, default=None, help="folder of benchmarks/table2.py cells")
    ap.add_argument("--dest", type=Path, default=WEIGHTS_DIR)
    args = ap.parse_args()
    run = args.run
    weights = run / "meta_trained.pth"
    if not weights.is_file():
        raise SystemExit(f"{weights} not found: the run has not finished its meta stage")
    lin = lineage(run)
    recipe = lin["recipe_resolved"]
    state = read_weights(weights)
    commit = lin["commits"][-1] if lin["commits"] else None
    meta = {"arch": recipe["model"]["name"], "arch_kwargs": {"width": recipe["model"]["width"],
                                                              "depth": recipe["model"]["depth"]},
            "scale": float(recipe["model"]["scale"]), "ds_method": recipe["data"]["ds_method"],
            "schedule": recipe["eval"]["schedule"], "loss": recipe["meta"]["loss"],
            "adapt_params": recipe["meta"]["adapt_params"], "recipe": lin["recipe"], "commit": commit, "name": args.name}
    args.dest.mkdir(parents=True, exist_ok=True)
    out = args.dest / f"{args.name}.safetensors"
    save_weights(state, out, **meta)
    sha = hashlib.sha256(out.read_bytes()).hexdigest()
    set5 = json.loads((run / "eval.json").read_text())["meta_trained"] if (run / "eval.json").is_file() else None
    metrics = {}
    if set5:
        metrics["train_eval"] = {"kernel": set5["settings"]["kernel"], "lr_dir": set5["settings"]["lr_dir"],
                                 "mean_psnr": {k: round(v, 4) for k, v in set5["mean_psnr"].items()}}
    t2 = table2_rows(args.table2, meta["ds_method"])
    if t2:
        metrics["table2"] = t2
    lin_small = {k: v for k, v in lin.items() if k != "recipe_resolved"}
    info = {"name": args.name, "arch": meta["arch"], "filename": out.name, "scale": meta["scale"],
            "ds_method": meta["ds_method"], "schedule": meta["schedule"], "description": args.description,
            "loss": meta["loss"], "sha256": sha, "lineage": lin_small, "metrics": metrics}
    (args.dest / f"{args.name}.json").write_text(json.dumps(info, indent=2) + "\n")
    card_info = {**meta, "sha256": sha, "params": sum(v.numel() for v in state.values()), "bytes": out.stat().st_size}
    (args.dest / f"{args.name}.md").write_text(model_card(args.name, args.description, card_info, lin, set5, t2))
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB), {args.name}.json and {args.name}.md in {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
