"""Evaluate test-time adaptation (or ZSSR, ``method="zssr"``) over a folder of images: PSNR/SSIM after each step
count. A pipeline: it runs the adaptation layer and ZSSR side by side."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..ops.degrade import degrade, imresize
from ..ops.imageio import list_images, modcrop, read_image, to_tensor, write_image
from ..ops.kernels import KernelSpec, resolve_kernel
from ..ops.metrics import psnr, ssim, to_uint8

__all__ = ["ImageResult", "EvalReport", "evaluate_folder", "synthesize_lr"]

Column = int | str


@dataclass
class ImageResult:
    """Scores of one image: ``psnr[col]`` / ``ssim[col]`` per column (a step count, 'bicubic' or 'zssr')."""

    name: str
    psnr: dict[Column, float] = field(default_factory=dict)
    ssim: dict[Column, float] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class EvalReport:
    """Per-image results plus averages; ``columns`` in display order."""

    rows: list[ImageResult]
    columns: list[Column]
    settings: dict[str, Any] = field(default_factory=dict)

    def _mean(self, attr: str) -> dict[Column, float]:
        return {c: float(np.mean([getattr(r, attr)[c] for r in self.rows])) for c in self.columns} if self.rows else {}

    @property
    def mean_psnr(self) -> dict[Column, float]:
        return self._mean("psnr")

    @property
    def mean_ssim(self) -> dict[Column, float]:
        return self._mean("ssim")

    def to_dict(self) -> dict[str, Any]:
        key = str
        return {
            "settings": self.settings,
            "columns": [key(c) for c in self.columns],
            "images": [
                {"name": r.name, "psnr": {key(c): r.psnr[c] for c in self.columns},
                 "ssim": {key(c): r.ssim[c] for c in self.columns}, "seconds": r.seconds}
                for r in self.rows
            ],
            "mean_psnr": {key(c): v for c, v in self.mean_psnr.items()},
            "mean_ssim": {key(c): v for c, v in self.mean_ssim.items()},
        }

    def save_json(self, path: str | Path) -> None:
        from ..atomic import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    def format_table(self) -> str:
        """A plain-text table: one row per image, PSNR/SSIM per column, then the averages."""
        heads = [("steps " + str(c)) if isinstance(c, int) else str(c) for c in self.columns]
        name_w = max([len("image"), len("average")] + [len(r.name) for r in self.rows])
        cell_w = max(16, *(len(h) for h in heads))
        lines = [f"{'image':<{name_w}}  " + "  ".join(f"{h:>{cell_w}}" for h in heads) + "    time (s)"]
        lines.append("-" * len(lines[0]))
        fmt = lambda p, s: f"{p:.4f} / {s:.4f}"
        for r in self.rows:
            cells = "  ".join(f"{fmt(r.psnr[c], r.ssim[c]):>{cell_w}}" for c in self.columns)
            lines.append(f"{r.name:<{name_w}}  {cells}    {r.seconds:8.2f}")
        lines.append("-" * len(lines[0]))
        mp, ms = self.mean_psnr, self.mean_ssim
        cells = "  ".join(f"{fmt(mp[c], ms[c]):>{cell_w}}" for c in self.columns)
        lines.append(f"{'average':<{name_w}}  {cells}")
        lines.append("(PSNR dB / SSIM on Y, crop_border=%s)" % self.settings.get("crop_border"))
        return "\n".join(lines)


def synthesize_lr(gt: np.ndarray, kernel: KernelSpec, scale: float) -> np.ndarray:
    """LR uint8 image from a (modcropped) GT, made like MZSR's test data: kernel, subsampling, rounding.
    The LR has the GT's layout: HxW for a grayscale HxW GT, HxWxC otherwise."""
    x, _, _ = to_tensor(gt, channels=gt.shape[2] if gt.ndim == 3 else 1, dtype=torch.float64)
    with torch.no_grad():
        lr = degrade(x, kernel.kernel, scale, ds_method=kernel.ds_method)
    out = to_uint8(lr)
    return out[..., 0] if gt.ndim == 2 else out


def _score(sr: np.ndarray, gt: np.ndarray, crop: int) -> tuple[float, float]:
    return psnr(sr, gt, crop_border=crop), ssim(sr, gt, crop_border=crop)


def evaluate_folder(
    metasr,
    gt_dir: str | Path,
    *,
    lr_dir: str | Path | None = None,
    kernel: Any = "gd2.0",
    steps: Sequence[int] = (0, 1, 10),
    schedule: Any = None,
    lr: float | None = None,
    ds_method: str | None = None,
    crop_border: int | None = None,
    include_bicubic: bool = False,
    back_projection: int | None = None,
    self_ensemble: bool = False,
    progress: bool = True,
    limit: int | None = None,
    method: str = "metasr",
    zssr_config: Any = None,
    scale: float | None = None,
    save_dir: str | Path | None = None,
    seed: int | None = None,
) -> EvalReport:
    """Score SR over the images of ``gt_dir`` (paired by sorted order with ``lr_dir``).

    ``method='metasr'`` adapts ``metasr`` (a :class:`~metasr_adapter.MetaSR`) once per image and
    scores the SR after each count in ``steps``; ``method='zssr'`` runs ZSSR per image
    (``metasr`` may be None, give ``scale``) with ``zssr_config``; None = the 'kernel' preset for a blur
    kernel, else 'ideal_x2', both with ``kernel_shift=False`` (the LR images made by
    :func:`~metasr_adapter.ops.degrade.degrade` need no centring). Without ``lr_dir`` the LR images are synthesised
    from the GT with ``kernel``. PSNR/SSIM on Y, shaving ``crop_border`` (default: the scale). ``seed``: each
    adaptation's random draws (crops under ``max_pixels``; see :meth:`~metasr_adapter.MetaSR.start`).
    """
    if method not in ("metasr", "zssr"):
        raise ValueError(f"method={method!r}; use 'metasr' or 'zssr'")
    # None: the wrapper's own (the weights'; every SR here has its kernel given, none estimated)
    bp_used = back_projection if back_projection is not None else (
        metasr.back_projection if method == "metasr" and metasr is not None else 0)
    s = float(scale if scale is not None else metasr.scale)
    crop = int(s) if crop_border is None else int(crop_border)
    spec = resolve_kernel(kernel, ds_method)
    gts = list_images(gt_dir)
    lrs = list_images(lr_dir) if lr_dir is not None else None
    if lrs is not None and len(lrs) != len(gts):
        raise ValueError(f"{len(lrs)} LR images in {lr_dir} but {len(gts)} GT images in {gt_dir}; they pair by sorted name")
    if limit is not None:
        gts = gts[:limit]
        lrs = lrs[:limit] if lrs is not None else None
    steps = sorted({int(k) for k in steps})
    if method == "metasr" and (not steps or steps[0] < 0):
        raise ValueError(f"steps={steps} must be non-negative step counts, e.g. 0,1,10")
    columns: list[Column] = (["bicubic"] if include_bicubic else []) + (steps if method == "metasr" else ["zssr"])
    zcfg = zssr_config
    if method == "zssr" and zcfg is None:
        from ..zssr.core import ZSSRConfig, default_preset

        # LR images made by this package's degrade (synthesised here, or MZSR's test sets) are
        # aligned with the kernel as given, so ZSSR's kernel centring stays off
        zcfg = ZSSRConfig.preset(default_preset(spec), kernel_shift=False)
    rows: list[ImageResult] = []
    bar = tqdm(range(len(gts)), desc=f"eval {method}", unit="img", disable=not progress)
    for i in bar:
        gt_path = gts[i]
        gt = modcrop(read_image(gt_path), s)
        if gt.ndim == 3 and gt.shape[2] == 4:
            gt = gt[:, :, :3]
        lr_img = read_image(lrs[i]) if lrs is not None else synthesize_lr(gt, spec, s)
        row = ImageResult(gt_path.stem)
        t0 = time.perf_counter()
        if include_bicubic:
            x, _, fmt = to_tensor(lr_img, channels=lr_img.shape[2] if lr_img.ndim == 3 else 1)
            bic = to_uint8(imresize(x, s, output_shape=gt.shape[:2]).clamp(0, 1))
            bic = bic[..., 0] if gt.ndim == 2 else bic
            row.psnr["bicubic"], row.ssim["bicubic"] = _score(bic, gt, crop)
        if method == "metasr":
            session = metasr.start(lr_img, spec, schedule=schedule, lr=lr, seed=seed)
            for k in range(steps[-1] + 1):
                if k in steps:
                    sr = session.result(self_ensemble=self_ensemble, back_projection=bp_used)
                    row.psnr[k], row.ssim[k] = _score(sr, gt, crop)
                    if save_dir is not None:
                        write_image(Path(save_dir) / f"steps{k:02d}" / f"{gt_path.stem}.png", sr)
                if k < steps[-1]:
                    session.step()
        else:
            from ..zssr.core import zssr_super_resolve

            sr = zssr_super_resolve(lr_img, spec, s, zcfg)
            row.psnr["zssr"], row.ssim["zssr"] = _score(sr, gt, crop)
            if save_dir is not None:
                write_image(Path(save_dir) / "zssr" / f"{gt_path.stem}.png", sr)
        row.seconds = time.perf_counter() - t0
        rows.append(row)
        last = columns[-1]
        bar.set_postfix({f"psnr@{last}": f"{row.psnr[last]:.2f}"})
    settings = {
        "method": method, "gt_dir": str(gt_dir), "lr_dir": str(lr_dir) if lr_dir else None,
        "kernel": spec.name or ("bicubic" if spec.kernel is None else "custom"), "ds_method": spec.ds_method,
        "scale": s, "crop_border": crop, "steps": steps if method == "metasr" else None,
        "back_projection": bp_used, "self_ensemble": self_ensemble,
    }
    if method == "zssr":
        settings["zssr_config"] = zcfg.to_dict()
    return EvalReport(rows, columns, settings)
