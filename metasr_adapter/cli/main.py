"""The metasr command line: demo, adapt, eval, zssr, estimate-kernel, train, weights."""
from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from .adapt import photo_setup, run_adapt
from .checks import DEFAULT_EVAL_STEPS, check_options, is_photo, many_inputs
from .loading import DEFAULT_MAX_PIXELS, DEFAULT_TILE, load_metasr, setup_device

__all__ = ["main", "build_parser"]


def _steps_list(text: str) -> list[int]:
    try:
        steps = sorted({int(t) for t in text.split(",") if t.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"--steps {text!r}: give comma-separated integers, e.g. 0,1,10") from None
    if not steps or steps[0] < 0:
        raise argparse.ArgumentTypeError(f"--steps {text!r}: step counts must be >= 0")
    return steps


def _json_object(text: str) -> dict:
    import json

    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc.msg}): {text!r}; e.g. '{{\"num_block\": 16}}'") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object like '{{\"num_block\": 16}}'; got {text!r}")
    return value


def _add_model_args(p: argparse.ArgumentParser, weights_required: bool) -> None:
    p.add_argument("--weights", required=weights_required, default=None,
                   help="weights: a bundled name (`metasr weights` lists them), a TensorFlow checkpoint prefix, "
                        ".pth/.pt or .npz; 'random' for an untrained network"
                        + ("" if weights_required else " (default: the bundled weights that fit the kernel and "
                                                        "--scale; `metasr weights` says which file each case loads)"))
    p.add_argument("--arch", default=None,
                   help="network architecture: mzsr, rcan, idn... (metasr_adapter.list_models(); default: the one saved "
                        "with the weights, else mzsr); spandrel: detect it from a community checkpoint")
    p.add_argument("--arch-kwargs", type=_json_object, default=None, metavar="JSON",
                   help='constructor arguments of the architecture, e.g. \'{"num_block": 16}\' for a BasicSR RCAN '
                        "(default: those saved with the weights; the SR factor comes from --scale)")
    p.add_argument("--param-key", default="auto", help="key inside .pth files: params, params_ema or auto")
    p.add_argument("--scale", type=float, default=None, help="SR factor (default: the weights' own, else 2)")
    from ..precision import PRECISIONS

    p.add_argument("--precision", choices=list(PRECISIONS), default=None,
                   help="bf16 = autocast (fast on GPUs and CPUs with AVX512-BF16 or AMX). Default: bf16 where it is "
                        "fast for adapt and demo (the photo path too), else fp32; always fp32 for eval, zssr and "
                        "estimate-kernel")
    p.add_argument("--conv-algorithm", choices=["direct", "winograd"], default=None,
                   help="how the network's fp32 3x3 convolutions compute on CPU: direct (default, oneDNN) or winograd "
                        "(the package's Winograd kernels, built on first use with g++: about half the time of an "
                        "MZSR adaptation step, ~1e-5 relative round-off; makes fp32 the default precision)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1... (default: cuda if available)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")


def _add_run_args(p: argparse.ArgumentParser, seed_help: str) -> None:
    """``--seed`` and ``--quiet``, the same in every subcommand."""
    p.add_argument("--seed", type=int, default=None, help=seed_help)
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_adapt_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kernel", default=None,
                   help="blur kernel of the LR image: gd0.2, gd2.0, gdani, gb1.3, bicubic, a .mat/.npy file, "
                        "'estimate' (metasr adapt only: estimate it first, blind mode) or 'photo' (metasr adapt "
                        "only: estimate the whole degradation, adapt, keep the adaptation only if a held-out part "
                        "of the image confirms it). Default: 'photo' for metasr adapt, gd2.0 elsewhere")
    from ..ops.kernels import DS_METHODS

    p.add_argument("--ds-method", choices=list(DS_METHODS), default=None,
                   help="subsampling after the blur (default: the named kernel's, else direct; with --kernel photo: "
                        "the grid the photo path assumes, centred unless the weights were trained on direct)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--schedule", default=None,
                   help="adaptation LR schedule: mzsr_direct, mzsr_bicubic, mzsr_multiscale, mzsr_x4 "
                        "(default: the one the weights were meta-trained for, else mzsr_direct)")
    g.add_argument("--lr", type=float, default=None, help="constant adaptation learning rate instead of a schedule")
    p.add_argument("--loss", choices=["l1", "l2"], default=None,
                   help="self-supervised adaptation loss: l1 (MZSR) or l2 (MLSR) (default: the weights' own, else l1)")
    p.add_argument("--back-projection", type=int, default=None, metavar="N",
                   help="back-projection iterations after SR with the given kernel (SPEC §7; 0 = off; default: the "
                        "weights' own, 4 for mzsr_x2_direct_lslr_v3, else 0; never applied to an estimated kernel)")
    p.add_argument("--tile", type=int, default=None, metavar="N",
                   help=f"compute the SR image in N x N tiles (bounded memory; same result for local networks; default "
                        f"{DEFAULT_TILE} for networks that declare their receptive radius; 0 = whole image)")
    p.add_argument("--max-pixels", type=int, default=None, metavar="N",
                   help=f"adaptation steps on LR images above N pixels train on random N-pixel crops (bounded memory; "
                        f"default {DEFAULT_MAX_PIXELS} = 512x512; a full-image step on a 1024x1024 LR image peaked at "
                        "3.5 GB; 0 = always the whole image)")
    p.add_argument("--self-ensemble", action="store_true", help="median over the 8 flips/rotations")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="metasr", description=__doc__)
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", help="degrade a bundled photo, adapt, write a side-by-side PNG, print PSNR per step")
    _add_model_args(p, weights_required=False)
    _add_adapt_args(p)
    p.add_argument("--steps", type=int, default=None, help="adaptation steps (default: 5 on the photo path, else 10)")
    p.add_argument("--image", default=None, help="a HR image to use instead of the bundled photo")
    p.add_argument("--quality", type=int, default=75, help="JPEG quality of the photo demo's web JPEG (default 75)")
    p.add_argument("-o", "--output", default="metasr_demo.png", help="PNG of labelled crops to write")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("adapt", help="adapt to one LR image and write its SR image")
    p.add_argument("lr_image", help="the LR image, or a folder / quoted glob of LR images (then -o is a folder)")
    _add_model_args(p, weights_required=False)
    _add_adapt_args(p)
    p.add_argument("--steps", type=int, default=None,
                   help="adaptation steps (default: 5 on the photo path, else the count the weights were "
                        "meta-trained for, else 1)")
    p.add_argument("-o", "--output", required=True,
                   help="SR image to write; for a folder or glob of inputs, the output folder (images already "
                        "there are skipped, so a killed run resumes; a NAME.png.json sidecar per image)")
    _add_run_args(p, "random seed of the kernel estimate, adaptation crops and the photo path's draws "
                     "(default: their fixed defaults)")
    p.set_defaults(func=run_adapt)

    p = sub.add_parser("eval", help="PSNR/SSIM over a folder at several step counts")
    p.add_argument("--gt-dir", required=True, help="folder of HR ground-truth images")
    p.add_argument("--lr-dir", default=None, help="folder of LR images (default: synthesised from GT with --kernel)")
    p.add_argument("--method", choices=["metasr", "zssr"], default="metasr",
                   help="the SR method: metasr (adapt the weights; the default) or zssr (a network trained on each "
                        "image). The kernel estimator is --estimator (metasr zssr, metasr estimate-kernel)")
    _add_model_args(p, weights_required=False)
    _add_adapt_args(p)
    p.add_argument("--steps", type=_steps_list, default=None,
                   help=f"comma-separated step counts (default {','.join(map(str, DEFAULT_EVAL_STEPS))}; --method metasr)")
    p.add_argument("--crop-border", type=int, default=None, help="pixels shaved before scoring (default: the scale)")
    p.add_argument("--bicubic", action="store_true", help="also score plain bicubic upsampling")
    p.add_argument("--limit", type=int, default=None, help="only the first N images")
    p.add_argument("--zssr-preset", default=None,
                   help="ZSSR preset for --method zssr (default: kernel when --kernel is a blur kernel, else ideal_x2)")
    from .zssr import add_kernel_shift_argument

    add_kernel_shift_argument(p, "--zssr-kernel-shift")  # the old spelling, still accepted
    p.add_argument("--zssr-iters", type=int, default=None, help="ZSSR iteration cap for --method zssr")
    p.add_argument("--json", default=None, help="write the full report as JSON")
    p.add_argument("--plot", default=None, metavar="PNG",
                   help="also draw the mean PSNR against the step count (bicubic's as a line with --bicubic)")
    p.add_argument("--save-dir", default=None, help="write the SR images here")
    _add_run_args(p, "random seed of ZSSR (--method zssr; default 0) and of the adaptation's crops")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("zssr", help="zero-shot SR: train an image-specific network on the LR image itself")
    from .zssr import add_zssr_arguments, run_zssr_cli

    add_zssr_arguments(p)
    p.set_defaults(func=run_zssr_cli)

    p = sub.add_parser("estimate-kernel", help="estimate the blur kernel of an LR image (blind mode) and write it")
    p.add_argument("lr_image", help="the LR image")
    p.add_argument("-o", "--output", required=True, help="kernel file to write: .mat (key 'kernel') or .npy")
    p.add_argument("--estimator", "--method", dest="estimator", choices=["gaussian", "kernelgan"], default="gaussian",
                   help="gaussian: search the anisotropic Gaussian family, scored by the meta-trained network "
                        "(default); kernelgan: an internal GAN in the manner of KernelGAN (any kernel shape). "
                        "The spelling of `metasr zssr --estimator`; --method is the old one, still accepted")
    p.add_argument("--plot", default=None, metavar="PNG", help="also write a picture of the kernel")
    p.add_argument("--json", default=None, help="also write the estimate and its diagnostics as JSON")
    p.add_argument("--evals", type=int, default=None, metavar="N", help="gaussian: candidate kernels scored (default 40)")
    p.add_argument("--kernelgan-iters", dest="iters", type=int, default=None, metavar="N",
                   help="kernelgan: its GAN's training iterations (default 500). `--iters` is the old spelling, still "
                        "accepted; elsewhere --iters / --zssr-iters count ZSSR's iterations")
    p.add_argument("--iters", dest="iters", type=int, default=None, help=argparse.SUPPRESS)
    _add_run_args(p, "random seed of the crops and the initialisation (default 0)")
    _add_model_args(p, weights_required=False)
    p.set_defaults(func=_cmd_estimate_kernel, kernel="estimate", ds_method="direct")

    p = sub.add_parser("train", help="pretrain -> meta-train -> evaluate, driven by a recipe YAML")
    from .train import add_train_arguments, run_train_cli

    add_train_arguments(p)
    p.set_defaults(func=run_train_cli)

    p = sub.add_parser("weights", help="list the bundled weights and what each is the default for; NAME: its model card")
    from .weights import add_weights_arguments, run_weights_cli

    add_weights_arguments(p)
    p.set_defaults(func=run_weights_cli)
    return parser


def _version() -> str:
    from .. import __version__

    return f"metasr {__version__}"


def _cmd_estimate_kernel(args: argparse.Namespace) -> int:
    from ..estimate.api import estimate_kernel
    from ..ops.imageio import read_image

    lr_img = read_image(args.lr_image)
    options = {}
    if args.estimator == "gaussian":
        model = load_metasr(args)
        if args.evals is not None:
            options["max_evals"] = args.evals
    else:
        model = None
        options["device"] = setup_device(args)  # --precision: refused by check_options unless fp32
        if args.iters is not None:
            options["iters"] = args.iters
    est = estimate_kernel(lr_img, args.scale or 2, args.estimator, model=model, progress=not args.quiet,
                          seed=0 if args.seed is None else args.seed,
                          **options)
    out = est.save(args.output)
    print(f"estimated kernel: {est.summary()}")
    print(f"wrote {out}")
    if args.plot:
        from ..estimate.plot import plot_kernel

        print(f"wrote {plot_kernel(est.kernel, args.plot, est.summary())}")
    if args.json:
        import json

        from ..atomic import atomic_write_bytes

        atomic_write_bytes(args.json, (json.dumps(est.to_dict(), indent=1) + "\n").encode())
        print(f"wrote {args.json}")
    if not est.converged:
        print(f"metasr estimate-kernel: warning: the estimate did not converge ({est.reason}); {out} holds it for "
              "inspection only: check it (--plot) before passing it to adapt, or try the other --estimator", file=sys.stderr)
        return 1
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from ..pipelines.evaluate import evaluate_folder

    if args.method == "metasr":
        msr, scale, zcfg = load_metasr(args), None, None
    else:
        from ..zssr.core import ZSSRConfig

        msr, scale = None, args.scale or 2.0
        from ..ops.kernels import resolve_kernel
        from ..zssr.core import default_preset

        preset = args.zssr_preset or default_preset(resolve_kernel(args.kernel, args.ds_method))
        zcfg = ZSSRConfig.preset(preset, kernel_shift=args.kernel_shift, precision=args.precision or "fp32",
                                 device=str(setup_device(args)), **({} if args.seed is None else {"seed": args.seed}))
        if args.zssr_iters is not None:
            zcfg.max_iters = args.zssr_iters
    report = evaluate_folder(
        msr, args.gt_dir, lr_dir=args.lr_dir, kernel=args.kernel, steps=args.steps, schedule=None,
        ds_method=args.ds_method, crop_border=args.crop_border, include_bicubic=args.bicubic,
        back_projection=args.back_projection, self_ensemble=args.self_ensemble, limit=args.limit,
        method=args.method, zssr_config=zcfg, scale=scale, save_dir=args.save_dir, seed=args.seed,
        progress=not args.quiet,
    )
    print(report.format_table())
    if args.json:
        report.save_json(args.json)
        print(f"wrote {args.json}")
    if args.plot:
        from ..training.plots import psnr_vs_steps

        mean = report.mean_psnr
        curve = {k: v for k, v in mean.items() if isinstance(k, int)}
        name = os.path.basename(str(args.weights_used))
        st = report.settings
        title = f"{os.path.basename(os.path.normpath(args.gt_dir))}, kernel {st['kernel']} ({st['ds_method']}), x{st['scale']:g}"
        print(f"wrote {psnr_vs_steps({name: curve}, args.plot, title=title, baseline=mean.get('bicubic'))}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo, run_photo_demo

    from ..io.pretrained import BUNDLED_WEIGHTS

    if args.kernel is None or is_photo(args.kernel):  # the default: a web JPEG through the photo path
        if not 1 <= args.quality <= 100:
            raise ValueError(f"--quality {args.quality}: a JPEG quality is 1..100 (75 is libjpeg's default)")
        msr, _, steps = photo_setup(args)
        return run_photo_demo(msr, args.weights_used, image=args.image, quality=args.quality, steps=steps,
                              output=args.output, specialists=args.photo_specialists)
    if args.steps is None:
        args.steps = 10

    msr = load_metasr(args)
    used = args.weights_used
    if used in BUNDLED_WEIGHTS:
        print(f"weights: {used} (bundled; model card: {BUNDLED_WEIGHTS[used].model_card})")
    else:
        print(f"weights: {used}")
    return run_demo(msr, image=args.image, kernel=args.kernel, ds_method=args.ds_method, steps=args.steps,
                    output=args.output, back_projection=args.back_projection, self_ensemble=args.self_ensemble)


def _close_progress_bars() -> None:
    """End any open tqdm bar's line, so that a message printed now starts on a line of its own."""
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        return
    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


def main(argv: Sequence[str] | None = None) -> int:
    from ..allocator import retain_from_environment
    from ..errors import USER_ERRORS

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        # keep freed activations for the next adaptation step instead of page-faulting them in again
        # (metasr_adapter/allocator.py: 0.92x the step time, 0.78x the 512x512 SR forward on an AVX-512 EPYC)
        retain_from_environment()
        check_options(args)
        return int(args.func(args) or 0)
    except USER_ERRORS as exc:
        # the user's mistake: one clear line, exit 2 (METASR_DEBUG=1 shows the traceback); bugs keep theirs
        if os.environ.get("METASR_DEBUG"):
            raise
        _close_progress_bars()
        print(f"metasr {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: one line and the shell's 130 (128 + SIGINT), as `metasr train` does
        if os.environ.get("METASR_DEBUG"):
            raise
        _close_progress_bars()
        print(f"metasr {args.command}: {_interrupted_message(args)}", file=sys.stderr)
        return 130


def _interrupted_message(args: argparse.Namespace) -> str:
    """What a Ctrl-C left behind, and how to go on (outputs are written atomically: never half a file)."""
    if args.command == "adapt" and many_inputs(args.lr_image):
        return (f"interrupted; the images finished so far are in {args.output}: run the same command again to "
                "resume (they are skipped)")
    if args.command in ("adapt", "zssr", "demo", "estimate-kernel"):
        return f"interrupted; nothing was written to {args.output}"
    if args.command == "train":
        return "interrupted; --resume continues from the last checkpoint"
    return "interrupted"


if __name__ == "__main__":
    sys.exit(main())
