"""What a command runs on: the device, the weights (``--weights``, or the bundled file that fits the kernel and
scale), and the :class:`~metasr_adapter.MetaSR` built from them with the command line's memory budget and precision."""
from __future__ import annotations

import argparse
import sys
from typing import Any

from .checks import is_estimate

__all__ = ["DEFAULT_TILE", "DEFAULT_MAX_PIXELS", "setup_device", "choose_weights", "load_metasr",
           "conv_algorithm_of", "steps_or_the_weights", "default_precision", "memory_budget"]


#: the command line's memory budget (the library's MetaSR has none unless asked): SR in 512² tiles, and
#: adaptation on 512x512-pixel crops of larger LR images; a 4000x3000 photo then peaks at ~3.5 GB
#: (benchmarks/bench_memory.py --modes cli)
DEFAULT_TILE = 512


DEFAULT_MAX_PIXELS = 512 * 512


def memory_budget(args: argparse.Namespace, model, scale: float, upsample_input: bool) -> tuple[int | None, int | None]:
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


def setup_device(args: argparse.Namespace):
    """Apply ``--threads`` and return the ``--device`` asked for (default: CUDA when available)."""
    import torch

    from ..devices import resolve_device

    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads {args.threads}: give a positive number of CPU threads, e.g. --threads 2")
        torch.set_num_threads(args.threads)
    return resolve_device(args.device)


def choose_weights(args: argparse.Namespace) -> tuple[str, dict, Any]:
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


def load_metasr(args: argparse.Namespace):
    """The :class:`~metasr_adapter.MetaSR` a command runs: the chosen weights on the asked device, the scale, rate
    schedule and loss from the options or else the weights' metadata, the memory budget and the precision. Records
    ``args.weights_used``, ``args.weights_meta`` and ``args.precision_used`` for the command's report."""
    from .. import MetaSR
    from ..adapters import scale_kwargs
    from ..io.pretrained import load_model

    device = setup_device(args)
    weights, meta, source = choose_weights(args)
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

    tile, max_pixels = memory_budget(args, model, scale, takes_upsampled_input(model))
    algorithm = conv_algorithm_of(args)
    precision = args.precision_used = args.precision or (
        "fp32" if algorithm == "winograd" else default_precision(args.command, device))
    return MetaSR(model, scale, schedule=schedule, precision=precision, device=device, loss=loss,
                  adapt_params=meta.get("adapt_params"), tile=tile, max_pixels=max_pixels, conv_algorithm=algorithm)


def steps_or_the_weights(args: argparse.Namespace) -> int:
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


def conv_algorithm_of(args: argparse.Namespace) -> str:
    """``--conv-algorithm``, ``'direct'`` when left out. Winograd computes in fp32, so it makes fp32 the default
    precision."""
    return getattr(args, "conv_algorithm", None) or "direct"


def default_precision(command: str, device) -> str:
    """``--precision`` left out: bf16 where it is fast for ``adapt`` and ``demo`` (Table 2 cells within 0.04 dB of
    fp32, 1.8x faster: ``precision.auto_precision``); fp32 for ``eval`` and the rest, whose numbers are the
    exact arithmetic's."""
    from ..precision import auto_precision

    return auto_precision(device) if command in ("adapt", "demo") else "fp32"
