"""MZSR's Table 2 protocol (Soh et al., CVPR 2020) on any folders of HR images.

    python benchmarks/table2.py --sets set5=../shared/data/set5 --out benchmarks/results/table2
    python benchmarks/table2.py --sets bsd100=../shared/data/bsd100 urban100=../shared/data/urban100 --limit 20
    python benchmarks/table2.py --sets set5=../shared/data/set5 --weights-direct mzsr_x2_direct --threads 2
    python benchmarks/table2.py --sets set5=../shared/data/set5 --conv-algorithm winograd --out OUT   # Winograd

For every set and each of the paper's x2 kernels — g^d_0.2, g^d_2.0, g^d_ani (blur, then direct
subsampling) and g^b_1.3 (blur, then bicubic subsampling) — the LR image is synthesised from the HR
image with :func:`metasr_adapter.pipelines.evaluate.synthesize_lr` (uint8), then adapted with the test-time
schedule the weights were meta-trained for. Y-PSNR and SSIM (MATLAB conventions, shave 2) are scored
after 0, 1 and 10 steps, next to bicubic interpolation. The g^d kernels use the direct-subsampling
weights, g^b_1.3 the bicubic ones, as in the paper.

Each (set, kernel) cell is written to ``OUT/SET_KERNEL.json`` as soon as it is done and skipped when
it exists, so an interrupted run continues where it stopped (``--redo`` recomputes). ``OUT/table2.md``
and ``OUT/table2.json`` gather every cell present, beside the paper's MZSR(1) / MZSR(10) numbers; each cell
keeps the ``record`` (command, commit, CPU) of the run that measured it.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import portable_path, result_record  # noqa: E402  (benchmarks/_record.py)

#: the paper's Table 2, x2, Y-PSNR: MZSR after 1 and 10 steps
PAPER = {
    ("set5", "gd0.2"): (33.14, 33.74), ("bsd100", "gd0.2"): (28.74, 29.03), ("urban100", "gd0.2"): (26.24, 26.60),
    ("set5", "gd2.0"): (35.20, 36.05), ("bsd100", "gd2.0"): (30.58, 31.09), ("urban100", "gd2.0"): (28.23, 29.19),
    ("set5", "gdani"): (34.05, 34.78), ("bsd100", "gdani"): (28.82, 29.54), ("urban100", "gdani"): (26.51, 27.34),
    ("set5", "gb1.3"): (35.18, 36.64), ("bsd100", "gb1.3"): (29.02, 31.25), ("urban100", "gb1.3"): (28.27, 29.83),
}
KERNELS = ("gd0.2", "gd2.0", "gdani", "gb1.3")
STEPS = (0, 1, 10)


def _set_arg(text: str) -> tuple[str, Path]:
    if "=" in text:
        name, path = text.split("=", 1)
    else:
        path = text
        name = Path(text).name
    p = Path(path)
    if not p.is_dir():
        raise argparse.ArgumentTypeError(f"{path} is not a folder of HR images")
    return name.lower(), p


def run_cell(msr, gt_dir: Path, kernel: str, limit: int | None, progress: bool, back_projection: int = 0) -> dict:
    from metasr_adapter.pipelines.evaluate import evaluate_folder

    t0 = time.perf_counter()
    report = evaluate_folder(msr, gt_dir, kernel=kernel, steps=STEPS, include_bicubic=True, limit=limit,
                             progress=progress, back_projection=back_projection)
    out = report.to_dict()
    for key in ("gt_dir", "lr_dir"):  # folders as the repository sees them, not this machine's paths
        if out.get("settings", {}).get(key):
            out["settings"][key] = portable_path(out["settings"][key])
    out["seconds"] = time.perf_counter() - t0
    out["threads"] = torch.get_num_threads()
    return out


def stale_cell(cell: dict, weights: str, precision: str, back_projection: int,
               conv_algorithm: str = "direct") -> str | None:
    """Why an existing cell is not a measurement of this run's settings (None when it is): another weights file,
    precision, back-projection count or convolution algorithm. Such a cell is never kept silently beside this
    run's."""
    was = {"weights": cell.get("weights"), "precision": cell.get("precision", "fp32"),
           "back_projection": int(cell.get("settings", {}).get("back_projection") or 0),
           "conv_algorithm": cell.get("conv_algorithm", "direct")}
    now = {"weights": portable_path(weights), "precision": precision, "back_projection": int(back_projection),
           "conv_algorithm": conv_algorithm}
    differ = [f"{k} {was[k]!r} (this run: {now[k]!r})" for k in was if was[k] is not None and was[k] != now[k]]
    return ", ".join(differ) or None


def markdown(cells: dict[tuple[str, str], dict], weights: dict[str, str]) -> str:
    scales = sorted({float(c.get("scale", 2)) for c in cells.values()}) or [2.0]
    if len(scales) > 1:
        raise SystemExit(f"the cells in one --out folder have scales {scales}; give each scale its own --out")
    scale = scales[0]
    kernels = {kernel for _, kernel in cells}
    bps = sorted({int(c.get("settings", {}).get("back_projection") or 0) for c in cells.values()})
    bp_note = "" if bps == [0] else f"; back-projection after SR: {'/'.join(map(str, bps))} iterations (SPEC §7)"
    def named(key: str) -> str:  # the cells' own weights (an older cell may lack the field: this run's)
        files = sorted({str(c.get("weights") or weights[key]) for (_, k), c in cells.items()
                        if (k == "gb1.3") == (key == "bicubic")})
        return " / ".join(f"`{f}`" for f in files)

    used = ", ".join(f"{label} {named(key)}" for key, label, run in (
        ("direct", "g^d kernels", any(k != "gb1.3" for k in kernels)), ("bicubic", "g^b_1.3", "gb1.3" in kernels)) if run)
    lines = [
        f"# MZSR Table 2 protocol, x{scale:g}: Y-PSNR / SSIM",
        "",
        f"Weights: {used}{bp_note} (each cell's JSON names the "
        f"file it used). LR synthesised from HR (uint8); shave {scale:g}. Paper = MZSR's Table 2 (x2 only; trained "
        "on DIV2K with the full recipe). `images` < the set's size: a subset (the first N by name).",
        "",
        "| set | kernel | images | bicubic | 0 steps | 1 step | 10 steps | paper MZSR(1) | paper MZSR(10) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (name, kernel), c in sorted(cells.items(), key=lambda kv: (kv[0][0], KERNELS.index(kv[0][1]))):
        mp, ms = c["mean_psnr"], c["mean_ssim"]
        paper = PAPER.get((name, kernel)) if scale == 2 else None

        def cell(col: str) -> str:
            return f"{mp[col]:.2f} / {ms[col]:.4f}"

        lines.append(f"| {name} | {kernel} | {len(c['images'])} | {cell('bicubic')} | {cell('0')} | {cell('1')} | "
                     f"{cell('10')} | {f'{paper[0]:.2f}' if paper else '–'} | {f'{paper[1]:.2f}' if paper else '–'} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sets", nargs="+", type=_set_arg, required=True, metavar="NAME=DIR")
    ap.add_argument("--kernels", nargs="+", default=list(KERNELS), choices=KERNELS)
    ap.add_argument("--weights-direct", default=None,
                    help="bundled name or path (g^d kernels); default: the package's weights for a known g^d kernel")
    ap.add_argument("--weights-bicubic", default=None,
                    help="bundled name or path (g^b_1.3); default: the package's weights for a known g^b kernel")
    ap.add_argument("--schedule-direct", default=None, help="default: the weights' own (learned rates or a schedule)")
    ap.add_argument("--schedule-bicubic", default=None, help="default: the weights' own (learned rates or a schedule)")
    ap.add_argument("--limit", type=int, default=None, help="only the first N images of each set")
    ap.add_argument("--precision", default="fp32", choices=("fp32", "bf16"),
                    help="adaptation and SR precision (default fp32, the paper's; bf16: autocast)")
    ap.add_argument("--back-projection", type=int, default=0, metavar="N",
                    help="back-projection iterations after every SR with the true kernel (SPEC §7; default 0, the "
                         "official code's default and the paper's protocol)")
    ap.add_argument("--conv-algorithm", default="direct", choices=("direct", "winograd"),
                    help="MetaSR's conv_algorithm (default direct; winograd: the native Winograd kernels, fp32)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default="benchmarks/results/table2")
    ap.add_argument("--redo", action="store_true", help="recompute cells that already have a JSON file")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    args = ap.parse_args()
    from metasr_adapter.io.pretrained import default_weights

    # what `metasr adapt --kernel K` and load_pretrained() use for a known kernel of each subsampling
    args.weights_direct = args.weights_direct or default_weights("mzsr", scale=2, ds_method="direct").name
    args.weights_bicubic = args.weights_bicubic or default_weights("mzsr", scale=2, ds_method="bicubic").name
    if args.threads:
        torch.set_num_threads(args.threads)
    from metasr_adapter.allocator import retain_freed_memory

    retain_freed_memory()  # as the command line does: no page faults on every adaptation step
    record = result_record(script=__file__)

    from metasr_adapter import MetaSR
    from metasr_adapter.io.pretrained import BUNDLED_WEIGHTS, load_model
    from metasr_adapter.io.weights import read_metadata

    def wrapper(weights: str, schedule: str | None, fallback: str) -> MetaSR:
        if weights in BUNDLED_WEIGHTS:
            info = BUNDLED_WEIGHTS[weights]
            meta = {"schedule": info.schedule, "scale": info.scale}
        else:
            meta = read_metadata(weights)
        # the scale the weights were trained for (x4 weights evaluated at x2 would give numbers for the wrong task)
        return MetaSR(load_model("mzsr", weights), int(meta.get("scale") or 2),
                      schedule=schedule or meta.get("schedule") or fallback, precision=args.precision,
                      conv_algorithm=args.conv_algorithm)

    msrs = {}  # built on first use: a run of g^d kernels only needs no bicubic weights
    builders = {"direct": lambda: wrapper(args.weights_direct, args.schedule_direct, "mzsr_direct"),
                "bicubic": lambda: wrapper(args.weights_bicubic, args.schedule_bicubic, "mzsr_bicubic")}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, folder in args.sets:
        for kernel in args.kernels:
            path = out / f"{name}_{kernel}.json"
            which = "bicubic" if kernel.startswith("gb") else "direct"
            if path.is_file() and not args.redo:
                why = stale_cell(json.loads(path.read_text()), getattr(args, f"weights_{which}"), args.precision,
                                 args.back_projection, args.conv_algorithm)
                if why:
                    print(f"error: {path} was measured with {why}; give another --out, or --redo to replace it",
                          file=sys.stderr)
                    return 2
                print(f"{path} exists; skipped (--redo recomputes)")
                continue
            if which not in msrs:
                msrs[which] = builders[which]()
            cell = run_cell(msrs[which], folder, kernel, args.limit, not args.quiet, args.back_projection)
            cell["weights"] = portable_path(args.weights_direct if which == "direct" else args.weights_bicubic)
            cell["precision"] = args.precision
            cell["conv_algorithm"] = msrs[which].conv_algorithm
            cell["scale"] = msrs[which].scale
            cell["record"] = record
            path.write_text(json.dumps(cell, indent=2) + "\n")
            mp = cell["mean_psnr"]
            print(f"{name} {kernel}: bicubic {mp['bicubic']:.2f}, 0/1/10 steps {mp['0']:.2f} / {mp['1']:.2f} / "
                  f"{mp['10']:.2f} dB ({len(cell['images'])} images, {cell['seconds']:.0f} s)")
    cells = {}
    for f in sorted(out.glob("*_*.json")):
        if f.name == "table2.json":
            continue
        name, kernel = f.stem.rsplit("_", 1)
        if kernel in KERNELS:
            cells[(name, kernel)] = json.loads(f.read_text())
    weights = {"direct": portable_path(args.weights_direct), "bicubic": portable_path(args.weights_bicubic)}
    (out / "table2.md").write_text(markdown(cells, weights))
    summary = {f"{n}/{k}": {"images": len(c["images"]), "mean_psnr": c["mean_psnr"], "mean_ssim": c["mean_ssim"],
                            "paper_mzsr_1_10": PAPER.get((n, k)) if float(c.get("scale", 2)) == 2 else None,
                            "scale": c.get("scale", 2), "seconds": c["seconds"], "weights": c.get("weights"),
                            "record": c.get("record")}  # the run that measured the cell
               for (n, k), c in cells.items()}
    (out / "table2.json").write_text(json.dumps(summary, indent=2) + "\n")
    print((out / "table2.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
