"""``metasr train RECIPE [--set key=value ...] [--resume] [-o DIR]``: its arguments, exit codes (0; 2 for a
user's mistake, from :func:`~metasr_adapter.cli.main.main`; 3 for collapsed weights; 130 when interrupted) and
the summary it prints. The run itself is :func:`metasr_adapter.training.train.run_training`.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import Any, Mapping

import torch

from .. import distributed as ddp
from ..training.recipes import dump_recipe, load_recipe
from ..training.run_state import TrainingInterrupted
from ..training.train import COLLAPSE_EXIT, export_run_weights, run_training

__all__ = ["add_train_arguments", "run_train_cli"]


def add_train_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``metasr train RECIPE [--set key=value ...] [--resume] [-o DIR]``."""
    parser.add_argument("recipe", nargs="?", default=None,
                        help="recipe YAML (e.g. recipes/mzsr_x2.yaml); optional with --resume --out DIR")
    parser.add_argument("--set", dest="overrides", action="append", nargs="+", default=[], metavar="KEY=VALUE",
                        help="override recipe keys, e.g. --set meta.iterations=100 data.num_workers=2 "
                             "(values are YAML; relative paths resolve against the working directory)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in the output folder from its last checkpoint")
    parser.add_argument("-o", "--output", "--out", dest="out", default=None, metavar="DIR",
                        help="run folder (default: the recipe's output.dir; --out is the old spelling, still accepted)")
    parser.add_argument("--show", action="store_true", help="print the resolved recipe and exit")
    parser.add_argument("--device", default=None,
                        help="cpu, cuda, cuda:1, auto... (default: the recipe's device; the same as --set device=...)")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of the initialisation and every batch (default: the recipe's; --set seed=...)")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bars (the same as --set output.progress=false)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    parser.add_argument("--export-weights", default=None, metavar="PATH",
                        help="write the weights of the run in -o DIR as its last checkpoint holds them (with the "
                             "metadata of its final weights) and exit; the run may go on meanwhile")
    parser.add_argument("--allow-collapse", action="store_true",
                        help=f"exit 0 even when the final evaluation finds the trained weights collapsed "
                             f"(default: exit {COLLAPSE_EXIT}; the run's files are kept either way)")
    return parser


def _check_run_folder(folder: str | os.PathLike | None, flag: str) -> None:
    """Refuse a run folder that is an existing file (or lies under one) before any work."""
    if folder is None:
        return
    p = Path(folder)
    for q in (p, *p.parents):
        if q.exists():
            if not q.is_dir():
                what = "is a file" if q == p else f"lies under {q}, which is a file"
                raise NotADirectoryError(f"{flag} {folder} {what}; give a folder for the run (it is created if "
                                         "missing)")
            return


def run_train_cli(args: argparse.Namespace) -> int:
    """Entry point of ``metasr train`` (after :func:`add_train_arguments`)."""
    overrides = [item for group in (args.overrides or []) for item in group]
    _check_run_folder(args.out, "-o/--output")
    if getattr(args, "export_weights", None):
        return _export(args, overrides)
    recipe_path = args.recipe
    if recipe_path is None:  # `--set k=v RECIPE`: argparse hands the recipe to --set
        files = [o for o in overrides if "=" not in o and o.lower().endswith((".yaml", ".yml"))]
        if len(files) == 1:
            recipe_path = files[0]
            overrides.remove(recipe_path)
    if recipe_path is None:
        if not (args.resume and args.out):
            raise ValueError("give a RECIPE file (or --resume -o DIR to continue a run with its saved recipe)")
        recipe_path = Path(args.out) / "recipe.yaml"
    for key, value in (("device", getattr(args, "device", None)), ("seed", getattr(args, "seed", None)),
                       ("output.progress", False if getattr(args, "quiet", False) else None)):
        if value is not None:  # the flags are recipe keys given on their own: they win over --set
            overrides.append(f"{key}={str(value).lower() if isinstance(value, bool) else value}")
    recipe = load_recipe(recipe_path, overrides)
    if args.show:
        print(dump_recipe(recipe), end="")
        return 0
    if args.out is None:
        _check_run_folder(recipe["output"]["dir"], "output.dir")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        summary = run_training(recipe, resume=args.resume, out_dir=args.out)
    except TrainingInterrupted as exc:
        print(f"\nmetasr train: {exc}. Continue with --resume.", file=sys.stderr)
        return ddp.exit_rank(130) if ddp.is_distributed() else 130
    except KeyboardInterrupt:
        print("\nmetasr train: interrupted; --resume continues from the last checkpoint", file=sys.stderr)
        return ddp.exit_rank(130) if ddp.is_distributed() else 130
    if ddp.is_main():
        print(_format_summary(summary))
    status = 0
    if summary.get("collapse") and not getattr(args, "allow_collapse", False):
        if ddp.is_main():
            print(f"metasr train: {summary['collapse']}; pass --allow-collapse to accept these weights",
                  file=sys.stderr)
        status = COLLAPSE_EXIT
    if ddp.is_distributed():  # a torchrun rank: leave the group so that the launcher sees a clean exit
        return ddp.exit_rank(status)
    return status


def _export(args: argparse.Namespace, overrides: list[str]) -> int:
    """``metasr train -o DIR --export-weights PATH``: the run's current weights, the run untouched."""
    if args.out is None:
        if args.recipe is None:
            raise ValueError("--export-weights: give the run folder with -o DIR (or the RECIPE that names it)")
        folder = load_recipe(args.recipe, overrides)["output"]["dir"]
    else:
        folder = args.out
    if folder is None:
        raise ValueError("--export-weights: the recipe names no output.dir; give the run folder with -o DIR")
    done = export_run_weights(folder, args.export_weights)
    print(f"wrote {done['path']}: the weights of {folder} at its last checkpoint ({done['stage']} stage, "
          f"step {done['step']})")
    return 0


def _format_summary(s: Mapping[str, Any]) -> str:
    lines = [f"run folder:   {s['out_dir']}", f"checkpoint:   {s['checkpoint']}", f"metrics log:  {s['metrics_log']}"]
    if s.get("plot"):
        lines.append(f"plot:         {s['plot']}")
    start, meta = s.get("psnr_start"), s.get("psnr_meta_trained")
    if meta:
        steps = sorted(meta)
        lines.append("mean PSNR (dB) after k adaptation steps:")
        lines.append("  k       " + "".join(f"{k:>8d}" for k in steps))
        if start:
            lines.append("  start   " + "".join(f"{start.get(k, math.nan):8.3f}" for k in steps))
        lines.append("  meta    " + "".join(f"{meta[k]:8.3f}" for k in steps))
        if s.get("psnr_bicubic") is not None:
            lines.append(f"  bicubic {s['psnr_bicubic']:8.3f}")
    secs = s.get("stage_seconds") or {}
    if secs:
        lines.append("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in secs.items()))
    return "\n".join(lines)
