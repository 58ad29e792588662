"""Turn a finished training run into bundled weights: ``NAME.safetensors`` + ``NAME.json`` + ``NAME.md``.

    python tools/package_weights.py runs/mzsr_x2_cpu --name mzsr_x2_direct \
        --description "MZSR x2, direct subsampling (g^d kernels)" --table2 benchmarks/results/table2
    python tools/package_weights.py runs/idn_x2_cpu --name idn_x2_bicubic --description "IDN x2 ..." \
        --mlsr-tables benchmarks/results/mlsr/mlsr_tables.json --mlsr-model idn
    python tools/package_weights.py runs/mlsr_idn_x2_cpu --name idn_x2_mlsr --parent idn_x2_bicubic \
        --description "IDN-ML x2 ..." --mlsr-tables benchmarks/results/mlsr/mlsr_tables.json --mlsr-model idn-ml

Reads the run folder written by ``metasr train`` (``meta_trained.pth``, ``recipe.yaml``,
``checkpoint.pt``, ``run_info.json``, ``eval.json``, ``metrics.jsonl``) and writes into
``metasr_adapter/weights/``:

* ``NAME.safetensors`` — the weights with their adapter metadata in the header (arch, kwargs, scale,
  ds_method, schedule, loss, adapt_params, recipe, commit);
* ``NAME.json`` — the :class:`~metasr_adapter.io.pretrained.WeightsInfo` sidecar: sha256, lineage
  (recipe, commits, data, hardware, stages, wall time; the parent's lineage for a chained run) and
  measured scores;
* ``NAME.md`` — the model card, generated from the same facts (MZSR Table 2 rows from ``--table2``,
  MLSR Table 3/5 rows from ``--mlsr-tables``, when present).

Refuses a run that has not finished (no ``meta_trained.pth`` or its checkpoint is not at ``done``). A run
that started from a weights file is accepted only with ``--parent NAME``: the file must hold exactly the
tensors of the bundled weights ``NAME``, which must themselves descend from random initialisation (shipped
weights descend from random initialisation through this project's recipes only).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(ROOT / "benchmarks"))
from _record import portable_path  # noqa: E402  (benchmarks/_record.py: no machine paths in tracked files)
from metasr_adapter.atomic import load_checked  # noqa: E402
from metasr_adapter.io.pretrained import WEIGHTS_DIR  # noqa: E402
from metasr_adapter.io.weights import read_metadata, read_weights, save_weights, tensor_fingerprint  # noqa: E402
from metasr_adapter.ops.degradation_spec import PhotoDegradations  # noqa: E402
from metasr_adapter.training.network import trained_ds_method, trained_on_photos  # noqa: E402
from metasr_adapter.training.cpu_time import mean_threads, read_metrics  # noqa: E402

KERNEL_ORDER = ("gd0.2", "gd2.0", "gdani", "gb1.3")


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h ({seconds / 60:.0f} min)"


def _parent_sidecar(name: str, dest: Path) -> Path | None:
    """The sidecar ``NAME.json`` of parent weights: in ``dest`` first, else among the bundled weights."""
    for folder in (dest, WEIGHTS_DIR):
        if (folder / f"{name}.json").is_file():
            return folder / f"{name}.json"
    return None


def _parent_at_run_commits(run: Path, parent_file: Path, parent_sha256: str) -> str | None:
    """Fingerprint of the parent for a fine-tuning run that predates ``parent_fingerprint``: accepted only when
    the parent's file, as committed at every commit the run's sessions ran on, has the bundled file's sha256."""
    import hashlib
    import subprocess

    info = json.loads((run / "run_info.json").read_text()) if (run / "run_info.json").is_file() else {}
    commits = {s.get("commit") for s in info.get("sessions", [])}
    if not commits or None in commits:
        return None
    rel = parent_file.resolve().relative_to(ROOT).as_posix()
    for commit in commits:
        blob = subprocess.run(["git", "show", f"{commit}:{rel}"], cwd=ROOT, capture_output=True)
        if blob.returncode != 0 or hashlib.sha256(blob.stdout).hexdigest() != parent_sha256:
            return None
    return tensor_fingerprint(read_weights(parent_file))


def _parent_start(run: Path, recipe: dict, parent: str | None, dest: Path) -> tuple[str, dict | None]:
    """``(start text, parent sidecar)`` of a run; refuses a start that is neither random nor ``--parent``."""
    start_spec = recipe["model"]["weights"]
    if parent is None and start_spec is not None and _parent_sidecar(str(start_spec), dest) is not None:
        parent = start_spec  # the recipe named bundled weights (model.weights: NAME)
    if start_spec is None:
        if parent is not None:
            raise SystemExit(f"{run}: --parent {parent} given, but the run started from random initialisation")
        return f"random initialisation (seed {recipe['seed']})", None
    if parent is None:
        raise SystemExit(f"{run}: started from {recipe['model']['weights']}; bundled weights must start from random "
                         "initialisation, or from bundled weights named with --parent NAME")
    sidecar = _parent_sidecar(parent, dest)
    if sidecar is None:
        raise SystemExit(f"--parent {parent}: neither {dest / f'{parent}.json'} nor bundled weights of that name; "
                         "package the parent run first")
    pinfo = json.loads(sidecar.read_text())
    dest = sidecar.parent
    if not pinfo["lineage"].get("descends_from_random_init", pinfo["lineage"]["start"].startswith("random")):
        raise SystemExit(f"--parent {parent}: its lineage does not start from random initialisation")
    parent_tensors = tensor_fingerprint(read_weights(dest / pinfo["filename"]))
    fine_tuned = recipe["pretrain"]["iterations"] > 0 and recipe["pretrain"]["degradation"] == "photo"
    if fine_tuned:  # start_weights.pth holds the fine-tuned result; the run records what it loaded
        recorded = read_metadata(run / "start_weights.pth").get("parent_fingerprint")
        if recorded is None:
            recorded = _parent_at_run_commits(run, dest / pinfo["filename"], pinfo["sha256"])
        if recorded != parent_tensors:
            raise SystemExit(f"{run}: the fine-tuning run started from tensors {recorded}, not {parent} "
                             f"({parent_tensors}); a run packaged with --parent must start from exactly those weights")
    elif tensor_fingerprint(read_weights(run / "start_weights.pth")) != parent_tensors:
        raise SystemExit(f"{run}/start_weights.pth is not {parent} ({dest / pinfo['filename']}): a run packaged with "
                         "--parent must start from exactly those weights")
    return f"the bundled weights `{parent}` (sha256 {pinfo['sha256'][:12]}…), themselves trained here from random " \
           "initialisation", pinfo


def _mean_threads(run: Path, threads: list[int]) -> float:
    """Threads averaged over the run's training time, from its metrics (each session's own --threads);
    the largest thread count where the run kept no metrics."""
    metrics = run / "metrics.jsonl"
    mean = mean_threads(read_metrics(metrics)) if metrics.is_file() else None
    return mean if mean is not None else float(max(threads or [1]))


def cpu_seconds(lin: dict) -> float:
    """Training CPU-seconds of a lineage (wall seconds × threads), its parent's included. Lineages packaged
    before ``mean_threads`` was recorded count their largest thread count."""
    own = lin["train_seconds"] * lin.get("mean_threads", max(lin.get("threads") or [1]))
    parent = lin.get("parent") or {}
    return own + parent.get("cpu_seconds", parent.get("train_seconds", 0.0))


def lineage(run: Path, parent: str | None = None, dest: Path = WEIGHTS_DIR) -> dict:
    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    ckpt = load_checked(run / "checkpoint.pt")  # checksummed by metasr train (weights_only=True)
    if ckpt.get("stage") != "done":
        raise SystemExit(f"{run}: the run is at stage {ckpt.get('stage')!r}, not 'done'; finish it with --resume")
    start, pinfo = _parent_start(run, recipe, parent, dest)
    info = json.loads((run / "run_info.json").read_text()) if (run / "run_info.json").is_file() else {"sessions": []}
    stages = {k: float(v) for k, v in ckpt.get("stage_seconds", {}).items()}
    p, m, d = recipe["pretrain"], recipe["meta"], recipe["data"]
    threads = sorted({s.get("threads") for s in info["sessions"] if s.get("threads")})
    trained: dict[str, dict] = {}
    if p["iterations"] > 0 and (recipe["model"]["weights"] is None or p["degradation"] == "photo"):
        trained["pretrain"] = {"iterations": p["iterations"], "degradation": p["degradation"], "batch": p["batch_size"],
                               "patch": p["patch_size"], "loss": p["loss"], "lr": p["lr"],
                               "precision": p.get("precision", "fp32"),
                               "fine_tuned": recipe["model"]["weights"] is not None,
                               "seconds": stages.get("pretrain")}
    if m["iterations"] > 0:
        trained["meta"] = {"iterations": m["iterations"], "tasks": d["tasks"], "kernel": d["kernel"],
                           "first_order_until": m["iterations"] if m["first_order"] else m["second_order_from"],
                           "meta_batch": m["meta_batch"], "task_batch": m["task_batch"], "patch": d["patch_size"],
                           "inner_steps": m["inner_steps"], "inner_lr": m["inner_lr"], "meta_lr": m["meta_lr"],
                           "loss": m["loss"], "precision": m["precision"], "seconds": stages.get("meta")}
    out = {
        "start": start,
        "descends_from_random_init": True,
        "recipe": recipe.get("name"),
        "recipe_resolved": recipe,
        "commits": sorted({s["commit"] for s in info["sessions"] if s.get("commit")}),
        "sessions": info["sessions"],
        "data": {"train_dir": Path(d["train_dir"]).name,
                 "images": "T91 + BSDS300-train (BSDS200): 291 images; the paper trained on DIV2K, not available here"},
        "stages": trained,
        "train_seconds": sum(v.get("seconds") or 0.0 for v in trained.values()),
        "threads": threads,
        "mean_threads": _mean_threads(run, threads),
        "hardware": sorted({f"{s.get('cpu')} ({s.get('cpu_count')} cores)" for s in info["sessions"]}),
    }
    if pinfo is not None:
        pl = pinfo["lineage"]
        out["parent"] = {"name": pinfo["name"], "sha256": pinfo["sha256"], "recipe": pl["recipe"],
                         "commits": pl["commits"], "train_seconds": pl["train_seconds"],
                         "cpu_seconds": cpu_seconds(pl), "start": pl["start"]}
    return out


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


def mlsr_rows(files: list[Path], model: str, fingerprint: str) -> dict:
    """``{"table3/bsd100": {"images", "psnr", "ssim"}, ...}`` of ``model`` in ``benchmarks/mlsr_tables.py``
    summaries (``mlsr_tables.json``), only from rows measured with these weights (``fingerprint``: their
    :func:`~metasr_adapter.io.weights.tensor_fingerprint`); a later file's entry replaces an earlier one's
    with fewer images."""
    rows: dict[str, dict] = {}
    for f in files:
        summary = json.loads(f.read_text())["results"]
        for key, entry in summary.items():
            m = entry["models"].get(model)
            if m is None or not entry["images"]:
                continue
            if m.get("weights") != fingerprint:
                print(f"{f}: {key} {model} left out: measured with {m.get('weights')}, not these weights")
                continue
            if key in rows and rows[key]["images"] > len(entry["images"]):
                continue
            rows[key] = {"images": len(entry["images"]), "psnr": m["mean_psnr"], "ssim": m["mean_ssim"],
                         "source": portable_path(f)}
    return rows


def _stage_lines(lin: dict) -> list[str]:
    lines = []
    for i, (name, st) in enumerate(lin["stages"].items(), start=1):
        if name == "pretrain":
            how = "supervised fine-tuning of the parent" if st.get("fine_tuned") else "supervised pretraining"
            lines.append(f"* Stage {i}, {how} on {st['degradation']}-degraded pairs: "
                         f"{st['iterations']} steps of {st['batch']} patches of {st['patch']}², "
                         f"{st.get('loss', 'l1').upper()} loss, {st.get('precision', 'fp32')}, "
                         f"{_hours(st['seconds'] or 0)}.")
        else:
            algo = "MLSR (first-order MAML, LR↓ → LR inner steps, LR → HR outer loss)" if st.get("tasks") == "mlsr" \
                else "MAML"
            fo = st["first_order_until"]
            order = ("first order throughout" if fo >= st["iterations"] else "second order throughout" if fo <= 0
                     else f"first order until {fo}, second order after")
            extra = (f", {st['patch']}² patches, α {st['inner_lr']}, β {st['meta_lr']}, {st['kernel']} kernels"
                     if st.get("tasks") == "mlsr" else "")
            lines.append(f"* Stage {i}, {algo}: {st['iterations']} meta-iterations (meta-batch {st['meta_batch']}, "
                         f"task batch {st['task_batch']}, {st.get('inner_steps', 5)} inner steps{extra}), {order}; "
                         f"{_hours(st['seconds'] or 0)}.")
    return lines


def kernel_range_line(recipe: dict) -> str:
    """The card's line on the training kernels' variances, read from the run's recipe (``data.kernel_min_var``
    up to ``kernel_k1_factor`` x scale, as :class:`~metasr_adapter.meta.tasks.TaskSampler` draws them)."""
    d = recipe["data"]
    scales = d.get("scales") or [recipe["model"]["scale"]]
    low, high = float(d.get("kernel_min_var", 1.0)), float(d.get("kernel_k1_factor", 2.5)) * min(scales)
    if d.get("ds_method", "direct") == "bicubic":  # Table 2 tests these weights on g^b_1.3 only
        outside = "sharp kernels lie inside" if low <= 0.2 else "sharper kernels rely on adaptation alone"
    else:
        outside = "g^d_0.2 lies inside" if low <= 0.2 else "kernels far outside (e.g. g^d_0.2) rely on adaptation alone"
    return f"* Trained on Gaussian kernels with variances in [{low:g}, {high:g}) (x{min(scales):g}); {outside}."


def model_card(name: str, description: str, info: dict, lin: dict, set5: dict | None, t2: dict,
               mlsr: dict | None = None, limits: list[str] | None = None, photos: dict | None = None) -> str:
    arch = info["arch"]
    learned = isinstance(info["schedule"], dict)
    if learned:  # the rates live in the file's metadata, and MetaSR(load_model(...)) takes them from there
        use = f"`MetaSR(load_model('{arch}', '{name}'))` (its learned rates, scale and loss come from the file), "
    elif arch == "mzsr":
        use = f"`MetaSR(load_model('mzsr', '{name}'), {info['scale']:g}, schedule='{info['schedule']}')`, "
    else:
        use = f"`load_model('{arch}', '{name}')`, "
    lines = [
        f"# {name}",
        "",
        description,
        "",
        f"* Architecture: `{arch}` {json.dumps(info['arch_kwargs'])}, x{info['scale']:g}, "
        f"{info['params']:,} parameters, {info['bytes'] / 1e6:.2f} MB.",
        f"* Test-time use: {use}or `load_pretrained('{name}')`, or `metasr adapt LR.png --weights {name}`. "
        + (f"Kernels blurred then **{info['ds_method']}**-subsampled." if arch == "mzsr" else
           f"Adaptation: {info['loss'].upper()} loss, plain SGD at α = {info['schedule']}."),
        *([f"* Learned inner learning rates (MAML++ LSLR): one α per tensor and adaptation step, "
           f"{min(min(v) for v in info['schedule']['per_parameter'].values()):.4f}–"
           f"{max(max(v) for v in info['schedule']['per_parameter'].values()):.4f}; `adapt` uses them by default."]
          if learned and "per_parameter" in info["schedule"] else []),
        *([f"* Meant for {info['adapt_steps']} adaptation steps: `metasr adapt` takes {info['adapt_steps']} when "
           "`--steps` is not given."] if info.get("adapt_steps") is not None else []),
        f"* sha256 `{info['sha256']}`.",
        "",
        "## Lineage",
        "",
        f"* Start: {lin['start']}. Nothing here descends from the official MZSR weights or any third-party weights.",
    ]
    if lin.get("parent"):
        par = lin["parent"]
        lines.append(f"* Parent `{par['name']}`: recipe `recipes/{par['recipe']}.yaml` from {par['start']}, code at "
                     f"commit(s) {', '.join('`' + c[:10] + '`' for c in par['commits'])}, "
                     f"{_hours(par['train_seconds'])} of training (see `{par['name']}.md`).")
    lines += [
        f"* Recipe: `recipes/{lin['recipe']}.yaml` (`--threads {'/'.join(map(str, lin['threads'])) or 1}`), code at "
        f"commit(s) {', '.join('`' + c[:10] + '`' for c in lin['commits'])}; resumed "
        f"{max(0, len(lin['sessions']) - 1)} time(s) (a resume continues exactly).",
        *_stage_lines(lin),
        f"* Training wall time: {_hours(lin['train_seconds'])} on {', '.join(lin['hardware'])}, "
        f"{'/'.join(map(str, lin['threads']))} thread(s), "
        f"{'/'.join(sorted({st.get('precision', 'fp32') for st in lin['stages'].values()})) or 'fp32'}, "
        "no GPU (probes and evaluation not counted)"
        + (f"; {_hours(lin['train_seconds'] + lin['parent']['train_seconds'])} with the parent's." if lin.get("parent")
           else "."),
        f"* Data: {lin['data']['images']}.",
        "",
        "## Scores",
        "",
    ]
    if set5:
        mp = set5["mean_psnr"]
        ks = sorted((k for k in mp if k.isdigit()), key=int)
        lines += [
            f"Training-run evaluation on Set5 (`{set5['settings'].get('lr_dir') and 'official MZSR LR inputs' or 'synthesised LR'}`, "
            f"{set5['settings']['kernel']}), Y-PSNR (dB) after k steps:",
            "",
            "| bicubic | " + " | ".join(ks) + " |",
            "|---" * (len(ks) + 1) + "|",
            f"| {mp['bicubic']:.2f} | " + " | ".join(f"{mp[k]:.2f}" for k in ks) + " |",
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
    if photos:
        lines += ["Real-photo x2 benchmark (`benchmarks/real_photos.py`: web JPEG, camera blur + area + JPEG, clean "
                  "bicubic resize, blur + direct + noise; Y-PSNR gain over PIL bicubic, dB):", "",
                  "| set | cases | this model, no adaptation | `metasr adapt` default | worst default gain |",
                  "|---|---|---|---|---|"]
        for key, r in photos.items():
            lines.append(f"| {key} | {r['cases']} | {r.get('plain', float('nan')):+.2f} | "
                         f"{r.get('default', float('nan')):+.2f} | {r.get('default_worst', float('nan')):+.2f} |")
        lines.append("")
    if mlsr:
        cols = sorted({c for r in mlsr.values() for c in r["psnr"] if c.isdigit()}, key=int)
        lines += ["MLSR protocols (`benchmarks/mlsr_tables.py`; Table 3 = bicubic x2, Table 5 = one random 5x5 kernel "
                  "per image), Y-PSNR / SSIM after k adaptation steps:", "",
                  "| protocol / set | images | bicubic | " + " | ".join(f"{c} steps" for c in cols) + " |",
                  "|---|---|---|" + "---|" * len(cols)]
        for key, r in mlsr.items():
            p, s = r["psnr"], r["ssim"]
            cells = [f"{p[c]:.2f} / {s[c]:.4f}" if c in p else "–" for c in ["bicubic", *cols]]
            lines.append(f"| {key} | {r['images']} | " + " | ".join(cells) + " |")
        lines.append("")
    below = [f"{k} ({r['psnr']['10']:.2f} dB after 10 steps, bicubic {r['psnr']['bicubic']:.2f})"
             for k, r in t2.items() if r["psnr"]["10"] < r["psnr"]["bicubic"]]
    hours = cpu_seconds(lin)
    lines += [
        "## Limits",
        "",
        *([f"* Below bicubic even after 10 steps: {', '.join(below)}. The kernel lies outside the training "
           "distribution; the network's starting point sharpens too much there, and adaptation recovers only "
           "part of it."] if below else []),
        *(f"* {text}" for text in (limits or [])),
        f"* Trained for {hours / 3600:.1f} CPU-hours on 291 images"
        + ("; the paper's model saw DIV2K, 500k pretraining steps and 60k-100k second-order meta-iterations on a GPU."
           if arch == "mzsr" else "; the paper's networks were trained on DIV2K on GPUs."),
        *([kernel_range_line(lin["recipe_resolved"])] if arch == "mzsr" and "recipe_resolved" in lin else []),
        "* The training images (T91, BSDS300) carry their owners' research-use terms; the weights are released "
        "with the project's licence.",
    ]
    return "\n".join(lines) + "\n"


def _same_file_content(path: Path, state: dict, meta: dict) -> bool:
    """Whether ``path`` already holds ``state`` and ``meta``: re-packaging (e.g. to add scores) then keeps the
    file, whose bytes would otherwise change (safetensors writes its metadata in no fixed order)."""
    if not path.is_file():
        return False
    same_tensors = tensor_fingerprint(read_weights(path)) == tensor_fingerprint(state)
    old_meta = read_metadata(path)
    return same_tensors and json.loads(json.dumps(meta)) == {k: old_meta.get(k) for k in meta}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--name", required=True)
    ap.add_argument("--description", required=True)
    ap.add_argument("--parent", default=None,
                    help="bundled weights the run started from (its model.weights file must hold exactly them)")
    ap.add_argument("--table2", type=Path, default=None, help="folder of benchmarks/table2.py cells")
    ap.add_argument("--mlsr-tables", type=Path, nargs="+", default=[],
                    help="benchmarks/mlsr_tables.py summaries (mlsr_tables.json) to take this model's rows from")
    ap.add_argument("--mlsr-model", default=None, choices=("idn", "idn-ml"), help="this model's key in --mlsr-tables")
    ap.add_argument("--limit", dest="limits", action="append", default=[], help="a line for the card's Limits")
    ap.add_argument("--photo-results", type=Path, nargs="+", default=[],
                    help="benchmarks/real_photos.py summaries (SET_summary.json) whose rows were measured with "
                         "these weights as the photo path's network")
    ap.add_argument("--photo-column", default="photo_0", help="this model's no-adaptation column in --photo-results")
    ap.add_argument("--adapt-steps", type=int, default=None,
                    help="the adaptation steps these weights are meant for (the command line's default --steps)")
    ap.add_argument("--preferred", action="store_true",
                    help="make these the default bundled weights of their architecture, scale and subsampling")
    ap.add_argument("--back-projection", type=int, default=None, metavar="N",
                    help="back-projection iterations (SPEC §7) that finish these weights' SR with a given kernel: "
                         "MetaSR's default for them, like --adapt-steps")
    ap.add_argument("--not-blind", action="store_true",
                    help="unfit for blind mode (a poor judge of kernels before adaptation): --kernel estimate and "
                         "estimate_kernel() use other bundled weights, and adapt with these")
    ap.add_argument("--dest", type=Path, default=WEIGHTS_DIR)
    args = ap.parse_args(argv)
    if args.mlsr_tables and args.mlsr_model is None:
        raise SystemExit("--mlsr-tables needs --mlsr-model idn|idn-ml (which row is this model's)")
    run = args.run
    weights = run / "meta_trained.pth"
    if not weights.is_file():
        raise SystemExit(f"{weights} not found: the run has not finished")
    own = read_metadata(weights)
    missing = [k for k in ("arch", "arch_kwargs", "scale", "schedule", "loss") if k not in own]
    if missing:
        raise SystemExit(f"{weights}: its metadata lacks {', '.join(missing)}; only files written by metasr train "
                         "(which records them) can be packaged")
    lin = lineage(run, args.parent, args.dest)
    recipe = lin["recipe_resolved"]
    state = read_weights(weights)
    commit = lin["commits"][-1] if lin["commits"] else None
    meta = {"arch": own["arch"], "arch_kwargs": own["arch_kwargs"], "scale": float(own["scale"]),
            "ds_method": trained_ds_method(recipe), "schedule": own["schedule"], "loss": own["loss"],
            "adapt_params": own.get("adapt_params"), "recipe": lin["recipe"], "commit": commit, "name": args.name}
    if args.adapt_steps is not None:
        if args.adapt_steps < 0:
            raise SystemExit(f"--adapt-steps {args.adapt_steps}: give a step count >= 0")
        meta["adapt_steps"] = int(args.adapt_steps)
    if trained_on_photos(recipe):
        meta["degradation"] = {"family": "photo", **PhotoDegradations.from_dict(recipe["data"].get("photo")).to_dict()}
    args.dest.mkdir(parents=True, exist_ok=True)
    out = args.dest / f"{args.name}.safetensors"
    if _same_file_content(out, state, meta):
        print(f"{out}: same tensors and metadata already there; kept (its sha256 stays)")
    else:
        save_weights(state, out, **meta)
    sha = hashlib.sha256(out.read_bytes()).hexdigest()
    set5 = json.loads((run / "eval.json").read_text())["meta_trained"] if (run / "eval.json").is_file() else None
    metrics = {}
    if set5:
        metrics["train_eval"] = {"kernel": set5["settings"]["kernel"], "lr_dir": portable_path(set5["settings"]["lr_dir"]),
                                 "mean_psnr": {k: round(v, 4) for k, v in set5["mean_psnr"].items()}}
    t2 = table2_rows(args.table2, meta["ds_method"])
    if t2:
        metrics["table2"] = t2
    mlsr = mlsr_rows(args.mlsr_tables, args.mlsr_model, tensor_fingerprint(state)) if args.mlsr_tables else {}
    if mlsr:
        metrics["mlsr_tables"] = mlsr
    photos = {}
    for f in args.photo_results:
        summ = json.loads(f.read_text())
        g = summ["gain_over_bicubic"]
        if summ.get("photo_weights", {}).get("fingerprint") != tensor_fingerprint(state):
            print(f"{f}: left out: measured with other photo weights ({summ.get('photo_weights')})")
            continue
        name = f.stem.replace("_summary", "")
        if f.parent.name not in ("real_photos", name):  # a split written with --out (e.g. bsd100_51-74/)
            name = f.parent.name
        photos[name] = {
            "cases": g["default"]["cases"], "plain": g.get(args.photo_column, {}).get("mean"),
            "default": g["default"]["mean"], "default_worst": g["default"]["worst"], "source": portable_path(f)}
    if photos:
        metrics["real_photos"] = photos
    lin_small = {k: v for k, v in lin.items() if k != "recipe_resolved"}
    info = {"name": args.name, "arch": meta["arch"], "filename": out.name, "scale": meta["scale"],
            "ds_method": meta["ds_method"], "schedule": meta["schedule"], "description": args.description,
            "loss": meta["loss"], "sha256": sha, "lineage": lin_small, "metrics": metrics}
    if "degradation" in meta:
        info["degradation"] = meta["degradation"]
    if "adapt_steps" in meta:
        info["adapt_steps"] = meta["adapt_steps"]
    if args.preferred:
        info["preferred"] = True
    if args.not_blind:
        info["blind"] = False
    if args.back_projection is not None:
        if args.back_projection < 0:
            raise SystemExit(f"--back-projection {args.back_projection}: give a number of iterations >= 0")
        info["back_projection"] = int(args.back_projection)
    (args.dest / f"{args.name}.json").write_text(json.dumps(info, indent=2) + "\n")
    card_info = {**meta, "sha256": sha, "params": sum(v.numel() for v in state.values()), "bytes": out.stat().st_size}
    card = model_card(args.name, args.description, card_info, lin, set5, t2, mlsr, args.limits, photos)
    (args.dest / f"{args.name}.md").write_text(card)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB), {args.name}.json and {args.name}.md in {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
