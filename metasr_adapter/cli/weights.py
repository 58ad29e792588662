"""``metasr weights``: the bundled weights, what each is the default for, and its headline score; ``metasr
weights NAME`` prints that file's model card."""
from __future__ import annotations

import argparse
import json
import os
from typing import Any

from ..io.pretrained import BUNDLED_WEIGHTS, WeightsInfo, default_weights, get_weights

__all__ = ["add_weights_arguments", "run_weights_cli", "weights_rows", "used_for"]


def add_weights_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?", default=None, help="print this bundled file's model card (default: list them all)")
    p.add_argument("--json", dest="as_json", action="store_true", help="print the listing (or the one file's sidecar) as JSON")


def used_for(w: WeightsInfo) -> list[str]:
    """Where the command line and :func:`~metasr_adapter.load_pretrained` pick ``w`` when no ``--weights`` is
    given (at its scale; ``--arch`` first for architectures other than the default mzsr)."""
    from ..pipelines.photo import GRID_SPECIALISTS, default_photo_weights

    uses = []
    if w.name == default_photo_weights():
        uses.append("photos")
    uses += [f"photos: a plain {grid} resize" for grid, name in GRID_SPECIALISTS.items() if name == w.name]
    kernel_uses = []
    if w.ds_method in ("direct", "bicubic") and default_weights(w.arch, scale=w.scale, ds_method=w.ds_method) is w:
        kernel_uses.append(f"known kernel ({w.ds_method})")
    if default_weights(w.arch, scale=w.scale, ds_method="direct", blind=True) is w:  # blind mode models direct
        kernel_uses.append("--kernel estimate")
    if kernel_uses and w.arch != "mzsr":  # the command line's default architecture is mzsr
        kernel_uses = [f"--arch {w.arch} with " + " or ".join(kernel_uses)]
    return uses + kernel_uses


def _headline(w: WeightsInfo) -> str:
    """The training run's Set5 evaluation at the step count the command line uses for these weights (their
    ``adapt_steps``, else 1; the largest measured when that one was not), against bicubic."""
    ev = (w.metrics or {}).get("train_eval") or {}
    psnr = ev.get("mean_psnr") or {}
    steps = [int(k) for k in psnr if k.isdigit()]
    if not steps:
        return "-"
    k = w.adapt_steps if w.adapt_steps is not None else 1
    k = k if str(k) in psnr else max(steps)
    where = f"kernel {ev.get('kernel') or '?'}" + (f" on {os.path.basename(os.path.dirname(ev['lr_dir']))}'s LR"
                                                  if ev.get("lr_dir") else "")
    bic = f"; bicubic upscaling {psnr['bicubic']:.2f}" if "bicubic" in psnr else ""
    return f"{psnr[str(k)]:.2f} dB at {k} step{'s' if k != 1 else ''} ({where}{bic})"


def weights_rows() -> list[dict[str, Any]]:
    """One row per bundled file: name, architecture, scale, subsampling, steps, blind, uses, headline score."""
    return [{"name": w.name, "arch": w.arch, "scale": float(w.scale), "subsampling": w.ds_method,
             "steps": w.adapt_steps if w.adapt_steps is not None else 1, "blind": bool(w.blind),
             "used_for": used_for(w), "score": _headline(w), "card": str(w.model_card)}
            for w in BUNDLED_WEIGHTS.values()]


def _table(rows: list[dict[str, Any]]) -> str:
    head = ["name", "scale", "subsampling", "steps", "blind", "default for", "Set5 Y-PSNR (the training run's eval)"]
    body = [[r["name"], f"x{r['scale']:g}", r["subsampling"], str(r["steps"]), "yes" if r["blind"] else "no",
             "; ".join(r["used_for"]) or "-", r["score"]] for r in rows]
    widths = [max(len(c[i]) for c in [head, *body]) for i in range(len(head) - 1)]
    return "\n".join("  ".join(c.ljust(wd) for c, wd in zip(line[:-1], widths)) + "  " + line[-1]
                     for line in [head, *body])


def run_weights_cli(args: argparse.Namespace) -> int:
    if args.name is not None:
        w = get_weights(args.name)  # UnknownNameError names the bundled files
        if args.as_json:
            print(json.dumps(json.loads((w.path.parent / f"{w.name}.json").read_text(encoding="utf-8")), indent=2))
        elif w.model_card.is_file():
            print(w.model_card.read_text(encoding="utf-8"), end="")
        else:
            print(f"{w.name}: {w.description}\n(no model card installed at {w.model_card})")
        return 0
    rows = weights_rows()
    if args.as_json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("this install ships no weights (metasr_adapter/weights/ is empty); reinstall metasr_adapter")
        return 0
    from ..pipelines.photo import PHOTO_STEPS

    print(_table(rows))
    print(f"\nsteps: the adaptation steps `metasr adapt` takes with a kernel when --steps is not given (the photo "
          f"path takes {PHOTO_STEPS}); blind: fit to judge candidate kernels for --kernel estimate.")
    print("`metasr weights NAME` prints a model card (lineage, every measured score); "
          "`--weights NAME` picks one for adapt / eval / demo.")
    return 0
