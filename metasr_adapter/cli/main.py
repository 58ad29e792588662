"""The metasr command line: demo, adapt, eval, zssr, estimate-kernel, train, weights."""
from __future__ import annotations

import argparse
import sys
from typing import Any, Sequence

from .checks import DEFAULT_EVAL_STEPS, check_options, is_estimate, is_photo, many_inputs

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
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1... (default: cuda if available)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")


#: the command line's memory budget (the library's MetaSR has none unless asked): SR in 512² tiles, and
#: adaptation on 512x512-pixel crops of larger LR images; a 4000x3000 photo then peaks at ~3.5 GB
#: (benchmarks/bench_memory.py --modes cli)
DEFAULT_TILE = 512
DEFAULT_MAX_PIXELS = 512 * 512


def _memory_budget(args: argparse.Namespace, model, scale: float, upsample_input: bool) -> tuple[int | None, int | None]:
    """``(tile, max_pixels)`` for MetaSR: the flags as given (0 = off), else the defaults where they
    keep the result exact or are allowed (tiling needs a declared receptive radius and no global context;
    crops of networks that upsample themselves need an integer scale)."""
    tile, max_pixels = getattr(args, "tile", None), getattr(args, "max_pixels", None)
    if tile is None:
        local = getattr(model, "receptive_radius", None) is not None and not getattr(model, "global_context", False)
        tile = DEFAULT_TILE if local else None
    if max_pixels is None and (upsample_input or float(scale).is_integer()):
        max_pixels = DEFAULT_MAX_PIXELS
    return tile or None, max_pixels or None


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
                        "weights' own, 4 for mzsr_x2_direct_lslr_v2, else 0; never applied to an estimated kernel)")
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
    p.set_defaults(func=_cmd_adapt)

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


def _setup(args: argparse.Namespace):
    import torch

    from ..devices import resolve_device

    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads {args.threads}: give a positive number of CPU threads, e.g. --threads 2")
        torch.set_num_threads(args.threads)
    return resolve_device(args.device)


def _choose_weights(args: argparse.Namespace) -> tuple[str, dict, Any]:
    """The weights to load (``--weights``, or the bundled ones that fit the kernel), their metadata
    (scale, ds_method, schedule, loss; empty for files that carry none), and what ``load_model`` takes: the
    name, or for a file of the user's the :class:`~metasr_adapter.io.weights.WeightsFile` read here, once."""
    from ..ops.kernels import resolve_kernel
    from ..io.pretrained import BUNDLED_WEIGHTS, default_weights, list_weights
    from ..io.weights import open_weights, read_metadata

    weights = args.weights
    if weights is None:
        try:  # blind mode (--kernel estimate) models direct subsampling
            ds = "direct" if is_estimate(args.kernel) else (
                getattr(args, "kernel_spec", None) or resolve_kernel(args.kernel, args.ds_method)).ds_method
        except (ValueError, FileNotFoundError):
            ds = args.ds_method  # the kernel's own error comes later, with its context
        info = default_weights(args.arch or "mzsr", scale=args.scale, ds_method=ds, blind=is_estimate(args.kernel))
        known = default_weights(args.arch or "mzsr", scale=args.scale, ds_method=ds) if info is None else None
        if known is not None:  # blind mode, and only weights for a known kernel at this scale
            raise ValueError(f"no bundled weights estimate kernels at --scale {known.scale:g}: {known.name} is for a "
                             "known kernel (its sidecar says blind: false); give --kernel (e.g. gd2.0 or a .mat/.npy "
                             "file), or --weights PATH of your own")
        if info is None:
            have = ", ".join(list_weights()) or "none"
            raise ValueError(f"no bundled weights for --arch {args.arch or 'mzsr'}"
                             + (f" at --scale {args.scale:g}" if args.scale else "")
                             + f" (bundled: {have}); pass --weights PATH, or --weights random for an untrained network")
        weights = info.name
        if ds is not None and info.ds_method not in (None, ds):
            print(f"note: no bundled weights for {ds} subsampling at x{info.scale:g}; using {weights} (trained for "
                  f"{info.ds_method} subsampling: adaptation has more to correct). --weights PATH takes your own",
                  file=sys.stderr)
    if weights in BUNDLED_WEIGHTS:
        info = BUNDLED_WEIGHTS[weights]
        return weights, {**read_metadata(info.path), "scale": info.scale, "ds_method": info.ds_method,
                         "schedule": info.schedule, "loss": info.loss, "adapt_steps": info.adapt_steps}, weights
    if weights == "random":
        return weights, {}, weights
    if (args.arch or "").lower() == "spandrel":  # spandrel reads the checkpoint itself
        return weights, read_metadata(weights), weights
    loaded = open_weights(weights, param_key=args.param_key)
    return weights, loaded.metadata, loaded


def _load_metasr(args: argparse.Namespace):
    from .. import MetaSR
    from ..adapters import scale_kwargs
    from ..io.pretrained import load_model

    device = _setup(args)
    weights, meta, source = _choose_weights(args)
    args.weights_used, args.weights_meta = weights, meta
    trained_scale = meta.get("scale")
    given_scale = args.scale
    if args.scale is not None and trained_scale is not None and float(trained_scale) != float(args.scale):
        raise ValueError(f"--scale {args.scale:g} but the weights {weights!r} were trained for x{float(trained_scale):g}; "
                         f"use --scale {float(trained_scale):g} or weights trained for x{args.scale:g}")
    scale = float(args.scale if args.scale is not None else trained_scale or 2.0)
    args.scale = scale
    arch = args.arch or meta.get("arch") or "mzsr"
    if arch == "spandrel":  # the checkpoint carries its scale
        model = load_model("spandrel", weights).to(device)
        if given_scale is not None and float(given_scale) != model.scale:  # not the default 2 set above
            raise ValueError(f"--scale {given_scale:g} but spandrel detects a x{model.scale} {model.architecture} in "
                             f"{weights}; use --scale {model.scale} or leave it out")
        scale = args.scale = float(model.scale)
    else:
        model = load_model(args.arch, source, param_key=args.param_key,
                           arch_defaults=scale_kwargs(arch, scale), **(args.arch_kwargs or {})).to(device)
    if getattr(args, "lr", None) is not None:
        schedule = args.lr
    else:
        schedule = getattr(args, "schedule", None) or meta.get("schedule") or "mzsr_direct"
    loss = getattr(args, "loss", None) or meta.get("loss") or "l1"
    from ..adapters.contract import takes_upsampled_input

    tile, max_pixels = _memory_budget(args, model, scale, takes_upsampled_input(model))
    precision = args.precision_used = args.precision or _default_precision(args.command, device)
    return MetaSR(model, scale, schedule=schedule, precision=precision, device=device, loss=loss,
                  adapt_params=meta.get("adapt_params"), tile=tile, max_pixels=max_pixels)


def _steps_or_the_weights(args: argparse.Namespace) -> int:
    """``--steps``, else the count the loaded weights were meta-trained for (``adapt_steps``), else 1. Fewer
    steps than the weights were meta-trained for get a warning on stderr: such weights start far from the image."""
    meant = args.weights_meta.get("adapt_steps")
    if args.steps is not None and meant is not None and args.steps < int(meant):
        import warnings

        from ..adapt.metasr import too_few_steps

        print(f"metasr {args.command}: warning ({args.weights_used}): "
              + too_few_steps(int(meant), f"--steps {args.steps}", "--steps"), file=sys.stderr)
        warnings.filterwarnings("ignore", message="these weights were meta-trained for")  # said once, here
    return args.steps if args.steps is not None else int(meant or 1)


def _default_precision(command: str, device) -> str:
    """``--precision`` left out: bf16 where it is fast for ``adapt`` and ``demo`` (Table 2 cells within 0.04 dB of
    fp32, 1.8x faster: ``precision.auto_precision``); fp32 for ``eval`` and the rest, whose numbers are the
    exact arithmetic's."""
    from ..precision import auto_precision

    return auto_precision(device) if command in ("adapt", "demo") else "fp32"


def _photo_setup(args: argparse.Namespace):
    """The photo path's MetaSR (``--weights`` or the bundled photo weights), its grid and step count."""
    from ..io.pretrained import BUNDLED_WEIGHTS
    from ..pipelines.photo import PHOTO_MAX_PIXELS, PHOTO_STEPS, PHOTO_WEIGHTS, load_grid_specialists, photo_precision

    chosen = args.weights is None
    if chosen:  # the bundled photo weights, unless another architecture was asked for
        args.weights = next((w for w in PHOTO_WEIGHTS if w in BUNDLED_WEIGHTS
                             and args.arch in (None, BUNDLED_WEIGHTS[w].arch)), None)
    if args.max_pixels is None:
        args.max_pixels = PHOTO_MAX_PIXELS
    if args.precision is None:  # bf16 where it is fast (the output's first line says which ran)
        args.precision = photo_precision(args.device)
    msr = _load_metasr(args)
    # weights chosen here may hand a plain resize to the network trained for it; --weights X is used as given
    args.photo_specialists = (load_grid_specialists(device=msr.device, precision=msr.precision)
                              if chosen and args.weights in PHOTO_WEIGHTS else {})
    grid = args.ds_method or ("direct" if args.weights_meta.get("ds_method") == "direct" else "centred")
    if grid not in ("direct", "centred"):
        raise ValueError(f"--kernel photo with --ds-method {grid}: the photo path estimates the blur on a 'centred' "
                         "(photos) or 'direct' (MZSR-style) grid; a bicubic resize is among its centred candidates")
    steps = PHOTO_STEPS if args.steps is None else args.steps
    return msr, grid, steps


def _run_photo(msr, path, grid: str, steps: int, weights: str, *, show: bool, specialists=None, seed=None):
    """One photo through :func:`~metasr_adapter.pipelines.photo.upscale_photo` (JPEG quality from the file)."""
    from ..ops.imageio import read_image
    from ..ops.jpeg import read_jpeg_quality
    from ..pipelines.photo import upscale_photo

    bars: list = []
    if show:
        print(f"{path}: estimating the degradation, then {steps} adaptation step(s) and the held-out check")

    def on_step(rec) -> None:
        if not show:
            return
        if not bars:  # made at the first step, so that its rate leaves the estimate out
            from tqdm.auto import tqdm

            bars.append(tqdm(total=steps, desc="adapt", unit="step"))
        bars[0].update(1)
        bars[0].set_postfix(loss=f"{rec.loss:.5f}")

    sr, info = upscale_photo(read_image(path), msr, steps=steps, jpeg_quality=read_jpeg_quality(path), grid=grid,
                             weights_name=weights, specialists=specialists, callback=on_step, return_info=True,
                             **({} if seed is None else {"seed": seed}))
    for bar in bars:
        bar.close()
    return sr, info


def _orientation_note(path) -> str | None:
    """A line saying that the input was turned upright by its EXIF orientation (None when it is stored upright)."""
    from ..ops.imageio import exif_orientation

    turn = exif_orientation(path)
    return None if turn == 1 else (f"{path}: turned upright by its EXIF orientation ({turn}), as viewers show it; "
                                   f"the output is stored upright, without the tag")


def _cmd_adapt(args: argparse.Namespace) -> int:
    from ..ops.imageio import read_icc_profile, read_image, write_image

    if args.kernel is None:
        args.kernel = "photo"
    if many_inputs(args.lr_image):
        return _cmd_adapt_folder(args)
    note = _orientation_note(args.lr_image)
    if note and not args.quiet:
        print(note)
    if is_photo(args.kernel):
        msr, grid, steps = _photo_setup(args)
        sr, info = _run_photo(msr, args.lr_image, grid, steps, args.weights_used, show=not args.quiet,
                              specialists=args.photo_specialists, seed=args.seed)
        for line in info.summary_lines():
            print(line)
        out = write_image(args.output, sr, icc_profile=read_icc_profile(args.lr_image))
        print(f"wrote {out} ({sr.shape[1]}x{sr.shape[0]}) in {info.seconds:.1f} s")
        return 0
    msr = _load_metasr(args)
    args.steps = _steps_or_the_weights(args)
    lr_img = read_image(args.lr_image)
    kernel = getattr(args, "kernel_spec", None) or args.kernel  # parsed once, in check_options (cli/checks.py)
    if is_estimate(kernel):  # blind mode: estimate with the wrapper's own network, shown with a progress bar
        from ..estimate.api import estimate_for_metasr

        kernel, est = estimate_for_metasr(msr, lr_img, args.ds_method, seed=args.seed, progress=not args.quiet)
        print(f"estimated kernel: {est.summary()}")
    from tqdm.auto import tqdm

    bar = tqdm(total=args.steps, desc="adapt", unit="step", disable=args.steps == 0 or args.quiet)

    def on_step(rec) -> None:
        bar.update(1)
        bar.set_postfix(loss=f"{rec.loss:.5f}", lr=f"{rec.lr:g}")

    sr, info = msr.adapt(lr_img, kernel, args.steps, ds_method=args.ds_method, callback=on_step, seed=args.seed,
                         back_projection=args.back_projection, self_ensemble=args.self_ensemble, return_info=True)
    bar.close()
    out = write_image(args.output, sr, icc_profile=read_icc_profile(args.lr_image))
    print(f"wrote {out} ({sr.shape[1]}x{sr.shape[0]}) after {args.steps} step(s) in {info.seconds:.2f} s, "
          f"{msr.precision}" + (" (bf16 where it is fast; --precision fp32 for exact arithmetic)"
                                if args.precision is None and msr.precision == "bf16" else ""))
    return 0


def _cmd_estimate_kernel(args: argparse.Namespace) -> int:
    from ..estimate.api import estimate_kernel
    from ..ops.imageio import read_image

    lr_img = read_image(args.lr_image)
    options = {}
    if args.estimator == "gaussian":
        model = _load_metasr(args)
        if args.evals is not None:
            options["max_evals"] = args.evals
    else:
        model = None
        options["device"] = _setup(args)  # --precision: refused by check_options unless fp32
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


def _cmd_adapt_folder(args: argparse.Namespace) -> int:
    from ..adapt.batch import adapt_folder, expand_inputs

    files = expand_inputs(args.lr_image)  # a pattern matching nothing fails before the model loads
    if is_photo(args.kernel):
        msr, grid, steps = _photo_setup(args)

        def run_one(path):
            sr, info = _run_photo(msr, path, grid, steps, args.weights_used, show=False,
                                  specialists=args.photo_specialists, seed=args.seed)
            return sr, info.to_dict()

        outcomes = adapt_folder(msr, files, args.output, kernel="photo", steps=steps, run_one=run_one,
                                settings=_folder_settings(args, grid=grid), flag="-o", progress=not args.quiet)
    else:
        msr = _load_metasr(args)
        args.steps = _steps_or_the_weights(args)
        seed = {} if args.seed is None else {"seed": args.seed}
        outcomes = adapt_folder(msr, files, args.output, kernel=args.kernel, steps=args.steps,
                                ds_method=args.ds_method, back_projection=args.back_projection,
                                self_ensemble=args.self_ensemble, settings=_folder_settings(args), flag="-o",
                                progress=not args.quiet, kernel_spec=getattr(args, "kernel_spec", None), **seed)
    done = [o for o in outcomes if o.status == "done"]
    skipped = [o for o in outcomes if o.status == "skipped"]
    failed = [o for o in outcomes if o.status == "failed"]
    print(f"{len(done)} written, {len(skipped)} skipped (already in {args.output}), {len(failed)} failed")
    for o in failed:
        print(f"  failed: {o.source}: {o.error}", file=sys.stderr)
    return 1 if failed else 0


def _folder_settings(args: argparse.Namespace, **extra) -> dict:
    """The settings a folder run records in its sidecars (with the kernel, steps and adapt options), so that a
    re-run skips only outputs made the same way: the weights (a file by its content too) and the options that
    change the result (device, threads and tiling do not)."""
    from pathlib import Path

    from ..adapt.batch import file_fingerprint
    from ..io.pretrained import BUNDLED_WEIGHTS

    weights = args.weights_used
    if weights not in BUNDLED_WEIGHTS and weights != "random" and Path(weights).is_file():
        weights = file_fingerprint(weights)
    return {"weights": weights, "arch": args.arch, "arch_kwargs": args.arch_kwargs, "param_key": args.param_key,
            "scale": args.scale, "precision": getattr(args, "precision_used", None) or args.precision or "fp32",
            "schedule": args.schedule, "lr": args.lr,
            "loss": args.loss, "max_pixels": args.max_pixels,
            **({} if args.seed is None else {"seed": args.seed}), **extra}


def _cmd_eval(args: argparse.Namespace) -> int:
    from ..pipelines.evaluate import evaluate_folder

    if args.method == "metasr":
        msr, scale, zcfg = _load_metasr(args), None, None
    else:
        from ..zssr.core import ZSSRConfig

        msr, scale = None, args.scale or 2.0
        from ..ops.kernels import resolve_kernel
        from ..zssr.core import default_preset

        preset = args.zssr_preset or default_preset(resolve_kernel(args.kernel, args.ds_method))
        zcfg = ZSSRConfig.preset(preset, kernel_shift=args.kernel_shift, precision=args.precision or "fp32",
                                 device=str(_setup(args)), **({} if args.seed is None else {"seed": args.seed}))
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
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo, run_photo_demo

    from ..io.pretrained import BUNDLED_WEIGHTS

    if args.kernel is None or is_photo(args.kernel):  # the default: a web JPEG through the photo path
        if not 1 <= args.quality <= 100:
            raise ValueError(f"--quality {args.quality}: a JPEG quality is 1..100 (75 is libjpeg's default)")
        msr, _, steps = _photo_setup(args)
        return run_photo_demo(msr, args.weights_used, image=args.image, quality=args.quality, steps=steps,
                              output=args.output, specialists=args.photo_specialists)
    if args.steps is None:
        args.steps = 10

    msr = _load_metasr(args)
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
    import os

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
