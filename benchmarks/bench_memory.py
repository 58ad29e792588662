"""Peak memory (RSS) and seconds of adaptation + SR for LR images of growing size, with and without the
memory budget (``tile=`` for the SR forward, ``max_pixels=`` for the adaptation steps).

    python benchmarks/bench_memory.py                                  # 256², 1024², 2048², 4000x3000
    python benchmarks/bench_memory.py --sizes 256x256 1024x1024 --steps 1 --tile 512 --max-pixels 65536

Each (size, mode) runs in a fresh process so that its peak RSS (``ru_maxrss``) is its own; the LR image is
random-textured (the content does not change the cost). Weights: the bundled ``mzsr_x2_direct`` (a
random MZSRNet when the package ships none). Reported: peak RSS in GB, seconds, and seconds per
megapixel of LR, to check that time grows linearly with pixels.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path


def worker(h: int, w: int, steps: int, tile: int | None, max_pixels: int | None, threads: int) -> dict:
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    from metasr_adapter import MetaSR
    from metasr_adapter.io.pretrained import BUNDLED_WEIGHTS, load_model

    model = load_model("mzsr", "mzsr_x2_direct" if "mzsr_x2_direct" in BUNDLED_WEIGHTS else "random")
    msr = MetaSR(model, 2, tile=tile, max_pixels=max_pixels)
    img = (np.random.default_rng(0).random((h, w, 3)) * 255).astype(np.uint8)
    t0 = time.perf_counter()
    sr = msr.adapt(img, "gd2.0", steps)
    secs = time.perf_counter() - t0
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024
    return {"lr": f"{w}x{h}", "sr": f"{sr.shape[1]}x{sr.shape[0]}", "steps": steps, "tile": tile,
            "max_pixels": max_pixels, "seconds": secs, "peak_rss_gb": peak_gb, "s_per_lr_mpx": secs / (h * w / 1e6)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", nargs="+", default=["256x256", "1024x1024", "2048x2048", "4000x3000"], metavar="WxH")
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--max-pixels", type=int, default=256 * 256)
    ap.add_argument("--modes", default="budget,full", help="budget (tile + max_pixels) and/or full (neither)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    ap.add_argument("--worker", nargs=5, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        h, w, steps, tile, mp = (int(v) if v != "none" else None for v in args.worker)
        print("RESULT " + json.dumps(worker(h, w, steps, tile, mp, args.threads)))
        return 0
    rows = []
    for size in args.sizes:
        w, h = (int(v) for v in size.split("x"))
        for mode in args.modes.split(","):
            tile, mp = (args.tile, args.max_pixels) if mode == "budget" else (None, None)
            cmd = [sys.executable, __file__, "--threads", str(args.threads), "--worker", str(h), str(w), str(args.steps),
                   str(tile or "none"), str(mp or "none")]
            out = subprocess.run(cmd, capture_output=True, text=True)
            line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
            if not line:
                rows.append({"lr": size, "mode": mode, "error": out.stderr.strip().splitlines()[-1:]})
                print(f"{size:>10} {mode:>7}  failed: {rows[-1]['error']}")
                continue
            r = {**json.loads(line[0][7:]), "mode": mode}
            rows.append(r)
            print(f"{size:>10} {mode:>7}  {r['peak_rss_gb']:6.2f} GB  {r['seconds']:8.1f} s  {r['s_per_lr_mpx']:7.1f} s/Mpx")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
