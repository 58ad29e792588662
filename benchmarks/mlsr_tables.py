"""MLSR's Table 3 and Table 5 protocols (Park et al., ECCV 2020) at CPU scale, resumable per cell.

    python benchmarks/mlsr_tables.py --limit 1 --weights-naive random --weights-ml random --zssr-max-iters 20
    python benchmarks/mlsr_tables.py --protocols table3 --limits bsd100=20 urban100=10 --threads 1
    python benchmarks/mlsr_tables.py --protocols table5 --table5-sets set5 --threads 1
    python benchmarks/mlsr_tables.py --weights-naive idn_x2_bicubic --weights-ml idn_x2_mlsr   # bundled names

* **Table 3** (bicubic x2): for every image of Set5, Set14, BSD100 and Urban100 the LR image is the MATLAB-bicubic
  downscale of the HR (uint8). Two networks are adapted with the same self-supervised steps (MLSR Algorithm 2:
  plain SGD on ``L2(f(LR↓), LR)`` with the son ``LR↓`` the LR's own bicubic downscale, learning rate α):
  ``idn``, the pretrained IDN adapted naively, and ``idn-ml``, the MLSR meta-trained IDN. Y-PSNR and SSIM
  (MATLAB conventions, shave 2) after 0, 5, 20 and 100 steps (``--steps``), next to bicubic interpolation. On
  the ``--plot-set`` (Urban100) the networks are also scored at ``--curve-steps`` for the paper's Fig. 3 plot.
* **Table 5** (non-bicubic): each image gets its own random anisotropic Gaussian kernel (the meta-training
  sampler of ``data.kernel=random``: ``--kernel-size`` 5x5, variances up to ``--k1-factor``·scale, then
  ``--ds-method`` subsampling), drawn from ``--kernel-seed`` and the image's set and name, so every run and
  every model sees the same kernels. ZSSR (its 'kernel' preset, given the true kernel; on ``--zssr-sets`` only:
  about 20 min an image on one CPU thread) against ``idn-ml`` after 0/5/20/100 steps with the true kernel's son
  (``--weights-ml-kernels``: an IDN-ML meta-trained on random kernels, default ``--weights-ml``).
  The paper's kernels (ZSSR's) are not available, so the absolute numbers are not comparable with its table.

Every (protocol, set, model, image) cell is written to ``OUT/cells/PROTOCOL/SET/MODEL/IMAGE.json`` when done and
skipped on the next run when it exists with the same identity (weights' sha256, α, loss, steps, kernel, ZSSR
settings): a killed run resumes, changed weights recompute (``--redo`` recomputes everything). Two processes may
work on different protocols or sets at once. ``OUT/mlsr_tables.md`` / ``.json`` gather every cell present (the
images common to the models of a row; means over them) beside the paper's numbers, and ``OUT/fig3_SET.png``
plots PSNR against steps for IDN and IDN-ML. A set whose folder is missing is skipped with a message.

Cost at one CPU thread (IDN, 3.8 MFLOP per LR pixel per step; ~110 GFLOP/s): a step on the son of an Urban100
image (~256x192) takes ~1.5 s, so 100 steps are ~3 min an image and model (Urban100 in full: ~10 h for the
two models); BSD100 ~35 s an image and model (~2 h in full); Set5 + Set14 ~35 min. Use ``--limit``/``--limits``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from _record import portable_path, result_record  # noqa: E402  (benchmarks/_record.py)

DATA = ROOT.parent / "shared" / "data"
SETS = ("set5", "set14", "bsd100", "urban100")
PROTOCOLS = ("table3", "table5")
IDN_MODELS = ("idn", "idn-ml")
#: MLSR's α = 1e-5 for MSE on 0-255 values, as SGD on [0, 1] images: 1e-5·255² (recipes/mlsr_idn_x2_cpu.yaml)
MLSR_ALPHA = round(1e-5 * 255.0**2, 12)  # 0.65025 exactly as the recipes spell it (a cell identity compares it)
LABELS = {"idn": "IDN (naive)", "idn-ml": "IDN-ML", "zssr": "ZSSR", "bicubic": "bicubic"}

#: MLSR Table 3, x2 bicubic, (PSNR, SSIM): the DIV2K-trained IDN without adaptation, IDN-ML after k steps
PAPER_T3 = {
    ("idn", 0): {"bsd100": (32.11, 0.8994), "urban100": (31.95, 0.9269)},
    ("idn-ml", 5): {"bsd100": (32.17, 0.8996), "urban100": (32.06, 0.9275)},
    ("idn-ml", 20): {"bsd100": (32.17, 0.8996), "urban100": (32.17, 0.9280)},
    ("idn-ml", 100): {"bsd100": (32.08, 0.8988), "urban100": (32.23, 0.9286)},
}
#: MLSR Table 5, x2, ZSSR's non-bicubic kernels, PSNR
PAPER_T5 = {
    ("zssr", None): {"set5": 29.68, "set14": 27.76, "bsd100": 27.53, "urban100": 25.02},
    ("idn-ml", 0): {"set5": 28.10, "set14": 26.22, "bsd100": 26.19, "urban100": 23.48},
    ("idn-ml", 5): {"set5": 29.17, "set14": 27.08, "bsd100": 26.82, "urban100": 24.36},
    ("idn-ml", 20): {"set5": 29.86, "set14": 27.67, "bsd100": 27.32, "urban100": 24.96},
    ("idn-ml", 100): {"set5": 30.41, "set14": 28.12, "bsd100": 27.75, "urban100": 25.42},
}


# ---------------------------------------------------------------------------------------------------
# weights
# ---------------------------------------------------------------------------------------------------
def _default_weights(bundled: str, run_file: Path) -> str:
    """The bundled weights ``bundled`` when installed, else the training run's output file."""
    from metasr_adapter.io.pretrained import BUNDLED_WEIGHTS

    return bundled if bundled in BUNDLED_WEIGHTS else str(run_file)


def load_network(spec: str, arch: str, scale: int) -> tuple[torch.nn.Module, str, dict[str, Any]]:
    """(network in eval mode, fingerprint, metadata) of ``spec``: a bundled name, a file, or 'random'. The
    fingerprint is that of the tensors (``io.weights.tensor_fingerprint``), so a run's file and its bundled
    copy share their cells."""
    from metasr_adapter.adapters import get_model, scale_kwargs
    from metasr_adapter.io.pretrained import BUNDLED_WEIGHTS, load_model
    from metasr_adapter.io.weights import read_metadata, tensor_fingerprint

    if spec == "random":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            net = get_model(arch, **scale_kwargs(arch, scale))
        return net.eval(), f"random:{arch}:x{scale}:seed0", {}
    if spec in BUNDLED_WEIGHTS:
        info = BUNDLED_WEIGHTS[spec]
        net = load_model(info.arch, spec).eval()  # sha256-checked on load
        return net, tensor_fingerprint(net), read_metadata(info.path)
    path = Path(spec)
    if not path.is_file():
        raise SystemExit(f"weights {spec!r}: no such file and no bundled weights of that name. Train them first "
                         "(recipes/idn_x2_cpu.yaml, recipes/mlsr_idn_x2_cpu.yaml), or pass 'random' for a smoke test")
    meta = read_metadata(path)
    net = load_model(None if meta.get("arch") else arch, path, arch_defaults=scale_kwargs(arch, scale))
    return net.eval(), tensor_fingerprint(net), meta


# ---------------------------------------------------------------------------------------------------
# kernels and images
# ---------------------------------------------------------------------------------------------------
def image_kernel(set_name: str, image: str, args: argparse.Namespace) -> np.ndarray:
    """Table 5: the random kernel of one image, a pure function of (seed, set, image name)."""
    from metasr_adapter.ops.kernels import random_kernel

    rng = np.random.RandomState(np.random.MT19937(np.random.SeedSequence(
        [int(args.kernel_seed), zlib.crc32(f"{set_name}/{image}".encode())])))
    return random_kernel(args.k1_factor * args.scale, args.kernel_size, rng)


def degradation(protocol: str, set_name: str, image: str, args: argparse.Namespace):
    from metasr_adapter.ops.kernels import KernelSpec, resolve_kernel

    if protocol == "table3":
        return resolve_kernel("bicubic")
    return KernelSpec(kernel=image_kernel(set_name, image, args), ds_method=args.ds_method, name=f"random:{image}")


def load_pair(path: Path, spec, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """(HR modcropped, uint8 LR synthesised with ``spec``), as ``metasr eval`` makes them."""
    from metasr_adapter.pipelines.evaluate import synthesize_lr
    from metasr_adapter.ops.imageio import modcrop, read_image

    gt = modcrop(read_image(path), scale)
    if gt.ndim == 3 and gt.shape[2] == 4:
        gt = gt[:, :, :3]
    return gt, synthesize_lr(gt, spec, scale)


def _score(sr: np.ndarray, gt: np.ndarray, crop: int) -> tuple[float, float]:
    from metasr_adapter.ops.metrics import psnr, ssim

    return float(psnr(sr, gt, crop_border=crop)), float(ssim(sr, gt, crop_border=crop))


def bicubic_score(lr: np.ndarray, gt: np.ndarray, scale: int) -> tuple[float, float]:
    from metasr_adapter.ops.degrade import imresize
    from metasr_adapter.ops.imageio import to_tensor
    from metasr_adapter.ops.metrics import to_uint8

    x, _, _ = to_tensor(lr, channels=lr.shape[2] if lr.ndim == 3 else 1)
    with torch.no_grad():
        bic = to_uint8(imresize(x, float(scale), output_shape=gt.shape[:2]).clamp(0, 1))
    return _score(bic[..., 0] if gt.ndim == 2 else bic, gt, scale)


# ---------------------------------------------------------------------------------------------------
# cells
# ---------------------------------------------------------------------------------------------------
def run_idn_cell(msr, gt: np.ndarray, lr: np.ndarray, spec, steps: list[int], alpha: float, scale: int) -> dict:
    """Adapt once, scoring the SR after each count in ``steps``."""
    session = msr.start(lr, spec, lr=alpha)
    psnr, ssim, losses = {}, {}, []
    for k in range(steps[-1] + 1):
        if k in steps:
            psnr[str(k)], ssim[str(k)] = _score(session.result(), gt, scale)
        if k < steps[-1]:
            losses.append(session.step().loss)
    return {"psnr": psnr, "ssim": ssim, "adapt_losses": losses}


def run_zssr_cell(gt: np.ndarray, lr: np.ndarray, spec, config, scale: int) -> dict:
    from metasr_adapter.zssr.core import zssr_super_resolve

    p, s = _score(zssr_super_resolve(lr, spec, scale, config), gt, scale)
    return {"psnr": {"zssr": p}, "ssim": {"zssr": s}}


def cell_path(out: Path, protocol: str, set_name: str, model: str, image: str) -> Path:
    return out / "cells" / protocol / set_name / model / f"{image}.json"


def cell_done(path: Path, identity: dict, redo: bool) -> bool:
    if redo or not path.is_file():
        return False
    try:
        cell = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return cell.get("identity") == identity


# ---------------------------------------------------------------------------------------------------
# aggregation
# ---------------------------------------------------------------------------------------------------
def read_cells(out: Path, identities: dict[tuple[str, str], dict]) -> dict[tuple[str, str, str], dict[str, dict]]:
    """(protocol, set, model) -> {image: cell} for the cells whose identity matches one of ``identities``;
    cells of other models (not named in this run) are left out, whatever they hold."""
    cells: dict[tuple[str, str, str], dict[str, dict]] = {}
    for f in sorted((out / "cells").glob("*/*/*/*.json")):
        protocol, set_name, model = f.parts[-4], f.parts[-3], f.parts[-2]
        try:
            cell = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        want = identities.get((protocol, model))
        have = cell.get("identity", {})
        if want is None or any(have.get(k) != v for k, v in want.items()):
            continue  # a model this run does not report, or made with other weights or settings
        cells.setdefault((protocol, set_name, model), {})[f.stem] = cell
    return cells


def summarise(cells: dict[tuple[str, str, str], dict[str, dict]]) -> dict[str, Any]:
    """Per (protocol, set): the images every model of that row has, and each model's mean PSNR/SSIM."""
    summary: dict[str, Any] = {}
    for protocol in PROTOCOLS:
        for set_name in SETS:
            models = {m: c for (p, s, m), c in cells.items() if p == protocol and s == set_name}
            if not models:
                continue
            common = sorted(set.intersection(*(set(c) for c in models.values())))
            entry: dict[str, Any] = {"images": common, "models": {}}
            for model, by_image in models.items():
                rows = [by_image[i] for i in common]
                cols = sorted(set.intersection(*(set(r["psnr"]) for r in rows)), key=_col_key) if rows else []
                entry["models"][model] = {
                    "mean_psnr": {c: float(np.mean([r["psnr"][c] for r in rows])) for c in cols},
                    "mean_ssim": {c: float(np.mean([r["ssim"][c] for r in rows])) for c in cols},
                    "seconds": float(sum(r.get("seconds", 0.0) for r in rows)),
                    "weights": rows[0]["identity"].get("weights") if rows else None,
                }
            summary[f"{protocol}/{set_name}"] = entry
    return summary


def _col_key(c: str) -> tuple[int, int | str]:
    return (0, int(c)) if c.isdigit() else (1, c)


def _cell(entry: dict | None, model: str, col: str, ssim: bool = True) -> str:
    if entry is None or model not in entry["models"] or col not in entry["models"][model]["mean_psnr"]:
        return "–"
    m = entry["models"][model]
    return f"{m['mean_psnr'][col]:.2f} / {m['mean_ssim'][col]:.4f}" if ssim else f"{m['mean_psnr'][col]:.2f}"


def markdown(summary: dict[str, Any], steps: list[int], settings: dict[str, Any]) -> str:
    lines = ["# MLSR Tables 3 and 5 at CPU scale: Y-PSNR / SSIM, x2", "",
             f"Weights: IDN `{settings['weights_naive']}`, IDN-ML `{settings['weights_ml']}`, Table 5 IDN-ML "
             f"`{settings['weights_ml_kernels']}`. Adaptation: plain SGD, α = {settings['alpha']:g} on [0, 1] images "
             f"(the paper's 1e-5 on 0-255), {settings['loss']} loss, the son made with the LR's own degradation. "
             "Y channel, shave 2, MATLAB conventions. `n` = images common to the row's models (the first N by name "
             "when a subset was run). Paper = MLSR (DIV2K-trained networks; Table 5 with ZSSR's kernels, not these).", ""]
    for protocol, title in (("table3", "Table 3: bicubic x2"), ("table5", "Table 5: random 5x5 kernels, one per image")):
        entries = {s: summary.get(f"{protocol}/{s}") for s in SETS}
        present = [s for s in SETS if entries[s] is not None]
        if not present:
            continue
        lines += [f"## {title}", "", "| model | steps | " + " | ".join(f"{s} (n={len(entries[s]['images'])})"
                                                                       for s in present) + " | paper |",
                  "|---|---|" + "---|" * len(present) + "---|"]
        rows: list[tuple[str, str]] = [("bicubic", "bicubic")]
        models = ("idn", "idn-ml") if protocol == "table3" else ("zssr", "idn", "idn-ml")
        for model in models:
            if any(model in entries[s]["models"] for s in present):
                rows += [(model, "zssr")] if model == "zssr" else [(model, str(k)) for k in steps]
        for model, col in rows:
            if model == "bicubic":  # every cell also scores bicubic; a row's models share their images
                cells = [_cell(entries[s], next(iter(entries[s]["models"])), col) for s in present]
            else:
                cells = [_cell(entries[s], model, col) for s in present]
            lines.append(f"| {LABELS[model]} | {'–' if col in ('bicubic', 'zssr') else col} | " + " | ".join(cells)
                         + f" | {_paper(protocol, model, col)} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def _paper(protocol: str, model: str, col: str) -> str:
    if protocol == "table3":
        ref = PAPER_T3.get((model, int(col))) if col.isdigit() else None
        return ", ".join(f"{s} {p:.2f} / {q:.4f}" for s, (p, q) in ref.items()) if ref else ""
    key = (model, None) if col == "zssr" else (model, int(col)) if col.isdigit() else None
    ref = PAPER_T5.get(key) if key else None
    return ", ".join(f"{s} {p:.2f}" for s, p in ref.items()) if ref else ""


def plot(cells: dict[tuple[str, str, str], dict[str, dict]], set_name: str, path: Path,
         protocol: str = "table3") -> Path | None:
    """Mean PSNR against steps for IDN and IDN-ML on ``set_name`` (the images every drawn model has): the
    paper's Fig. 3 for ``table3``; for ``table5`` ZSSR (one number an image) is the reference line."""
    from metasr_adapter.training.plots import psnr_vs_steps

    models = {m: cells.get((protocol, set_name, m)) for m in (*IDN_MODELS, "zssr")}
    models = {m: c for m, c in models.items() if c}
    if not any(m in models for m in IDN_MODELS):
        return None
    common = sorted(set.intersection(*(set(c) for c in models.values())))
    if not common:
        return None
    curves, baseline, label = {}, None, "bicubic"
    for m, by_image in models.items():
        rows = [by_image[i] for i in common]
        if m == "zssr":
            baseline, label = float(np.mean([r["psnr"]["zssr"] for r in rows])), "ZSSR"
            continue
        cols = set.intersection(*(set(r["psnr"]) for r in rows))
        curves[LABELS[m]] = {int(c): float(np.mean([r["psnr"][c] for r in rows])) for c in cols if c.isdigit()}
        if "bicubic" in cols and "zssr" not in models:
            baseline = float(np.mean([r["psnr"]["bicubic"] for r in rows]))
    what = "bicubic x2" if protocol == "table3" else "a random 5x5 kernel per image, direct x2"
    title = f"{'Table 3' if protocol == 'table3' else 'Table 5'} protocol, {set_name} ({len(common)} images), {what}"
    return psnr_vs_steps(curves, path, title=title, baseline=baseline, baseline_label=label)


# ---------------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------------
def _set_limits(items: list[str]) -> dict[str, int]:
    out = {}
    for item in items:
        name, _, n = item.partition("=")
        if name.lower() not in SETS or not n.isdigit() or int(n) < 1:
            raise SystemExit(f"--limits {item!r}: give NAME=N with NAME one of {', '.join(SETS)} and N >= 1")
        out[name.lower()] = int(n)
    return out


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--protocols", nargs="+", default=list(PROTOCOLS), choices=PROTOCOLS)
    for s in SETS:
        ap.add_argument(f"--{s}", default=str(DATA / s), metavar="DIR", help=f"HR images of {s} (default %(default)s)")
    ap.add_argument("--table3-sets", nargs="+", default=list(SETS), choices=SETS)
    ap.add_argument("--table5-sets", nargs="+", default=list(SETS), choices=SETS)
    ap.add_argument("--table3-models", nargs="+", default=list(IDN_MODELS), choices=IDN_MODELS,
                    help="networks of Table 3 (default both; one alone lets its cells be computed while the "
                         "other network is still training)")
    ap.add_argument("--table5-models", nargs="+", default=["zssr", "idn-ml"], choices=("zssr", "idn", "idn-ml"),
                    help="Table 5 rows (the paper: ZSSR and IDN-ML; add idn for the naive network)")
    ap.add_argument("--zssr-sets", nargs="+", default=["set5"], choices=SETS + ("all",),
                    help="sets ZSSR runs on (about 20 min an image at 1 thread; default: Set5 only)")
    ap.add_argument("--weights-naive", default=None,
                    help="pretrained IDN: bundled name, path or 'random' (default: idn_x2_bicubic if bundled, "
                         "else runs/idn_x2_cpu/start_weights.pth)")
    ap.add_argument("--weights-ml", default=None,
                    help="MLSR IDN: bundled name, path or 'random' (default: idn_x2_mlsr if bundled, else "
                         "runs/mlsr_idn_x2_cpu/meta_trained.pth)")
    ap.add_argument("--weights-ml-kernels", default=None,
                    help="Table 5's IDN-ML, meta-trained on random kernels (default: --weights-ml)")
    ap.add_argument("--arch", default="idn", help="architecture of weights without metadata (default idn)")
    ap.add_argument("--scale", type=int, default=2, choices=(2,), help="x2 (the paper's tables)")
    ap.add_argument("--steps", type=int, nargs="+", default=[0, 5, 20, 100])
    ap.add_argument("--curve-steps", type=int, nargs="*", default=[0, 1, 2, 3, 5, 10, 20, 30, 50, 100],
                    help="extra step counts scored on --plot-set for the PSNR-vs-steps figure")
    ap.add_argument("--plot-set", default="urban100", choices=SETS)
    ap.add_argument("--lr", type=float, default=None,
                    help=f"adaptation α on [0, 1] (default: the IDN-ML weights' own, else {MLSR_ALPHA:g})")
    ap.add_argument("--loss", default="l2", choices=("l1", "l2"), help="adaptation loss (MLSR: l2)")
    ap.add_argument("--kernel-seed", type=int, default=0)
    ap.add_argument("--kernel-size", type=int, default=5, help="Table 5 kernels: the paper's 5x5")
    ap.add_argument("--k1-factor", type=float, default=2.5, help="largest kernel variance = factor x scale")
    ap.add_argument("--ds-method", default="direct", choices=("direct", "bicubic"))
    ap.add_argument("--zssr-max-iters", type=int, default=None, help="ZSSR iterations (default: the preset's 3000)")
    ap.add_argument("--limit", type=int, default=None, help="only the first N images (by name) of each set")
    ap.add_argument("--limits", nargs="+", default=[], metavar="SET=N", help="per-set limits, e.g. urban100=10")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "mlsr"))
    ap.add_argument("--redo", action="store_true", help="recompute cells that already exist")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    record = result_record(argv, script=__file__)
    steps = sorted(set(args.steps))
    if not steps or steps[0] < 0:
        raise SystemExit(f"--steps {args.steps}: give step counts >= 0")
    limits = _set_limits(args.limits)
    out = Path(args.out)

    # which (protocol, set) pairs have data
    dirs = {s: Path(getattr(args, s)) for s in SETS}
    wanted = {"table3": args.table3_sets, "table5": args.table5_sets}
    jobs = [(p, s) for p in args.protocols for s in wanted[p]]
    missing = sorted({s for _, s in jobs if not dirs[s].is_dir()})
    for s in missing:
        print(f"skipping {s}: {dirs[s]} not found (give --{s} DIR; ../shared/data exists only on the project's "
              "machines)")
    jobs = [(p, s) for p, s in jobs if s not in missing]
    if not jobs:
        print("no test images found: nothing to do")
        return 0

    from metasr_adapter import MetaSR
    from metasr_adapter.atomic import atomic_write_text
    from metasr_adapter.ops.imageio import list_images
    from metasr_adapter.zssr.core import ZSSRConfig

    w_naive = args.weights_naive or _default_weights("idn_x2_bicubic", ROOT / "runs" / "idn_x2_cpu" / "start_weights.pth")
    w_ml = args.weights_ml or _default_weights("idn_x2_mlsr", ROOT / "runs" / "mlsr_idn_x2_cpu" / "meta_trained.pth")
    w_ml_k = args.weights_ml_kernels or _default_weights("idn_x2_mlsr_direct", Path(w_ml))
    weights = {("table3", "idn"): w_naive, ("table3", "idn-ml"): w_ml, ("table5", "idn"): w_naive,
               ("table5", "idn-ml"): w_ml_k}
    models_of = {"table3": list(args.table3_models), "table5": list(args.table5_models)}
    needed = {(p, m) for p, _ in jobs for m in models_of[p] if m != "zssr"}
    # the report covers the named models of both protocols (with the named weights), not only this run's jobs
    reported = needed | {(p, m) for p in PROTOCOLS for m in models_of[p] if m != "zssr"}
    nets: dict[str, tuple[torch.nn.Module, str, dict]] = {}
    for key in sorted(reported):
        spec = weights[key]
        if spec in nets:
            continue
        try:
            nets[spec] = load_network(spec, args.arch, args.scale)
        except SystemExit as err:
            if key in needed:
                raise
            print(f"{key[0]} {key[1]}: left out of the report ({err})")
    reported = {k for k in reported if weights[k] in nets}
    alpha = args.lr
    if alpha is None:
        ml_meta = nets.get(w_ml, (None, None, {}))[2]
        sched = ml_meta.get("schedule")
        alpha = float(sched) if isinstance(sched, (int, float)) and not isinstance(sched, bool) else MLSR_ALPHA
    zcfg = ZSSRConfig.preset("kernel", kernel_shift=False)
    if args.zssr_max_iters:
        zcfg = zcfg.replace(max_iters=args.zssr_max_iters)
    zssr_sets = set(SETS) if "all" in args.zssr_sets else set(args.zssr_sets)

    kernel_id = {"seed": args.kernel_seed, "size": args.kernel_size, "k1_factor": args.k1_factor,
                 "ds_method": args.ds_method}
    identities: dict[tuple[str, str], dict] = {}
    for p in PROTOCOLS:
        for m in ("idn", "idn-ml"):
            if (p, m) in reported:
                identities[(p, m)] = {"weights": nets[weights[(p, m)]][1], "alpha": alpha, "loss": args.loss,
                                      "scale": args.scale, **({"kernels": kernel_id} if p == "table5" else {})}
    if "zssr" in models_of["table5"]:
        identities[("table5", "zssr")] = {"zssr": zcfg.to_dict(), "scale": args.scale, "kernels": kernel_id}
    identities = {k: json.loads(json.dumps(v)) for k, v in identities.items()}

    wrappers: dict[str, MetaSR] = {}
    print(f"α = {alpha:g} ({args.loss}); IDN {w_naive}; IDN-ML {w_ml}; Table 5 IDN-ML {w_ml_k}; "
          f"threads {torch.get_num_threads()}")
    for protocol, set_name in jobs:
        images = list_images(dirs[set_name])
        n = limits.get(set_name, args.limit)
        images = images[:n] if n else images
        for model in models_of[protocol]:
            if model == "zssr" and set_name not in zssr_sets:
                continue
            score_steps = sorted(set(steps) | (set(args.curve_steps) if protocol == "table3"
                                               and set_name == args.plot_set else set()))
            identity = dict(identities[(protocol, model)])
            if model != "zssr":
                identity["steps"] = score_steps
            t_cell, done_now = time.perf_counter(), 0
            from tqdm.auto import tqdm

            for path in tqdm(images, desc=f"{protocol} {set_name} {model}", unit="img", disable=args.quiet):
                cpath = cell_path(out, protocol, set_name, model, path.stem)
                spec = degradation(protocol, set_name, path.stem, args)
                ident = {**identity, **({"kernel": spec.kernel.tolist()} if protocol == "table5" else {})}
                ident = json.loads(json.dumps(ident))  # as it reads back from the cell file (tuples -> lists)
                if cell_done(cpath, ident, args.redo):
                    continue
                gt, lr = load_pair(path, spec, args.scale)
                t0 = time.perf_counter()
                if model == "zssr":
                    cell = run_zssr_cell(gt, lr, spec, zcfg, args.scale)
                else:
                    w = weights[(protocol, model)]
                    if w not in wrappers:
                        net = nets[w][0]
                        wrappers[w] = MetaSR(net, args.scale, schedule=alpha, loss=args.loss)
                    cell = run_idn_cell(wrappers[w], gt, lr, spec, score_steps, alpha, args.scale)
                cell["psnr"]["bicubic"], cell["ssim"]["bicubic"] = bicubic_score(lr, gt, args.scale)
                cell.update({"image": path.name, "identity": ident, "seconds": time.perf_counter() - t0,
                             "threads": torch.get_num_threads(), "lr_shape": list(lr.shape[:2]), "record": record})
                atomic_write_text(cpath, json.dumps(cell) + "\n")
                done_now += 1
            if done_now:
                print(f"{protocol} {set_name} {model}: {done_now} image(s) in {time.perf_counter() - t_cell:.0f} s")

    # gather everything present for this run's models
    cells = read_cells(out, identities)
    summary = summarise(cells)
    settings = {"weights_naive": portable_path(w_naive), "weights_ml": portable_path(w_ml),
                "weights_ml_kernels": portable_path(w_ml_k), "alpha": alpha,
                "loss": args.loss, "steps": steps, "kernels": kernel_id, "zssr": zcfg.to_dict()}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "mlsr_tables.json", json.dumps({"settings": settings, "results": summary,
                                                            "paper_table3": {f"{m}/{k}": v for (m, k), v in PAPER_T3.items()},
                                                            "paper_table5": {f"{m}/{k}": v for (m, k), v in PAPER_T5.items()},
                                                            "record": record},
                                                           indent=2) + "\n")
    md = markdown(summary, steps, settings)
    atomic_write_text(out / "mlsr_tables.md", md)
    fig = plot(cells, args.plot_set, out / f"fig3_{args.plot_set}.png")
    fig5 = [plot(cells, set_name, out / f"table5_{set_name}.png", protocol="table5") for set_name in SETS
            if ("table5", set_name, "zssr") in cells]  # the sets where ZSSR, the paper's reference, ran
    print(md)
    figs = ", ".join(str(f) for f in [fig, *fig5] if f)
    print(f"wrote {out / 'mlsr_tables.md'}, {out / 'mlsr_tables.json'}" + (f", {figs}" if figs else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
