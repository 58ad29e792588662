"""Single convolutions by Winograd (``metasr_adapter.ops.winograd``) against oneDNN's direct ones, interleaved.

    python benchmarks/bench_winograd.py --threads 2 --json benchmarks/results/winograd_native_calls.json
    python benchmarks/bench_winograd.py --threads 2 --backend compiled --json benchmarks/results/winograd_calls.json

At MZSR's meta-training size (4x64x64x64, 64 -> 64 channels) and its adaptation size (1x64x256x256): the forward
convolution against ``F.conv2d``, the input gradient against ``F.conv_transpose2d`` and the weight gradient against
``aten.convolution_backward`` (weights only), all NHWC, fp32. Per operation: the first call (it compiles), then
``--repeats`` calls of each kind alternating which goes first; medians, their ratio (Winograd / direct) and the
largest difference relative to the direct result's magnitude. ``--backend`` picks the Winograd code: ``native``
(the package's C++ kernels, built on first use; the default where they build), ``compiled`` (torch-compiled
transforms around ``torch.bmm``) or ``eager`` (the same uncompiled).
Whole meta-gradients: ``benchmarks/bench_meta_ab.py --compare conv_algorithm``. Issue #21.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Sequence

import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import result_record  # noqa: E402
from _timing import interleave  # noqa: E402

SHAPES = {"meta": (4, 64, 64, 64), "adapt": (1, 64, 256, 256)}


def direct_weight_grad(grad_out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    shape = [grad_out.shape[1], x.shape[1], 3, 3]
    return torch.ops.aten.convolution_backward(grad_out, x, torch.empty(shape), None, [1, 1], [1, 1], [1, 1], False,
                                               [0, 0], 1, [False, True, False])[1]


def compare(name: str, shape: Sequence[int], repeats: int, backend: str) -> dict:
    """Winograd against direct for the three operations at one size."""
    from metasr_adapter.ops import winograd

    n, c, h, w = shape
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, c, h, w, generator=gen).contiguous(memory_format=torch.channels_last)
    gy = torch.randn(n, c, h, w, generator=gen).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(c, c, 3, 3, generator=gen) * 0.05
    ops = {"forward": (lambda: winograd.conv3x3(x, weight, backend=backend), lambda: F.conv2d(x, weight, padding=1)),
           "input_grad": (lambda: winograd.conv3x3_input_grad(gy, weight, backend=backend),
                          lambda: F.conv_transpose2d(gy, weight, padding=1)),
           "weight_grad": (lambda: winograd.conv3x3_weight_grad(gy, x, backend=backend),
                           lambda: direct_weight_grad(gy, x))}
    rows = {}
    for op, (ours, direct) in ops.items():
        t0 = time.perf_counter()
        result = ours()  # compiles (or builds the native kernels)
        first_call_s = time.perf_counter() - t0
        reference = direct()
        error = float((result - reference).abs().max() / reference.abs().max())
        med = interleave({"winograd": ours, "direct": direct}, repeats, warmup=False)  # both ran just above
        rows[f"{name}_{op}"] = row = {"shape": list(shape), "ms": med, "ratio": med["winograd"] / med["direct"],
                                      "max_rel_error": error, "first_call_s": first_call_s}
        print(f"{name} {tuple(shape)} {op}: winograd {med['winograd']:.2f} ms, direct {med['direct']:.2f} ms, ratio "
              f"{row['ratio']:.3f}, rel. error {error:.1e}, first call {first_call_s:.1f} s", flush=True)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=20, help="timed calls of each kind per operation")
    ap.add_argument("--sizes", default="meta,adapt", help=f"comma list of {', '.join(SHAPES)}")
    ap.add_argument("--backend", choices=["native", "compiled", "eager"], default=None,
                    help="the Winograd code (default: the library's, native where it builds)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if args.repeats < 1:
        ap.error(f"--repeats {args.repeats}: needs at least 1")
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    bad = [s for s in sizes if s not in SHAPES]
    if bad or not sizes:
        ap.error(f"--sizes {args.sizes!r}: use a comma list of {', '.join(SHAPES)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    from metasr_adapter.allocator import retain_freed_memory

    retain_freed_memory()  # as `metasr` does
    from metasr_adapter.ops import winograd

    backend = args.backend or winograd.default_backend()
    print(f"Winograd backend: {backend}", flush=True)
    rows: dict = {}
    for name in sizes:
        rows.update(compare(name, SHAPES[name], args.repeats, backend=backend))
    if args.json:
        out = {"rows": rows, "threads": torch.get_num_threads(), "backend": backend,
               "record": result_record(argv, script=__file__)}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
