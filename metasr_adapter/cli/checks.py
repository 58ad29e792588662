"""The command line's checks of its options, made before any work starts: outputs writable and not the
input, counts in range, options that the chosen method or estimator would ignore refused, kernels parsed once."""
from __future__ import annotations

import argparse

__all__ = ["DEFAULT_EVAL_STEPS", "MAX_ADAPT_STEPS", "check_options", "is_estimate", "is_photo", "many_inputs"]

#: the step counts ``metasr eval`` scores by default
DEFAULT_EVAL_STEPS = (0, 1, 10)


def many_inputs(spec: str) -> bool:
    """Whether an image argument names several images (a folder or a glob pattern)."""
    from pathlib import Path

    return Path(spec).is_dir() or (not Path(spec).exists() and any(c in spec for c in "*?["))


def is_photo(kernel) -> bool:
    """``--kernel photo``: the photo path."""
    return isinstance(kernel, str) and kernel.strip().lower() == "photo"


def is_estimate(kernel) -> bool:
    """``--kernel estimate``: blind mode."""
    return isinstance(kernel, str) and kernel.strip().lower() == "estimate"


def _check_output(path: str | None, flag: str, image: bool) -> None:
    """Refuse an output path that cannot be written, before any work is done."""
    from pathlib import Path

    if path is None:
        return
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"{flag} {path} is a folder; give a file name, e.g. {p / ('out.png' if image else 'out.json')}")
    if image:
        from ..ops.imageio import IMAGE_EXTENSIONS

        if p.suffix.lower() not in IMAGE_EXTENSIONS:
            raise ValueError(f"{flag} {path}: cannot write a {p.suffix or 'suffix-less'!r} image; end the name with one "
                             f"of {', '.join(IMAGE_EXTENSIONS)}")
    _check_writable(p.resolve().parent, flag, path)


def _check_writable(folder, flag: str, given) -> None:
    """Refuse ``folder`` (to be created where missing) unless its nearest existing ancestor is a folder this
    process may write into (os.access: root passes on any permissions, as its writes would)."""
    import os
    from pathlib import Path

    existing = Path(folder).resolve()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"{flag} {given}: cannot write into {existing}; choose a writable location")


def _check_not_input(src, out, flag: str = "-o/--output") -> None:
    """Refuse an output that is the input file itself (the same path, spelt otherwise, or a link to it)."""
    import os
    from pathlib import Path

    if src is None or out is None or not (os.path.isfile(src) and os.path.exists(out)):
        return
    if os.path.samefile(src, out):
        o = Path(out)
        raise ValueError(f"{flag} {out} is the input image {src} itself: the result would overwrite it; give another "
                         f"output name, e.g. -o {o.with_name(o.stem + '_sr' + (o.suffix or '.png'))}")


#: the most adaptation steps a command accepts: meta-trained weights adapt in 1 to 10, and a million-step run
#: (days on a CPU) is a typo, not a plan
MAX_ADAPT_STEPS = 100_000


def _check_eval_folders(args: argparse.Namespace) -> None:
    """``metasr eval``: --gt-dir / --lr-dir are folders, and no GT image is smaller than the scale (cropped to
    multiples of the scale, nothing of it would be left to score)."""
    from pathlib import Path

    for flag, folder in (("--gt-dir", args.gt_dir), ("--lr-dir", args.lr_dir)):
        if folder is not None and Path(folder).is_file():
            raise NotADirectoryError(f"{flag} {folder} is a file; give the folder that holds the images")
        if folder is not None and not Path(folder).exists():
            raise FileNotFoundError(f"{flag} {folder}: folder not found; give the folder that holds the images")
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - matplotlib brings Pillow; the crop itself still refuses
        return
    from ..ops.imageio import list_images

    s = max(1, int(round(args.scale if args.scale is not None else 2)))
    for path in list_images(args.gt_dir)[: args.limit]:
        try:
            with Image.open(path) as im:  # the header only
                w, h = im.size
        except Exception:  # not for Pillow: reading it later says what is wrong
            continue
        if w < s or h < s:
            raise ValueError(f"--gt-dir: {path} is {w}x{h} pixels, smaller than the x{s} scale: nothing of it is "
                             "left to score; remove it from the folder (GT images are usually hundreds of pixels)")


#: ``metasr eval --method zssr``: MetaSR's options, which ZSSR has no use for, and why (flag, dest, "unset" test)
_METASR_ONLY_REASONS = {
    "model": "ZSSR trains its own network from scratch on each image, so no weights or architecture are loaded",
    "adapt": "ZSSR's training is set by --zssr-preset and --zssr-iters, not by MetaSR's adaptation options",
    "result": "ZSSR's back-projection and self-ensemble come from --zssr-preset",
    "plot": "the plot draws PSNR against MetaSR's adaptation steps, which ZSSR does not take",
}
_METASR_ONLY = (("--weights", "weights", None, "model"), ("--arch", "arch", None, "model"),
                ("--arch-kwargs", "arch_kwargs", None, "model"), ("--param-key", "param_key", "auto", "model"),
                ("--schedule", "schedule", None, "adapt"), ("--lr", "lr", None, "adapt"),
                ("--loss", "loss", None, "adapt"), ("--steps", "steps", None, "adapt"),
                ("--tile", "tile", None, "adapt"), ("--max-pixels", "max_pixels", None, "adapt"),
                ("--back-projection", "back_projection", None, "result"),
                ("--self-ensemble", "self_ensemble", False, "result"), ("--plot", "plot", None, "plot"))
#: ``metasr eval --method metasr``: the options of ZSSR
_ZSSR_ONLY = (("--zssr-preset", "zssr_preset", None), ("--zssr-iters", "zssr_iters", None),
              ("--kernel-shift", "kernel_shift", False))


def _given(args: argparse.Namespace, table) -> list:
    """The rows of ``table`` (flag, dest, default, ...) whose option was given (differs from its default)."""
    return [row for row in table if getattr(args, row[1], row[2]) != row[2]]


def _flags(rows) -> tuple[str, str]:
    """``('--a, --b', 'do')``: the flags of ``rows`` and the verb that agrees with them."""
    return ", ".join(r[0] for r in rows), "does" if len(rows) == 1 else "do"


def _check_method_options(args: argparse.Namespace) -> None:
    """``metasr eval``: refuse the options the chosen --method does not use, rather than ignore them."""
    if args.method == "zssr":
        rows = _given(args, _METASR_ONLY)
        if rows:
            flags, verb = _flags(rows)
            reasons = "; ".join(dict.fromkeys(_METASR_ONLY_REASONS[r[3]] for r in rows))
            raise ValueError(f"{flags} {verb} not apply to --method zssr: {reasons}. Leave "
                             f"{'it' if len(rows) == 1 else 'them'} out, or use --method metasr")
    else:
        rows = _given(args, _ZSSR_ONLY)
        if rows:
            flags, verb = _flags(rows)
            raise ValueError(f"{flags} {verb} not apply to --method {args.method} (they set ZSSR's training); add "
                             f"--method zssr, or leave {'it' if len(rows) == 1 else 'them'} out")


def _check_estimator_options(args: argparse.Namespace) -> None:
    """``metasr estimate-kernel``: refuse the options the chosen --estimator does not use."""
    if args.estimator == "kernelgan":
        rows = _given(args, (("--weights", "weights", None), ("--arch", "arch", None),
                             ("--arch-kwargs", "arch_kwargs", None), ("--param-key", "param_key", "auto"),
                             ("--evals", "evals", None)))
        if rows:
            flags, verb = _flags(rows)
            raise ValueError(f"{flags} {verb} not apply to --estimator kernelgan: it trains its own small GAN on the "
                             "image (no network is loaded; --evals counts the gaussian search's candidates). Leave "
                             f"{'it' if len(rows) == 1 else 'them'} out, or use --estimator gaussian")
        if args.precision not in (None, "fp32"):
            raise ValueError(f"--precision {args.precision} with --estimator kernelgan: KernelGAN trains in fp32 (its "
                             "kernel priors and the tiny kernel taps need it); leave --precision out, or use "
                             "--estimator gaussian")
    elif args.iters is not None:
        raise ValueError(f"--kernelgan-iters {args.iters} does not apply to --estimator {args.estimator}: it counts KernelGAN's "
                         "iterations; the gaussian search's budget is --evals")


def check_options(args: argparse.Namespace) -> None:
    """Options checked before any work: outputs writable, counts in range."""
    from pathlib import Path

    if args.command == "eval" and getattr(args, "kernel", "") is None:
        args.kernel = "gd2.0"
    if args.command == "eval":
        _check_method_options(args)
        if args.steps is None:
            args.steps = list(DEFAULT_EVAL_STEPS)
    if args.command == "estimate-kernel":
        _check_estimator_options(args)
    if is_photo(getattr(args, "kernel", None)) and args.command not in ("adapt", "demo"):
        raise ValueError(f"--kernel photo works with `metasr adapt` (and demo); for `metasr {args.command}` give a "
                         "kernel (gd2.0, bicubic, K.mat...)")

    for name in ("back_projection", "steps", "limit", "tile", "max_pixels"):
        value = getattr(args, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value < 0:
            flag = "--" + name.replace("_", "-")
            raise ValueError(f"{flag} {value}: must be >= 0")
    steps = getattr(args, "steps", None) if args.command in ("adapt", "demo", "eval") else None
    if steps is not None and max(steps if isinstance(steps, list) else [steps]) > MAX_ADAPT_STEPS:
        shown = ",".join(map(str, steps)) if isinstance(steps, list) else steps
        raise ValueError(f"--steps {shown}: at most {MAX_ADAPT_STEPS} adaptation steps (meta-trained weights adapt in "
                         "1 to 10); give a smaller count")
    if args.command in ("adapt", "demo", "eval") and args.scale is not None:
        import math

        if not (args.scale > 1 and math.isfinite(args.scale)):  # before the weights: not "no bundled weights"
            raise ValueError(f"--scale {args.scale:g}: the SR factor must be > 1 (e.g. --scale 2), or leave --scale "
                             "out to use the weights' own")
    if getattr(args, "conv_algorithm", None) == "winograd" and getattr(args, "precision", None) == "bf16":
        raise ValueError("--conv-algorithm winograd computes in fp32: leave --precision bf16 out (or give --precision "
                         "fp32), or use --conv-algorithm direct for bf16")
    if getattr(args, "threads", None) is not None and args.threads < 1:
        raise ValueError(f"--threads {args.threads}: give a positive number of CPU threads, e.g. --threads 2")
    if args.command in ("adapt", "demo") and (args.kernel is None or is_photo(args.kernel)):
        for flag, value in (("--back-projection", args.back_projection), ("--self-ensemble", args.self_ensemble)):
            if value:
                raise ValueError(f"{flag} is not part of the photo path (the default of metasr adapt); give a "
                                 "kernel (--kernel bicubic, --kernel estimate...) to use it")
    if args.command == "adapt" and many_inputs(args.lr_image):
        if Path(args.output).is_file():
            raise ValueError(f"-o {args.output} is a file; with several input images -o names the output folder")
        _check_writable(args.output, "-o/--output", args.output)
        from ..adapt.batch import expand_inputs, plan_outputs

        plan_outputs(expand_inputs(args.lr_image), args.output, flag="-o")  # one output per input, not the inputs'
    elif args.command in ("adapt", "zssr", "demo"):
        _check_output(getattr(args, "output", None), "-o/--output", image=True)
        if args.command in ("adapt", "zssr"):
            _check_not_input(args.lr_image, args.output)
    if args.command == "estimate-kernel":
        _check_output(args.output, "-o/--output", image=False)
        if Path(args.output).suffix.lower() not in (".mat", ".npy"):
            raise ValueError(f"-o {args.output}: a kernel is written as .mat (key 'kernel') or .npy; end the name "
                             "with one of those")
        if args.plot:
            _check_output(args.plot, "--plot", image=True)
        for flag, dest in (("--evals", "evals"), ("--kernelgan-iters", "iters")):
            if getattr(args, dest) is not None and getattr(args, dest) < 1:
                raise ValueError(f"{flag} {getattr(args, dest)}: must be >= 1")
        if args.scale is not None:
            from ..estimate.checks import check_scale

            check_scale(args.scale)
    elif is_estimate(getattr(args, "kernel", None)):
        if args.command not in ("adapt", "zssr") or getattr(args, "method", "metasr") != "metasr":
            raise ValueError(f"--kernel estimate works with `metasr adapt` and `metasr zssr`; for `metasr "
                             f"{args.command}`, estimate first (metasr estimate-kernel LR.png -o K.mat) and pass "
                             "--kernel K.mat")
        if args.command == "zssr":
            from ..estimate.checks import check_scale

            check_scale(args.scale)
        if getattr(args, "ds_method", None) not in (None, "direct"):
            raise ValueError(f"--kernel estimate with --ds-method {args.ds_method}: the estimators model blur + direct "
                             "subsampling; leave --ds-method out")
    elif args.command in ("adapt", "eval", "demo") and getattr(args, "kernel", None) is not None \
            and not is_photo(args.kernel) \
            and getattr(args, "method", "metasr") == "metasr":  # ZSSR accepts estimated kernels as they are
        from ..ops.kernels import resolve_kernel

        # parsed once, here: a bad kernel file fails before the model loads, and the commands use this spec
        args.kernel_spec = resolve_kernel(args.kernel, args.ds_method)
    if args.command == "zssr" and args.estimator is not None and not is_estimate(args.kernel):
        raise ValueError(f"--estimator {args.estimator} is used only with --kernel estimate (given --kernel "
                         f"{args.kernel or 'bicubic'}); add --kernel estimate or leave --estimator out")
    if getattr(args, "json", None):
        _check_output(args.json, "--json", image=False)
    if args.command == "eval" and args.plot:
        _check_output(args.plot, "--plot", image=True)
    if args.command == "eval":  # after the kernel checks: a wrong kernel option is named before the folders
        _check_eval_folders(args)
