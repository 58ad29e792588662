"""Peak memory (RSS) and seconds of adaptation + SR for LR images of growing size, with and without the
memory budget (``tile=`` for the SR forward, ``max_pixels=`` for the adaptation steps).

    python benchmarks/bench_memory.py                                  # 256², 1024², 2048², 4000x3000
    python benchmarks/bench_memory.py --sizes 256x256 1024x1024 --steps 1 --tile 512 --max-pixels 65536
    python benchmarks/bench_memory.py --sizes 4000x3000 --modes cli   # `metasr adapt` itself: read, adapt, write

Each (size, mode) runs in a fresh process so that its peak RSS (``ru_maxrss``) is its own; the LR image is
random-textured (the content does not change the cost). Mode ``cli`` runs ``metasr adapt FILE --tile T
--max-pixels P`` in the worker (PNG read and write included). Weights: the bundled ``mzsr_x2_direct`` (a
random MZSRNet when the package ships none). Reported: peak RSS in GB, seconds, and seconds per
megapixel of LR, to check that time grows linearly with pixels. ``--json`` writes ``{"rows": [...], "record":
{...}}`` (files written before the record existed hold the list of rows alone).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import result_record  # noqa: E402  (benchmarks/_record.py)


def cli_worker(h: int, w: int, steps: int, tile: int | None, max_pixels: int | None, threads: int) -> dict:
    """Peak RSS and seconds of ``metasr adapt`` on a random-textured h x w PNG."""
    import tempfile

    import numpy as np

    from metasr_adapter.cli.main import main as cli_main
    from metasr_adapter.ops.imageio import read_image, write_image

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "lr.png", Path(tmp) / "sr.png"
        write_image(src, (np.random.default_rng(0).random((h, w, 3)) * 255).astype(np.uint8))
        argv = ["adapt", str(src), "-o", str(dst), "--steps", str(steps), "--threads", str(threads), "--kernel", "gd2.0"]
        argv += ["--tile", str(tile)] if tile else []
        argv += ["--max-pixels", str(max_pixels)] if max_pixels else []
        t0 = time.perf_counter()
        rc = cli_main(argv)
        secs = time.perf_counter() - t0
        if rc != 0:
            raise SystemExit(f"metasr {' '.join(argv)} exited with {rc}")
        sr_h, sr_w = read_image(dst).shape[:2]
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024
    return {"lr": f"{w}x{h}", "sr": f"{sr_w}x{sr_h}", "steps": steps, "tile": tile, "max_pixels": max_pixels,
            "seconds": secs, "peak_rss_gb": peak_gb, "s_per_lr_mpx": secs / (h * w / 1e6)}


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
    ap.add_argument("--modes", default="budget,full",
                    help="budget (tile + max_pixels), full (neither), cli (`metasr adapt` with the budget)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    ap.add_argument("--worker", nargs=6, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        kind, (h, w, steps, tile, mp) = args.worker[0], (int(v) if v != "none" else None for v in args.worker[1:])
        run = cli_worker if kind == "cli" else worker
        print("RESULT " + json.dumps(run(h, w, steps, tile, mp, args.threads)))
        return 0
    record = result_record(threads=args.threads, script=__file__)  # the workers' thread count
    rows = []
    for size in args.sizes:
        w, h = (int(v) for v in size.split("x"))
        for mode in args.modes.split(","):
            if mode not in ("budget", "full", "cli"):
                raise SystemExit(f"--modes: unknown mode {mode!r}; use budget, full and/or cli")
            tile, mp = (args.tile, args.max_pixels) if mode in ("budget", "cli") else (None, None)
            cmd = [sys.executable, __file__, "--threads", str(args.threads), "--worker", mode, str(h), str(w), str(args.steps),
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
        Path(args.json).write_text(json.dumps({"rows": rows, "record": record}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
