"""IDN's 17x17 stride-s reconstruction layer as a transposed convolution and in the sub-pixel form, interleaved.

    python benchmarks/bench_subpixel.py --threads 2 --json benchmarks/results/subpixel_idn.json

``metasr_adapter.ops.subpixel`` computes ``F.conv_transpose2d`` as one convolution with ``stride²`` times the output
channels and a pixel shuffle. Rows, each in fp32 and under bf16 autocast, in NCHW and NHWC: the layer alone
(64 -> 3 channels on a ``--size``² LR feature map; forward, and forward + backward) and the whole IDN x2 (forward
without gradients, and one adaptation-like step: forward, L1 loss, backward), the same weights with the
reconstruction as ``nn.ConvTranspose2d`` against ``SubpixelConvTranspose2d``. ``--repeats`` calls of each kind,
alternating which goes first; medians, their ratio (sub-pixel / transposed), the layer's GFLOP/s and a 2048² fp32
matmul's in the same run.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import sys
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import result_record  # noqa: E402
from _timing import interleave, matmul_gflops  # noqa: E402

PRECISIONS = ("fp32", "bf16")
LAYOUTS = ("nchw", "nhwc")


def rows_for(size: int, precision: str, layout: str, repeats: int) -> dict[str, dict]:
    from metasr_adapter.adapters.idn import IDN
    from metasr_adapter.ops.subpixel import conv_transpose2d_subpixel

    fmt = torch.channels_last if layout == "nhwc" else torch.contiguous_format
    gen = torch.Generator().manual_seed(0)
    autocast = (torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16"
                else contextlib.nullcontext())
    feats = torch.randn(1, 64, size, size, generator=gen).contiguous(memory_format=fmt).requires_grad_()
    w = (torch.randn(64, 3, 17, 17, generator=gen) * 0.01).requires_grad_()
    b = torch.zeros(3, requires_grad=True)

    def layer(sub: bool, backward: bool) -> Callable[[], None]:
        def run() -> None:
            with autocast, torch.set_grad_enabled(backward):
                y = (conv_transpose2d_subpixel(feats, w, b, 2, 8, 1) if sub
                     else F.conv_transpose2d(feats, w, b, stride=2, padding=8, output_padding=1))
            if backward:
                y.float().sum().backward()
        return run

    torch.manual_seed(0)
    sub_net = IDN(scale=2).to(memory_format=fmt)
    plain_net = copy.deepcopy(sub_net)
    plain_net.reconstruct.__class__ = nn.ConvTranspose2d  # the same parameters, the transposed primitive
    lr = torch.rand(1, 3, size, size, generator=gen).contiguous(memory_format=fmt)
    hr = torch.rand(1, 3, 2 * size, 2 * size, generator=gen)

    def model(net: nn.Module, step: bool) -> Callable[[], None]:
        def run() -> None:
            with autocast, torch.set_grad_enabled(step):
                y = net(lr)
            if step:
                (y.float() - hr).abs().mean().backward()
        return run

    layer_gflop = 2 * 64 * 3 * 17 * 17 * size * size / 1e9
    out = {}
    for name, pair, gflop in (
            ("layer_forward", {"transposed": layer(False, False), "subpixel": layer(True, False)}, layer_gflop),
            ("layer_forward_backward", {"transposed": layer(False, True), "subpixel": layer(True, True)},
             3 * layer_gflop),
            ("idn_forward", {"transposed": model(plain_net, False), "subpixel": model(sub_net, False)}, None),
            ("idn_step", {"transposed": model(plain_net, True), "subpixel": model(sub_net, True)}, None)):
        med = interleave(pair, repeats)
        row = {"ms": med, "ratio": med["subpixel"] / med["transposed"]}
        if gflop is not None:
            row["layer_gflops_per_s"] = {k: gflop / (v / 1e3) for k, v in med.items()}
        key = f"{name}_{precision}_{layout}"
        out[key] = row
        rates = (f", {row['layer_gflops_per_s']['transposed']:.0f} -> {row['layer_gflops_per_s']['subpixel']:.0f} "
                 "GFLOP/s" if gflop is not None else "")
        print(f"{key} ({size}² LR): transposed {med['transposed']:.1f} ms, sub-pixel {med['subpixel']:.1f} ms, "
              f"ratio {row['ratio']:.3f}{rates}", flush=True)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--size", type=int, default=256, help="LR side in pixels")
    ap.add_argument("--repeats", type=int, default=10, help="timed calls of each kind per row")
    ap.add_argument("--precisions", default="fp32,bf16", help=f"comma list of {', '.join(PRECISIONS)}")
    ap.add_argument("--layouts", default="nchw,nhwc", help=f"comma list of {', '.join(LAYOUTS)}")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    for name in ("size", "repeats"):
        if getattr(args, name) < 1:
            ap.error(f"--{name} {getattr(args, name)}: give a positive number")
    if args.threads is not None and args.threads < 1:
        ap.error(f"--threads {args.threads}: give a positive number")
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    layouts = [p.strip() for p in args.layouts.split(",") if p.strip()]
    if not precisions or any(p not in PRECISIONS for p in precisions):
        ap.error(f"--precisions {args.precisions!r}: use a comma list of {', '.join(PRECISIONS)}")
    if not layouts or any(p not in LAYOUTS for p in layouts):
        ap.error(f"--layouts {args.layouts!r}: use a comma list of {', '.join(LAYOUTS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    from metasr_adapter.allocator import retain_freed_memory

    retain_freed_memory()  # as `metasr` does
    peak = matmul_gflops()
    print(f"2048² fp32 matmul: {peak:.0f} GFLOP/s", flush=True)
    rows: dict = {}
    for precision in precisions:
        for layout in layouts:
            rows.update(rows_for(args.size, precision, layout, args.repeats))
    peak_after = matmul_gflops()
    if args.json:
        out = {"rows": rows, "size": args.size, "threads": torch.get_num_threads(),
               "matmul_gflops_per_s": [peak, peak_after], "record": result_record(argv, script=__file__)}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
