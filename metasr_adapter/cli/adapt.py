"""``metasr adapt``: one LR image, or a folder / glob of them, through the photo path (the default) or adaptation
to a given or estimated kernel."""
from __future__ import annotations

import argparse
import os
import sys

from .checks import is_estimate, is_photo, many_inputs
from .loading import conv_algorithm_of, load_metasr, steps_or_the_weights

__all__ = ["run_adapt", "run_adapt_folder", "photo_setup", "run_photo", "folder_settings", "orientation_note"]


def photo_setup(args: argparse.Namespace):
    """The photo path's MetaSR (``--weights`` or the bundled photo weights), its grid and step count."""
    from ..pipelines.photo import (PHOTO_MAX_PIXELS, PHOTO_STEPS, PHOTO_WEIGHTS, default_photo_weights,
                                   load_grid_specialists, photo_precision)

    chosen = args.weights is None
    if chosen:  # the bundled photo weights, unless another architecture was asked for
        args.weights = default_photo_weights(args.arch)
        if args.weights is not None and args.scale is not None:
            _check_photo_scale(args.weights, float(args.scale))
    if args.max_pixels is None:
        args.max_pixels = PHOTO_MAX_PIXELS
    if args.precision is None:  # bf16 where it is fast, fp32 for Winograd (the output's first line says which ran)
        args.precision = "fp32" if conv_algorithm_of(args) == "winograd" else photo_precision(args.device)
    msr = load_metasr(args)
    # weights chosen here may hand a plain resize to the network trained for it; --weights X is used as given
    args.photo_specialists = (load_grid_specialists(device=msr.device, precision=msr.precision,
                                                    conv_algorithm=msr.conv_algorithm)
                              if chosen and args.weights in PHOTO_WEIGHTS else {})
    grid = args.ds_method or ("direct" if args.weights_meta.get("ds_method") == "direct" else "centred")
    if grid not in ("direct", "centred"):
        raise ValueError(f"--kernel photo with --ds-method {grid}: the photo path estimates the blur on a 'centred' "
                         "(photos) or 'direct' (MZSR-style) grid; a bicubic resize is among its centred candidates")
    steps = PHOTO_STEPS if args.steps is None else args.steps
    return msr, grid, steps


def _check_photo_scale(weights: str, scale: float) -> None:
    """ValueError when the photo path's bundled weights are not of ``--scale``, naming the bundled weights that are
    (they adapt to a kernel the user gives) or saying that none is."""
    from ..io.pretrained import BUNDLED_WEIGHTS

    have = float(BUNDLED_WEIGHTS[weights].scale)
    if have == scale:
        return
    at_scale = [w.name for w in BUNDLED_WEIGHTS.values() if float(w.scale) == scale]
    advice = (f"at x{scale:g} the bundled {', '.join(at_scale)} {'adapts' if len(at_scale) == 1 else 'adapt'} to a "
              f"blur kernel you give instead "
              f"(--kernel gd2.0, or a .mat/.npy file; `metasr weights` lists what each is for)" if at_scale else
              f"no bundled weights are x{scale:g}: pass --weights PATH of your own, or leave --scale out")
    raise ValueError(f"--scale {scale:g}: the photo path's weights ({weights}) are x{have:g} only; {advice}")


def run_photo(msr, path, grid: str, steps: int, weights: str, *, show: bool, specialists=None, seed=None, image=None):
    """One photo through :func:`~metasr_adapter.pipelines.photo.upscale_photo` (JPEG quality from the file;
    ``image``: the file already read)."""
    from ..ops.imageio import read_image
    from ..ops.jpeg import read_jpeg_quality
    from ..pipelines.photo import upscale_photo

    image = read_image(path) if image is None else image  # an undecodable file fails before any message
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

    sr, info = upscale_photo(image, msr, steps=steps, jpeg_quality=read_jpeg_quality(path), grid=grid,
                             weights_name=weights, specialists=specialists, callback=on_step, return_info=True,
                             **({} if seed is None else {"seed": seed}))
    for bar in bars:
        bar.close()
    return sr, info


def orientation_note(path) -> str | None:
    """A line saying that the input was turned upright by its EXIF orientation (None when it is stored upright)."""
    from ..ops.imageio import exif_orientation

    turn = exif_orientation(path)
    return None if turn == 1 else (f"{path}: turned upright by its EXIF orientation ({turn}), as viewers show it; "
                                   f"the output is stored upright, without the tag")


def run_adapt(args: argparse.Namespace) -> int:
    from ..ops.imageio import read_icc_profile, read_image, write_image

    if args.kernel is None:
        args.kernel = "photo"
    if many_inputs(args.lr_image):
        return run_adapt_folder(args)
    lr_img = read_image(args.lr_image)  # an undecodable input fails here, before any network loads
    note = orientation_note(args.lr_image)
    if note and not args.quiet:
        print(note)
    if is_photo(args.kernel):
        msr, grid, steps = photo_setup(args)
        sr, info = run_photo(msr, args.lr_image, grid, steps, args.weights_used, show=not args.quiet,
                             specialists=args.photo_specialists, seed=args.seed, image=lr_img)
        for line in info.summary_lines():
            print(line)
        out = write_image(args.output, sr, icc_profile=read_icc_profile(args.lr_image))
        print(f"wrote {out} ({sr.shape[1]}x{sr.shape[0]}) in {info.seconds:.1f} s")
        return 0
    msr = load_metasr(args)
    args.steps = steps_or_the_weights(args)
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
    bp = f" and {info.back_projection} back-projection iteration(s)" if info.back_projection else ""
    print(f"wrote {out} ({sr.shape[1]}x{sr.shape[0]}) with {os.path.basename(str(args.weights_used))} after {args.steps} "
          f"step(s){bp} in {info.seconds:.2f} s, {msr.precision}"
          + (", Winograd" if msr.conv_algorithm == "winograd" else "")
          + (" (bf16 where it is fast; --precision fp32 for exact arithmetic)"
             if args.precision is None and msr.precision == "bf16" else ""))
    return 0


def run_adapt_folder(args: argparse.Namespace) -> int:
    from ..adapt.batch import adapt_folder, expand_inputs

    files = expand_inputs(args.lr_image)  # a pattern matching nothing fails before the model loads
    if is_photo(args.kernel):
        msr, grid, steps = photo_setup(args)

        def run_one(path):
            sr, info = run_photo(msr, path, grid, steps, args.weights_used, show=False,
                                  specialists=args.photo_specialists, seed=args.seed)
            return sr, info.to_dict()

        outcomes = adapt_folder(msr, files, args.output, kernel="photo", steps=steps, run_one=run_one,
                                settings=folder_settings(args, grid=grid), flag="-o", progress=not args.quiet)
    else:
        msr = load_metasr(args)
        args.steps = steps_or_the_weights(args)
        seed = {} if args.seed is None else {"seed": args.seed}
        outcomes = adapt_folder(msr, files, args.output, kernel=args.kernel, steps=args.steps,
                                ds_method=args.ds_method, back_projection=args.back_projection,
                                self_ensemble=args.self_ensemble, settings=folder_settings(args), flag="-o",
                                progress=not args.quiet, kernel_spec=getattr(args, "kernel_spec", None), **seed)
    done = [o for o in outcomes if o.status == "done"]
    skipped = [o for o in outcomes if o.status == "skipped"]
    failed = [o for o in outcomes if o.status == "failed"]
    print(f"{len(done)} written, {len(skipped)} skipped (already in {args.output}), {len(failed)} failed")
    for o in failed:
        print(f"  failed: {o.source}: {o.error}", file=sys.stderr)
    return 1 if failed else 0


def folder_settings(args: argparse.Namespace, **extra) -> dict:
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
            **({"conv_algorithm": "winograd"} if conv_algorithm_of(args) == "winograd" else {}),
            "loss": args.loss, "max_pixels": args.max_pixels,
            **({} if args.seed is None else {"seed": args.seed}), **extra}
