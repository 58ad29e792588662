"""ZSSR benchmark: Set5/Set14 x2 in the 'ideal' setting, the official examples, and CPU speed.

Ideal setting (ZSSR paper, Table 1): LR = MATLAB-bicubic downscaling of the modcropped HR,
rounded to uint8; Y-PSNR with ``crop_border = scale`` (metasr_adapter.ops.metrics.psnr).
Paper: Set5 x2 37.37 dB, Set14 x2 33.00 dB.

Examples::

    # iterations per second on one image, fp32 and bf16 (a few iterations each)
    python benchmarks/bench_zssr.py speed --iters 20 --bf16-iters 3
    # full ZSSR on Set5, one thread, results written after every image
    python benchmarks/bench_zssr.py ideal --sets set5 --json runs/zssr_bench/set5.json
    # the official examples (random kernel with its kernel; bicubic LR with GT)
    python benchmarks/bench_zssr.py examples --json runs/zssr_bench/examples.json
    # Set14 on two cores: two one-thread shards side by side, then one result file
    python benchmarks/bench_zssr.py ideal --sets set14 --names barbara monarch ... --json a.json &
    python benchmarks/bench_zssr.py ideal --sets set14 --names ppt3 lenna ... --json b.json
    python benchmarks/bench_zssr.py merge a.json b.json --json set14.json
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import portable_argv, portable_path, result_record  # noqa: E402  (benchmarks/_record.py)

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
PAPER_TABLE1_X2 = {"set5": 37.37, "set14": 33.00}


def _ideal_lr(hr: np.ndarray, scale: float) -> np.ndarray:
    """MATLAB-bicubic downscaling of a uint8 image, rounded back to uint8 (same layout)."""
    from metasr_adapter.ops.degrade import imresize

    a = hr[:, :, None] if hr.ndim == 2 else hr
    x = torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)).astype(np.float64) / 255.0)[None]
    lr = imresize(x, 1.0 / scale).clamp(0, 1)[0].permute(1, 2, 0).numpy()
    out = np.round(lr * 255.0).astype(np.uint8)
    return out[:, :, 0] if hr.ndim == 2 else out


def _bicubic_up(lr: np.ndarray, scale: float, shape: tuple[int, int]) -> np.ndarray:
    from metasr_adapter.ops.degrade import imresize

    a = lr[:, :, None] if lr.ndim == 2 else lr
    x = torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)).astype(np.float64) / 255.0)[None]
    up = imresize(x, scale, output_shape=shape).clamp(0, 1)[0].permute(1, 2, 0).numpy()
    out = np.round(up * 255.0).astype(np.uint8)
    return out[:, :, 0] if lr.ndim == 2 else out


def _environment(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
        "argv": portable_argv(sys.argv), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def _write(path: str | None, payload: dict[str, Any]) -> None:
    if not path:
        return
    from metasr_adapter.atomic import atomic_write_text

    atomic_write_text(path, json.dumps(payload, indent=2, default=float))


def _config(args: argparse.Namespace, preset: str | None = None, **extra: Any):
    from metasr_adapter.zssr.core import ZSSRConfig

    over: dict[str, Any] = {"precision": args.precision, "seed": args.seed, "device": "cpu"}
    if args.iters is not None:
        over["max_iters"] = args.iters
    over.update(extra)
    return ZSSRConfig.preset(preset or args.preset, **over)


def _summary_of(info) -> dict[str, Any]:
    st = info.stages
    return {
        "seconds": info.seconds, "iterations": info.iterations, "iters_per_second": info.iters_per_second,
        "train_seconds": sum(s["train_seconds"] for s in st), "test_seconds": sum(s["test_seconds"] for s in st),
        "lr_changes": [s["lr_changes"] for s in st], "stopped_by_policy": [s["stopped_by_policy"] for s in st],
        "final_rec_mse": [s["rec_mse"][-1][1] if s["rec_mse"] else None for s in st],
    }


def cmd_ideal(args: argparse.Namespace) -> int:
    from metasr_adapter.ops.imageio import list_images, modcrop, read_image
    from metasr_adapter.ops.metrics import psnr
    from metasr_adapter.zssr.core import ZSSR

    scale = 2.0
    border = int(scale)
    dirs = {"set5": Path(args.set5_dir), "set14": Path(args.set14_dir)}
    payload: dict[str, Any] = {"setting": "ideal x2 (MATLAB-bicubic LR, uint8)", "preset": args.preset,
                               "config": _config(args).to_dict(), "environment": _environment(args),
                               "record": args.record, "sets": {}}
    for name in args.sets:
        files = list_images(dirs[name])
        if args.names:
            files = [f for f in files if f.stem in args.names]
        files = files[: args.limit] if args.limit else files
        rows: list[dict[str, Any]] = []
        payload["sets"][name] = {"rows": rows, "paper_psnr": PAPER_TABLE1_X2[name], "complete": False,
                                 "images_total": len(list_images(dirs[name]))}
        for path in files:
            hr = modcrop(read_image(path), scale)
            if hr.ndim == 3 and hr.shape[2] == 4:
                hr = hr[:, :, :3]
            lr = _ideal_lr(hr, scale)
            t0 = time.perf_counter()
            sr, info = ZSSR(_config(args)).run(lr, None, scale, progress=not args.quiet, return_info=True)
            wall = time.perf_counter() - t0
            row = {"image": path.stem, "lr_shape": list(lr.shape), "psnr": psnr(sr, hr, crop_border=border),
                   "bicubic_psnr": psnr(_bicubic_up(lr, scale, hr.shape[:2]), hr, crop_border=border),
                   "wall_seconds": wall, **_summary_of(info)}
            rows.append(row)
            print(f"{name}/{path.stem}: ZSSR {row['psnr']:.2f} dB (bicubic {row['bicubic_psnr']:.2f}) "
                  f"{row['iterations']} it in {wall:.0f} s ({row['iters_per_second']:.2f} it/s)", flush=True)
            _finish_set(payload["sets"][name])
            _write(args.json, payload)
        payload["sets"][name]["complete"] = len(rows) == payload["sets"][name]["images_total"]
        _write(args.json, payload)
    for name, res in payload["sets"].items():
        if res["rows"]:
            print(f"{name}: {len(res['rows'])}/{res['images_total']} images, mean ZSSR {res['mean_psnr']:.2f} dB, "
                  f"bicubic {res['mean_bicubic_psnr']:.2f} dB, paper {res['paper_psnr']:.2f} dB, "
                  f"{res['mean_wall_seconds']:.0f} s/image")
    return 0


def _finish_set(res: dict[str, Any]) -> None:
    rows = res["rows"]
    res["mean_psnr"] = float(np.mean([r["psnr"] for r in rows]))
    res["mean_bicubic_psnr"] = float(np.mean([r["bicubic_psnr"] for r in rows]))
    res["mean_wall_seconds"] = float(np.mean([r["wall_seconds"] for r in rows]))
    res["mean_iterations"] = float(np.mean([r["iterations"] for r in rows]))


def plot_sets(payload: dict[str, Any], path: str) -> None:
    """Per-image Y-PSNR gain of ZSSR over bicubic, one panel per set, with the set means."""
    from matplotlib.figure import Figure

    sets = [(n, r) for n, r in payload["sets"].items() if r["rows"]]
    fig = Figure(figsize=(4 + 0.55 * sum(len(r["rows"]) for _, r in sets), 3.6), layout="constrained")
    axes = fig.subplots(1, len(sets), squeeze=False, width_ratios=[len(r["rows"]) for _, r in sets])[0]
    for ax, (name, res) in zip(axes, sets):
        names = [r["image"] for r in res["rows"]]
        gains = [r["psnr"] - r["bicubic_psnr"] for r in res["rows"]]
        ax.bar(range(len(names)), gains, color="tab:blue")
        ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
        ax.axhline(0, color="black", lw=0.6)
        ax.set_title(f"{name} x2 ideal: ZSSR {res['mean_psnr']:.2f} dB (paper {res['paper_psnr']:.2f}), "
                     f"bicubic {res['mean_bicubic_psnr']:.2f}", fontsize=9)
        ax.set_ylabel("ZSSR − bicubic, Y-PSNR (dB)")
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def cmd_merge(args: argparse.Namespace) -> int:
    """Combine the result files of several ``ideal`` shards into one (rows by set, means recomputed)."""
    parts = [json.loads(Path(f).read_text()) for f in args.parts]
    merged: dict[str, Any] = {k: parts[0][k] for k in ("setting", "preset", "config")}
    merged["environment"] = [p["environment"] for p in parts]
    merged["record"] = args.record
    merged["shard_records"] = [p.get("record") for p in parts]  # the runs that measured the rows
    merged["sets"] = {}
    for part in parts:
        if part["config"] != merged["config"]:
            raise SystemExit(f"shards ran with different ZSSR configs: {part['config']} vs {merged['config']}")
        for name, res in part["sets"].items():
            out = merged["sets"].setdefault(name, {"rows": [], "paper_psnr": res["paper_psnr"],
                                                   "images_total": res["images_total"]})
            seen = {r["image"] for r in out["rows"]}
            dup = seen & {r["image"] for r in res["rows"]}
            if dup:
                raise SystemExit(f"{name}: images {sorted(dup)} appear in more than one shard")
            out["rows"].extend(res["rows"])
    for name, res in merged["sets"].items():
        res["rows"].sort(key=lambda r: r["image"])
        _finish_set(res)
        res["complete"] = len(res["rows"]) == res["images_total"]
        print(f"{name}: {len(res['rows'])}/{res['images_total']} images, mean ZSSR {res['mean_psnr']:.2f} dB, "
              f"bicubic {res['mean_bicubic_psnr']:.2f} dB, paper {res['paper_psnr']:.2f} dB, "
              f"{res['mean_wall_seconds']:.0f} s/image")
    _write(args.json, merged)
    if args.plot:
        plot_sets(merged, args.plot)
    return 0


def cmd_examples(args: argparse.Namespace) -> int:
    from metasr_adapter.ops.imageio import read_image
    from metasr_adapter.ops.metrics import psnr
    from metasr_adapter.zssr.core import ZSSR

    root = Path(args.examples_dir)
    payload: dict[str, Any] = {"environment": _environment(args), "record": args.record, "examples": []}
    jobs = [
        ("kernel_example", root / "kernel_example" / "BSD100_100_lr_rand_ker_c_X2.png",
         root / "kernel_example" / "BSD100_100_lr_rand_ker_c_X2_0.mat", None, "kernel"),
        ("example_with_gt", root / "example_with_gt" / "bsd_001.png", None,
         root / "example_with_gt" / "bsd_001_gt.png", "ideal_x2"),
    ]
    for name, lr_path, kernel, gt_path, preset in jobs:
        if args.only and name not in args.only:
            continue
        lr = read_image(lr_path)
        cfg = _config(args, preset)
        t0 = time.perf_counter()
        sr, info = ZSSR(cfg).run(lr, str(kernel) if kernel else None, 2, progress=not args.quiet, return_info=True)
        wall = time.perf_counter() - t0
        row: dict[str, Any] = {"example": name, "preset": preset, "lr": portable_path(lr_path),
                               "kernel": portable_path(kernel) if kernel else None, "sr_shape": list(sr.shape),
                               "wall_seconds": wall, **_summary_of(info)}
        if gt_path is not None:
            gt = read_image(gt_path)
            row["psnr"] = psnr(sr, gt, crop_border=2)
            row["bicubic_psnr"] = psnr(_bicubic_up(lr, 2.0, gt.shape[:2]), gt, crop_border=2)
        if args.save_dir:
            from metasr_adapter.ops.imageio import write_image

            write_image(Path(args.save_dir) / f"{name}_zssr.png", sr)
        payload["examples"].append(row)
        _write(args.json, payload)
        extra = f", PSNR {row['psnr']:.2f} dB (bicubic {row['bicubic_psnr']:.2f})" if "psnr" in row else ""
        print(f"{name}: {row['iterations']} it in {wall:.0f} s ({row['iters_per_second']:.2f} it/s){extra}", flush=True)
    return 0


def cmd_speed(args: argparse.Namespace) -> int:
    from metasr_adapter.ops.imageio import list_images, modcrop, read_image
    from metasr_adapter.zssr.core import ZSSR, ZSSRConfig

    path = [p for p in list_images(args.set5_dir) if p.stem == args.image][0]
    lr = _ideal_lr(modcrop(read_image(path), 2), 2.0)
    payload: dict[str, Any] = {"image": path.stem, "lr_shape": list(lr.shape), "environment": _environment(args),
                               "record": args.record, "runs": []}
    for precision, iters in (("fp32", args.iters or 20), ("bf16", args.bf16_iters)):
        if iters <= 0:
            continue
        # the training loop only: no self-ensemble / back-projection at the end, LR policy off
        cfg = ZSSRConfig.preset(args.preset, precision=precision, max_iters=iters, lr_min_iters=10**9,
                                self_ensemble=False, back_projection_iters=0, seed=args.seed, device="cpu")
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            _, info = ZSSR(cfg).run(lr, None, 2, progress=not args.quiet, return_info=True)
        st = info.stages[0]
        # whole training loop: includes the first (warm-up) iteration and the reconstruction test at it 0
        per_it = st["train_seconds"] / st["iterations"]
        row = {"precision": precision, "iterations": st["iterations"], "train_seconds": st["train_seconds"],
               "iters_per_second": st["iters_per_second"], "seconds_per_iteration": per_it,
               "estimated_seconds_for_3000_iters": 3000 * per_it}
        payload["runs"].append(row)
        print(f"{precision}: {row['iterations']} it, {row['iters_per_second']:.3f} it/s ({per_it:.3f} s/it; "
              f"3000 it ≈ {3000 * per_it / 60:.1f} min)", flush=True)
        _write(args.json, payload)
    # the one-off final test of a full run (8-way ensemble + back-projection) at this image size
    cfg = ZSSRConfig.preset(args.preset, max_iters=1, seed=args.seed, device="cpu", test_every=10**9)
    _, info = ZSSR(cfg).run(lr, None, 2, progress=False, return_info=True)
    payload["final_test_seconds_fp32"] = info.stages[0]["test_seconds"]
    print(f"final test (8-way median + back-projection), fp32: {payload['final_test_seconds_fp32']:.1f} s", flush=True)
    _write(args.json, payload)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--set5-dir", default=str(SHARED / "data" / "set5"))
        q.add_argument("--set14-dir", default=str(SHARED / "data" / "set14"))
        q.add_argument("--preset", default="ideal_x2")
        q.add_argument("--iters", type=int, default=None, help="iteration cap per stage (default: the preset's, 3000)")
        q.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
        q.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the CPU is shared)")
        q.add_argument("--seed", type=int, default=0)
        q.add_argument("--json", default=None, help="write results here (rewritten after every image)")
        q.add_argument("--quiet", action="store_true")

    q = sub.add_parser("ideal", help="Set5/Set14 x2, ideal (bicubic) setting")
    common(q)
    q.add_argument("--sets", nargs="+", choices=["set5", "set14"], default=["set5", "set14"])
    q.add_argument("--limit", type=int, default=None, help="first N images of each set")
    q.add_argument("--names", nargs="+", default=None, help="only these image names (stems)")
    q.set_defaults(func=cmd_ideal)

    q = sub.add_parser("examples", help="the official ZSSR examples in ../shared/data/zssr")
    common(q)
    q.add_argument("--examples-dir", default=str(SHARED / "data" / "zssr"))
    q.add_argument("--only", nargs="+", default=None, choices=["kernel_example", "example_with_gt"])
    q.add_argument("--save-dir", default=None)
    q.set_defaults(func=cmd_examples)

    q = sub.add_parser("merge", help="combine the JSON files of several 'ideal' shards (e.g. run with --names)")
    q.add_argument("parts", nargs="+", help="result files written by 'ideal --json'")
    q.add_argument("--json", default=None, help="write the merged results here")
    q.add_argument("--plot", default=None, help="also draw the per-image gains over bicubic (PNG)")
    q.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    q.set_defaults(func=cmd_merge)

    q = sub.add_parser("speed", help="iterations per second on one Set5 image, fp32 and bf16")
    common(q)
    q.add_argument("--image", default="baby")
    q.add_argument("--bf16-iters", type=int, default=3)
    q.set_defaults(func=cmd_speed)

    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.record = result_record(argv, script=__file__)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
