"""Real-photo x2 benchmark: LR photos made the ways photos are made, against PIL bicubic and our networks.

    python benchmarks/real_photos.py --dataset bsd100 --limit 24 --threads 2
    python benchmarks/real_photos.py --hr-dir ~/my_photos --limit 8 --zssr-limit 2
    python benchmarks/real_photos.py --dataset bsd100 --limit 1 --crop 160 --out /tmp/photos_smoke   # smoke run

**Inputs.** Any folder of HR photos (``--hr-dir``) or a set from ``../shared/data`` (``--dataset``). Image
``k`` gets pipeline ``k mod 4`` (``--all-pipelines``: all four), with its random values drawn from
``numpy.random.default_rng([seed, k, pipeline])``. The pipelines use PIL, SciPy and OpenCV, not this
project's own degradation code, so the benchmark does not grade the project against itself:

* ``web``: PIL bicubic ½ resize, then JPEG at quality U{70..92} (PIL);
* ``camera``: Gaussian blur σ ~ U(0.5, 1.5) px (``scipy.ndimage.gaussian_filter``), 2×2 area downscale,
  JPEG at quality U{75..95};
* ``clean``: PIL bicubic ½ resize, PNG;
* ``mzsr``: anisotropic Gaussian blur σ ~ U(0.8, 1.8) px per axis, direct subsampling (every 2nd pixel),
  Gaussian noise σ ~ U(2, 8)/255, PNG.

Each LR image is written to a file (``.jpg`` or ``.png``), and every method reads that file, as a user's
command would (the photo path reads the JPEG quality from the file).

**Columns** (Y-PSNR on MATLAB luma, shave 2, and SSIM): ``bicubic`` (PIL bicubic upscaling); ``idn_bicubic_0``
(bundled ``idn_x2_bicubic``, no adaptation); ``photo_0`` (the photo weights, no adaptation); ``default``
(``metasr adapt LR -o SR.png``: :func:`metasr_adapter.pipelines.photo.upscale_photo` with every default);
``default_bf16`` / ``default_fp32`` (the same at a
given precision); ``mzsr_gd2_1`` (the former default: ``mzsr_x2_direct``, kernel gd2.0, 1 step); ``zssr`` (ZSSR with the
photo path's estimate, on the first ``--zssr-limit`` images, ``--zssr-iters`` iterations). Also the
estimate, the choice the default made, and seconds.

**Files.** ``OUT/SET/NAME__PIPELINE.json`` per case, written method by method (an interrupted run
continues; ``--redo`` recomputes), the LR files in ``OUT/SET/lr/``, ``OUT/SET_summary.json``,
``OUT/SET.md`` and ``OUT/SET_crops.png`` (labelled crops, each box marked on the full image). Every result
file records the command line and the commit.
"""
from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
DATASETS = {"bsd100": SHARED / "bsd100", "urban100": SHARED / "urban100", "set14": SHARED / "set14",
            "set5": SHARED / "set5"}
PIPELINES = ("web", "camera", "clean", "mzsr")
DEFAULT_METHODS = ("bicubic", "idn_bicubic_0", "photo_0", "default", "mzsr_gd2_1", "zssr")
METHODS = ("bicubic", "idn_bicubic_0", "photo_0", "default", "default_bf16", "default_fp32", "mzsr_gd2_1", "zssr")
PHOTO_METHODS = ("photo_0", "default", "default_bf16", "default_fp32", "zssr")  # depend on the photo weights
ROUTED_METHODS = ("default", "default_bf16", "default_fp32")  # depend on the grid specialists too


def _commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def make_lr(hr: np.ndarray, pipeline: str, rng: np.random.Generator) -> tuple[bytes, str, dict]:
    """The LR file's bytes, its suffix, and the values drawn, for an even-sized RGB uint8 ``hr``."""
    from PIL import Image
    from scipy.ndimage import gaussian_filter

    def encode(a: np.ndarray, fmt: str, **kw) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, fmt, **kw)
        return buf.getvalue()

    h, w = hr.shape[:2]
    params: dict = {"pipeline": pipeline}
    if pipeline in ("web", "clean"):
        lr = np.asarray(Image.fromarray(hr).resize((w // 2, h // 2), Image.BICUBIC))
        if pipeline == "clean":
            return encode(lr, "PNG"), ".png", params
        q = int(rng.integers(70, 93))
        params["jpeg_quality"] = q
        return encode(lr, "JPEG", quality=q), ".jpg", params
    f = hr.astype(np.float64) / 255.0
    if pipeline == "camera":
        s = float(rng.uniform(0.5, 1.5))
        q = int(rng.integers(75, 96))
        params.update(sigma=s, jpeg_quality=q)
        b = np.stack([gaussian_filter(f[..., c], s, mode="reflect") for c in range(3)], -1)
        lr = b.reshape(h // 2, 2, w // 2, 2, 3).mean(axis=(1, 3))
        return encode(np.round(np.clip(lr, 0, 1) * 255).astype(np.uint8), "JPEG", quality=q), ".jpg", params
    if pipeline == "mzsr":
        sy, sx = float(rng.uniform(0.8, 1.8)), float(rng.uniform(0.8, 1.8))
        n = float(rng.uniform(2, 8)) / 255.0
        params.update(sigma=[sy, sx], noise=n * 255)
        b = np.stack([gaussian_filter(f[..., c], (sy, sx), mode="reflect") for c in range(3)], -1)
        lr = b[::2, ::2] + n * rng.standard_normal(b[::2, ::2].shape)
        return encode(np.round(np.clip(lr, 0, 1) * 255).astype(np.uint8), "PNG"), ".png", params
    raise ValueError(f"unknown pipeline {pipeline!r}; choose from {PIPELINES}")


def _score(sr: np.ndarray, hr: np.ndarray) -> dict:
    from metasr_adapter.ops.metrics import psnr, ssim

    return {"psnr": psnr(sr, hr, crop_border=2, test_y_channel=True),
            "ssim": ssim(sr, hr, crop_border=2, test_y_channel=True)}


class Models:
    """The networks, loaded once."""

    def __init__(self, photo_weights: str | None = None) -> None:
        from metasr_adapter.adapt.metasr import load_pretrained
        from metasr_adapter.pipelines.photo import load_grid_specialists, load_photo_model

        self.idn = load_pretrained("idn_x2_bicubic", tile=512)
        self._photo_weights = photo_weights  # None: the photo path's own choice
        self.photo, self.photo_name = load_photo_model(photo_weights)  # the photo path's default precision
        # as metasr adapt: a plain resize goes to the network trained for it, unless --photo-weights is given
        self.specialists = {} if photo_weights else load_grid_specialists()
        self.mzsr = load_pretrained("mzsr_x2_direct", tile=512, max_pixels=512 * 512)
        self._other: dict = {}

    def photo_at(self, precision: str):
        """The photo weights under ``precision`` (``default_bf16`` / ``default_fp32`` columns)."""
        from metasr_adapter.pipelines.photo import load_photo_model

        from metasr_adapter.pipelines.photo import load_grid_specialists

        if precision not in self._other:
            self._other[precision] = (load_photo_model(self._photo_weights, precision=precision)[0],
                                      {} if self._photo_weights else load_grid_specialists(precision=precision))
        return self._other[precision]


def run_method(method: str, lr_path: Path, models: Models, args: argparse.Namespace) -> tuple[np.ndarray, dict]:
    from PIL import Image

    from metasr_adapter.ops.imageio import read_image
    from metasr_adapter.ops.jpeg import read_jpeg_quality
    from metasr_adapter.pipelines.photo import upscale_photo

    lr = read_image(lr_path)
    extra: dict = {}
    if method == "bicubic":
        sr = np.asarray(Image.fromarray(lr).resize((lr.shape[1] * 2, lr.shape[0] * 2), Image.BICUBIC))
    elif method == "idn_bicubic_0":
        sr = models.idn.adapt(lr, "bicubic", 0)
    elif method == "photo_0":
        sr = models.photo.adapt(lr, "bicubic", 0)
    elif method == "default":
        sr, info = upscale_photo(lr, models.photo, jpeg_quality=read_jpeg_quality(lr_path),
                                 weights_name=models.photo_name, specialists=models.specialists, return_info=True)
        extra = {"info": info.to_dict()}
    elif method in ("default_bf16", "default_fp32"):
        msr, specialists = models.photo_at(method.split("_")[1])
        sr, info = upscale_photo(lr, msr, jpeg_quality=read_jpeg_quality(lr_path), weights_name=models.photo_name,
                                 specialists=specialists, return_info=True)
        extra = {"info": info.to_dict()}
    elif method == "mzsr_gd2_1":
        sr = models.mzsr.adapt(lr, "gd2.0", 1)
    elif method == "zssr":
        from metasr_adapter.estimate.degradation import estimate_degradation
        from metasr_adapter.zssr.core import ZSSRConfig, default_preset, zssr_super_resolve

        est = estimate_degradation(lr, models.photo, jpeg_quality=read_jpeg_quality(lr_path)).spec
        kernel = est.kernel.kernel
        cfg = ZSSRConfig.preset(default_preset(kernel), max_iters=args.zssr_iters, noise_std=est.noise_std)
        sr = zssr_super_resolve(lr, kernel, 2, cfg)
        extra = {"estimate": est.describe(), "iters": args.zssr_iters}
    else:
        raise ValueError(method)
    return sr, extra


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", choices=sorted(DATASETS), default=None)
    ap.add_argument("--hr-dir", default=None, help="a folder of HR photos (instead of --dataset)")
    ap.add_argument("--limit", type=int, default=None, help="the first N images")
    ap.add_argument("--start", type=int, default=0, help="skip the first N images (a tuning split)")
    ap.add_argument("--all-pipelines", action="store_true", help="every image through all four pipelines")
    ap.add_argument("--methods", default=",".join(DEFAULT_METHODS), help="comma-separated subset of " + ",".join(METHODS))
    ap.add_argument("--zssr-limit", type=int, default=2, help="ZSSR on the first N cases (0 = none)")
    ap.add_argument("--zssr-iters", type=int, default=500)
    ap.add_argument("--crop", type=int, default=None, help="a centred NxN crop of each HR image (smoke runs)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--photo-weights", default=None,
                    help="bundled weights or a file for the photo path (default: its own choice, as metasr adapt)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--redo", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "real_photos"))
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if (args.dataset is None) == (args.hr_dir is None):
        ap.error("give --dataset or --hr-dir")
    from metasr_adapter.ops.imageio import list_images, read_image, write_image

    src = Path(args.hr_dir) if args.hr_dir else DATASETS[args.dataset]
    if not src.is_dir():
        print(f"real_photos: {src} not found (../shared/data holds the benchmark sets)", file=sys.stderr)
        return 2
    set_name = args.dataset or src.name
    if args.crop:
        set_name += f"_crop{args.crop}"
    out = Path(args.out) / set_name
    (out / "lr").mkdir(parents=True, exist_ok=True)
    files = list_images(src)[args.start:]
    files = files[: args.limit] if args.limit else files
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = set(methods) - set(METHODS)
    if unknown:
        ap.error(f"unknown method(s) {sorted(unknown)}; choose from {METHODS}")
    record = {"command": "python benchmarks/real_photos.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "commit": _commit(), "threads": torch.get_num_threads()}
    models = Models(args.photo_weights)
    from metasr_adapter.io.weights import tensor_fingerprint

    record["photo_weights"] = {"name": models.photo_name,
                               "fingerprint": tensor_fingerprint(models.photo.model.state_dict()),
                               "specialists": {g: {"name": n, "fingerprint": tensor_fingerprint(m.model.state_dict())}
                                               for g, (m, n) in models.specialists.items()}}
    cases = []
    for k, f in enumerate(files):
        index = k + args.start
        pipes = PIPELINES if args.all_pipelines else (PIPELINES[index % 4],)
        for pipe in pipes:
            cases.append((index, f, pipe))
    from tqdm.auto import tqdm

    for n, (index, f, pipe) in enumerate(tqdm(cases, desc="real photos", unit="case")):
        res_path = out / f"{f.stem}__{pipe}.json"
        res = json.loads(res_path.read_text()) if res_path.is_file() and not args.redo else {}
        old = res.get("photo_weights") or {}
        stale = set()
        if {k: old.get(k) for k in ("name", "fingerprint")} != {k: record["photo_weights"][k] for k in ("name", "fingerprint")}:
            stale = set(PHOTO_METHODS)  # measured with other photo weights: redo those
        elif old.get("specialists") != record["photo_weights"]["specialists"]:
            stale = set(ROUTED_METHODS)  # the default's routing changed
        res["methods"] = {m: v for m, v in res.get("methods", {}).items() if m not in stale}
        hr = read_image(f)
        if hr.ndim == 2:
            hr = np.repeat(hr[:, :, None], 3, axis=2)
        hr = hr[..., :3]
        if args.crop:
            c = args.crop
            i0, j0 = max(0, (hr.shape[0] - c) // 2), max(0, (hr.shape[1] - c) // 2)
            hr = hr[i0 : i0 + c, j0 : j0 + c]
        hr = np.ascontiguousarray(hr[: hr.shape[0] // 2 * 2, : hr.shape[1] // 2 * 2])
        rng = np.random.default_rng([args.seed, index, PIPELINES.index(pipe)])
        data, suffix, params = make_lr(hr, pipe, rng)
        lr_path = out / "lr" / f"{f.stem}__{pipe}{suffix}"
        lr_path.write_bytes(data)
        res.update({"image": f.name, "pipeline": pipe, "params": params, "lr_file": lr_path.name, **record})
        res.setdefault("methods", {})
        for m in methods:
            if m in res["methods"]:
                continue
            if m == "zssr" and n >= args.zssr_limit:
                continue
            t0 = time.perf_counter()
            sr, extra = run_method(m, lr_path, models, args)
            sr = sr[: hr.shape[0], : hr.shape[1]]
            res["methods"][m] = {**_score(sr, hr), "seconds": time.perf_counter() - t0, **extra}
            if m in ("bicubic", "idn_bicubic_0", "default") and n < 4:
                write_image(out / f"{f.stem}__{pipe}__{m}.png", sr)
            res_path.write_text(json.dumps(res, indent=1) + "\n")
        if n < 4:
            write_image(out / f"{f.stem}__{pipe}__gt.png", hr)
    summarize(out, set_name, record)
    return 0


def summarize(out: Path, set_name: str, record: dict) -> dict:
    rows = [json.loads(p.read_text()) for p in sorted(out.glob("*__*.json"))]
    methods = [m for m in METHODS if any(m in r["methods"] for r in rows)]
    summary: dict = {**record, "cases": len(rows), "mean_psnr": {}, "mean_ssim": {}, "gain_over_bicubic": {}}
    for m in methods:
        have = [r for r in rows if m in r["methods"] and "bicubic" in r["methods"]]
        if not have:
            continue
        summary["mean_psnr"][m] = float(np.mean([r["methods"][m]["psnr"] for r in have]))
        summary["mean_ssim"][m] = float(np.mean([r["methods"][m]["ssim"] for r in have]))
        gains = [r["methods"][m]["psnr"] - r["methods"]["bicubic"]["psnr"] for r in have]
        summary["gain_over_bicubic"][m] = {"mean": float(np.mean(gains)), "worst": float(np.min(gains)),
                                           "cases": len(have)}
    if any("default" in r["methods"] for r in rows):
        summary["default_choices"] = {c: sum(1 for r in rows if r["methods"].get("default", {}).get("info", {}).get(
            "choice") == c) for c in ("adapted", "plain")}
        summary["default_seconds_median"] = float(np.median([r["methods"]["default"]["seconds"] for r in rows
                                                             if "default" in r["methods"]]))
    (out.parent / f"{set_name}_summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    lines = [f"# Real-photo x2 benchmark: {set_name}", "", f"`{record['command']}` at commit `{record['commit']}`",
             "", "Y-PSNR (dB, shave 2) / SSIM per case; gain = method − PIL bicubic.", "",
             "| image | pipeline | " + " | ".join(methods) + " | default's choice |",
             "|---|---|" + "---|" * len(methods) + "---|"]
    for r in rows:
        cells = [f"{r['methods'][m]['psnr']:.2f} / {r['methods'][m]['ssim']:.3f}" if m in r["methods"] else "–"
                 for m in methods]
        choice = r["methods"].get("default", {}).get("info", {}).get("choice", "–")
        lines.append(f"| {r['image']} | {r['pipeline']} | " + " | ".join(cells) + f" | {choice} |")
    lines += ["", "| method | cases | mean Y-PSNR | mean SSIM | mean gain over bicubic | worst gain |", "|---|---|---|---|---|---|"]
    for m in methods:
        if m in summary["gain_over_bicubic"]:
            g = summary["gain_over_bicubic"][m]
            lines.append(f"| {m} | {g['cases']} | {summary['mean_psnr'][m]:.3f} | {summary['mean_ssim'][m]:.4f} | "
                         f"{g['mean']:+.3f} | {g['worst']:+.3f} |")
    per_pipe = {}
    for p in PIPELINES:
        sel = [r for r in rows if r["pipeline"] == p and "default" in r["methods"]]
        if sel:
            per_pipe[p] = {m: float(np.mean([r["methods"][m]["psnr"] - r["methods"]["bicubic"]["psnr"] for r in sel
                                             if m in r["methods"]])) for m in methods if m != "bicubic" and
                           any(m in r["methods"] for r in sel)}
    if per_pipe:
        ms = [m for m in methods if m != "bicubic"]
        lines += ["", "Mean gain over bicubic by pipeline (dB):", "", "| pipeline | " + " | ".join(ms) + " |",
                  "|---|" + "---|" * len(ms)]
        for p, d in per_pipe.items():
            lines.append(f"| {p} | " + " | ".join(f"{d[m]:+.3f}" if m in d else "–" for m in ms) + " |")
    summary["gain_by_pipeline"] = per_pipe
    (out.parent / f"{set_name}_summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out.parent / f"{set_name}.md").write_text("\n".join(lines) + "\n")
    _figure(out, set_name)
    return summary


def _figure(out: Path, set_name: str) -> None:
    """Labelled crops of the first cases that kept their images, each crop's box marked on the full image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from metasr_adapter.ops.imageio import read_image

    cases = sorted({p.name.rsplit("__", 1)[0] for p in out.glob("*__gt.png")})[:4]
    if not cases:
        return
    labels = [("bicubic", "PIL bicubic"), ("idn_bicubic_0", "idn_x2_bicubic"), ("default", "metasr adapt (default)"),
              ("gt", "ground truth")]
    fig, axes = plt.subplots(len(cases), 5, figsize=(17, 3.6 * len(cases)), squeeze=False)
    for row, case in zip(axes, cases):
        gt = read_image(out / f"{case}__gt.png")
        res = json.loads((out / f"{case}.json").read_text()) if (out / f"{case}.json").is_file() else {}
        c = min(96, gt.shape[0] // 2, gt.shape[1] // 2)
        g = gt.astype(np.float64).mean(-1)
        energy = np.abs(np.diff(g, axis=0))[:, :-1] + np.abs(np.diff(g, axis=1))[:-1, :]
        best, pos = -1.0, (0, 0)
        for i in range(0, gt.shape[0] - c, c // 2):
            for j in range(0, gt.shape[1] - c, c // 2):
                e = energy[i : i + c, j : j + c].mean()
                if e > best:
                    best, pos = e, (i, j)
        i, j = pos
        row[0].imshow(gt)
        row[0].add_patch(Rectangle((j, i), c, c, fill=False, edgecolor="red", linewidth=2))
        row[0].set_title(f"{case} (box = crop)", fontsize=9)
        for ax, (key, label) in zip(row[1:], labels):
            path = out / f"{case}__{key}.png"
            if path.is_file():
                ax.imshow(read_image(path)[i : i + c, j : j + c], interpolation="nearest")
            score = res.get("methods", {}).get(key, {}).get("psnr")
            ax.set_title(label + (f"\n{score:.2f} dB" if score is not None else ""), fontsize=9)
        for ax in row:
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(out.parent / f"{set_name}_crops.png", dpi=80)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
