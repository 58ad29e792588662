"""``metasr zssr``: its arguments, the run, and the stand-alone entry point (``python -m metasr_adapter.cli.zssr``).

ZSSR itself is :mod:`metasr_adapter.zssr.core`.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from typing import Any, Sequence

import numpy as np

from ..precision import PRECISIONS
from ..zssr import core as zssr_core
from ..zssr.core import PRESETS, ZSSR, ZSSRConfig, default_preset, scale_pair

__all__ = ["add_zssr_arguments", "add_kernel_shift_argument", "run_zssr_cli", "zssr_main"]

_DESCRIPTION = (zssr_core.__doc__ or "").split("\n")[0]


def add_zssr_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``metasr zssr`` arguments to ``parser``."""
    parser.add_argument("lr_image", help="the LR image to super-resolve")
    parser.add_argument("--kernel", default=None,
                        help="downscaling kernel: a .mat (key 'Kernel'/'kernel') or .npy file, a name (gd2.0...), "
                             "'bicubic' (default: bicubic, the ideal case), or 'estimate' (blind mode: estimate it "
                             "from the image first, x2 only; see --estimator)")
    parser.add_argument("--estimator", choices=("gaussian", "kernelgan"), default=None,
                        help="with --kernel estimate only: 'gaussian' (the default; a search scored by the bundled "
                             "MZSR weights) or 'kernelgan' (internal GAN, no network needed)")
    parser.add_argument("--scale", type=float, default=2.0, help="SR factor (default 2)")
    parser.add_argument("-o", "--output", required=True, help="SR image to write")
    parser.add_argument("--preset", default=None, choices=sorted(PRESETS),
                        help="settings: ideal_x2, gradual_x2, kernel, real, fast "
                             "(default: kernel when --kernel is given, else ideal_x2)")
    parser.add_argument("--iters", type=int, default=None, help="iteration cap per scale stage (default 3000)")
    parser.add_argument("--noise", type=float, default=None, help="std of the noise added to the LR sons (0-1 scale)")
    parser.add_argument("--back-projection", type=int, default=None, metavar="N",
                        help="back-projection iterations (default: the preset's)")
    parser.add_argument("--precision", choices=list(PRECISIONS), default="fp32",
                        help="bf16 = autocast + channels_last (only fast on GPUs and CPUs with AMX/AVX512-BF16)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--gt", default=None, help="ground-truth HR image: print the Y-PSNR of the result")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1... (default: cuda if available)")
    add_kernel_shift_argument(parser)
    if not any(a.dest == "threads" for a in parser._actions):
        parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def add_kernel_shift_argument(parser: argparse.ArgumentParser, *aliases: str) -> None:
    """The one command-line switch for ZSSR's kernel centring, ``--kernel-shift`` (``metasr zssr``, ``metasr eval
    --method zssr``; ``aliases``: old spellings still accepted, e.g. eval's ``--zssr-kernel-shift``); dest
    ``kernel_shift``, off by default.

    Off: LR images made by this package's degrade (and MZSR's test sets) are aligned with their kernel,
    and centring them costs dB (29.01 against 32.57 on a degrade-made image). On: LR images made by
    ZSSR's own resizer (the official ZSSR examples), as the official code always does.
    """
    old = f" ({', '.join(aliases)}: the old spelling, still accepted)" if aliases else ""
    parser.add_argument("--kernel-shift", *aliases, dest="kernel_shift", action="store_true",
                        help="centre the kernel as the official ZSSR does: for LR images made by ZSSR's own resizer "
                             "(its examples); off for LR made by this package's degrade or MZSR's test sets" + old)


def run_zssr_cli(args: argparse.Namespace) -> int:
    """Run ``metasr zssr`` with parsed ``args``; returns the exit code."""
    import torch

    from ..devices import resolve_device
    from ..ops.imageio import read_icc_profile, read_image, write_image
    from ..ops.metrics import psnr

    src, dst = args.lr_image, args.output
    if os.path.isfile(src) and os.path.exists(dst) and os.path.samefile(src, dst):  # never overwrite the input
        from pathlib import Path

        other = Path(dst).with_name(Path(dst).stem + "_sr" + Path(dst).suffix)
        raise ValueError(f"-o/--output {dst} is the input image {src} itself: the result would overwrite it; give "
                         f"another output name, e.g. -o {other}")
    if getattr(args, "threads", None):
        torch.set_num_threads(int(args.threads))
    device = str(resolve_device(args.device))
    lr_img = read_image(args.lr_image)
    kernel = args.kernel
    if isinstance(kernel, str) and kernel.strip().lower() == "estimate":  # blind mode
        from ..estimate.api import estimate_kernel

        est = estimate_kernel(lr_img, args.scale, getattr(args, "estimator", None) or "gaussian", progress=not args.quiet,
                              seed=args.seed, device=device)  # on --device, as ZSSR itself
        print(f"estimated kernel: {est.summary()}")
        kernel = est.require_converged().to_spec()
    preset = args.preset or default_preset(kernel)
    overrides: dict[str, Any] = {"precision": args.precision, "seed": args.seed, "device": device,
                                 "kernel_shift": bool(args.kernel_shift)}
    if args.iters is not None:
        overrides["max_iters"] = args.iters
    if args.noise is not None:
        overrides["noise_std"] = args.noise
    if args.back_projection is not None:
        overrides["back_projection_iters"] = args.back_projection
    cfg = ZSSRConfig.preset(preset, **overrides)
    gt = read_image(args.gt) if args.gt else None
    sr, info = ZSSR(cfg).run(lr_img, kernel, args.scale, progress=not args.quiet, return_info=True)
    out = write_image(args.output, sr, icc_profile=read_icc_profile(args.lr_image))
    per_stage = ", ".join(f"x{s['scale'][0]:g}: {s['iterations']} it" for s in info.stages)
    print(f"wrote {out} ({sr.shape[1]}x{sr.shape[0]}) with preset {preset!r} in {info.seconds:.1f} s "
          f"({per_stage}; {info.iters_per_second:.2f} it/s)")
    if gt is not None:
        sr_cmp, gt_cmp = _match_gt(sr, gt)
        border = int(math.ceil(max(scale_pair(args.scale))))
        value = psnr(sr_cmp, gt_cmp, crop_border=border)
        base = psnr(_match_gt(_bicubic_baseline(lr_img, args.scale, sr.shape[:2]), gt)[0], gt_cmp, crop_border=border)
        print(f"PSNR vs GT (Y, shave {border}): ZSSR {value:.2f} dB, bicubic {base:.2f} dB")
    return 0


def _match_gt(sr: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Crop SR and GT to their common top-left extent (GT sizes often are not multiples of the scale)."""
    if gt.ndim == 3 and gt.shape[2] == 4:
        gt = gt[:, :, :3]
    if sr.ndim != gt.ndim:
        raise ValueError(f"SR is {sr.shape} but GT is {gt.shape}: give an RGB GT for an RGB image (or both gray)")
    hh, ww = min(sr.shape[0], gt.shape[0]), min(sr.shape[1], gt.shape[1])
    if abs(sr.shape[0] - gt.shape[0]) > 4 or abs(sr.shape[1] - gt.shape[1]) > 4:
        raise ValueError(f"SR size {sr.shape[:2]} and GT size {gt.shape[:2]} differ by more than the scale allows")
    return sr[:hh, :ww], gt[:hh, :ww]


def _bicubic_baseline(lr_img: np.ndarray, scale: Any, out_hw: tuple[int, int]) -> np.ndarray:
    """MATLAB-bicubic upsampling of ``lr_img`` to ``out_hw``, in the input's format."""
    from ..ops.degrade import imresize
    from ..ops.imageio import to_tensor

    x, alpha, fmt = to_tensor(lr_img, channels=3)
    up = imresize(x, scale_pair(scale), output_shape=out_hw).clamp(0, 1)
    return fmt.restore(up, None if alpha is None else imresize(alpha, scale_pair(scale), output_shape=out_hw))


def zssr_main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone ``metasr zssr`` (``python -m metasr_adapter.cli.zssr LR.png -o SR.png``)."""
    parser = add_zssr_arguments(argparse.ArgumentParser(prog="metasr zssr", description=_DESCRIPTION))
    args = parser.parse_args(argv)
    try:
        return run_zssr_cli(args)
    except (ValueError, FileNotFoundError, TypeError) as exc:
        print(f"metasr zssr: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(zssr_main())
