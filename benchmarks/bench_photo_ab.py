"""The photo path's time, this working tree against an earlier commit, interleaved.

    python benchmarks/bench_photo_ab.py --base HEAD~1 --hr-dir ../shared/data/urban100 --start 10 --limit 4 \
        --threads 2 --json benchmarks/results/photo_ab.json
    python benchmarks/bench_photo_ab.py --base v0.3 my_photo.jpg other.png

``git worktree`` checks ``--base`` out into a temporary folder; then, ``--rounds`` times, each photo goes through
``metasr adapt PHOTO -o OUT`` (every default: the photo path) once from each tree, alternating which runs first, in
the same Python. Per photo: the seconds the command reports for its work (``wrote ... in X s``, without Python's
start-up), the whole process's wall time, their medians and ratios (this tree / base), and how far the two outputs
are apart (identical, or the largest difference in grey levels and the PSNR between them). ``--hr-dir`` makes the
photos: its first images after ``--start``, saved as JPEG quality ``--jpeg-quality`` (a web photo), in the temporary
folder. Nothing is written into either tree.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import result_record  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
_WROTE = re.compile(r"^wrote .* in ([\d.]+) s", re.M)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def reported_seconds(output: str) -> float:
    """The work time of ``metasr adapt``'s last ``wrote OUT (WxH) in X s`` line."""
    found = _WROTE.findall(output)
    if not found:
        raise RuntimeError(f"`metasr adapt` printed no 'wrote ... in X s' line:\n{output[-2000:]}")
    return float(found[-1])


def make_photos(hr_dir: Path, start: int, limit: int, quality: int, out: Path) -> list[Path]:
    """The ``limit`` images of ``hr_dir`` after the first ``start`` (sorted by name), as RGB JPEGs in ``out``."""
    from PIL import Image

    files = sorted(p for p in hr_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[start:start + limit]
    if not files:
        raise SystemExit(f"bench_photo_ab.py: no images in {hr_dir} after the first {start}")
    photos = []
    for f in files:
        dst = out / f"{f.stem}.jpg"
        Image.open(f).convert("RGB").save(dst, quality=quality)
        photos.append(dst)
    return photos


def run_once(tree: Path, photo: Path, out: Path, threads: int | None) -> tuple[float, float]:
    """``(reported seconds, wall seconds)`` of ``metasr adapt photo -o out`` run from ``tree``
    (its package first on the path: the current folder comes first in ``python -m``)."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    cmd = [sys.executable, "-m", "metasr_adapter", "adapt", str(photo), "-o", str(out)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"`metasr adapt` failed in {tree} (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    return reported_seconds(proc.stdout), wall


def output_difference(a: Path, b: Path) -> dict[str, float | None]:
    """How far two 8-bit outputs are apart: the largest difference in grey levels, the share of differing values
    and the PSNR between them (None when identical)."""
    import numpy as np
    from PIL import Image

    x, y = (np.asarray(Image.open(p), dtype=np.float64) for p in (a, b))
    if x.shape != y.shape:
        raise RuntimeError(f"the two trees wrote outputs of different sizes: {x.shape} and {y.shape}")
    mse = float(((x - y) ** 2).mean())
    return {"max_abs_levels": float(np.abs(x - y).max()), "share_differing": float((x != y).mean()),
            "psnr_between_db": None if mse == 0 else 10 * float(np.log10(255 ** 2 / mse))}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("photos", nargs="*", help="photo files (or --hr-dir)")
    ap.add_argument("--base", required=True, help="the git revision to compare against (a commit, tag or HEAD~1)")
    ap.add_argument("--hr-dir", default=None, help="make the photos from this folder's images (JPEG)")
    ap.add_argument("--start", type=int, default=0, help="with --hr-dir: skip the first N images")
    ap.add_argument("--limit", type=int, default=4, help="with --hr-dir: this many images")
    ap.add_argument("--jpeg-quality", type=int, default=90, help="with --hr-dir: the JPEG quality")
    ap.add_argument("--rounds", type=int, default=2, help="runs of each photo from each tree")
    ap.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS of the runs")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    for name in ("limit", "rounds"):
        if getattr(args, name) < 1:
            ap.error(f"--{name} {getattr(args, name)}: give a positive number")
    if args.start < 0:
        ap.error(f"--start {args.start}: give 0 or more")
    if not 1 <= args.jpeg_quality <= 100:
        ap.error(f"--jpeg-quality {args.jpeg_quality}: give 1..100")
    if args.threads is not None and args.threads < 1:
        ap.error(f"--threads {args.threads}: give a positive number")
    if bool(args.photos) == bool(args.hr_dir):
        ap.error("give photo files or --hr-dir (one of the two)")
    missing = [p for p in args.photos if not Path(p).is_file()]
    if missing:
        ap.error(f"no such photo: {', '.join(missing)}")
    resolved = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{args.base}^{{commit}}"], cwd=ROOT,
                              capture_output=True, text=True)
    if resolved.returncode != 0:
        ap.error(f"--base {args.base!r} is not a commit of this repository (try HEAD~1 or a hash from `git log`)")
    base_commit = resolved.stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        base_tree = tmp_path / "base"
        subprocess.run(["git", "worktree", "add", "--detach", "--quiet", str(base_tree), base_commit], cwd=ROOT,
                       check=True)
        try:
            photos = ([Path(p).resolve() for p in args.photos] if args.photos else
                      make_photos(Path(args.hr_dir), args.start, args.limit, args.jpeg_quality, tmp_path))
            trees = {"base": base_tree, "this": ROOT}
            rows = {}
            for photo in photos:
                times: dict[str, dict[str, list[float]]] = {k: {"reported": [], "wall": []} for k in trees}
                for r in range(args.rounds):
                    for label in (("base", "this") if r % 2 == 0 else ("this", "base")):
                        rep, wall = run_once(trees[label], photo, tmp_path / f"sr_{label}.png", args.threads)
                        times[label]["reported"].append(rep)
                        times[label]["wall"].append(wall)
                med = {k: {m: statistics.median(v) for m, v in t.items()} for k, t in times.items()}
                diff = output_difference(tmp_path / "sr_base.png", tmp_path / "sr_this.png")
                rows[photo.name] = row = {
                    "seconds": times, "median": med, "identical_output": diff["max_abs_levels"] == 0,
                    "output_difference": diff,
                    "ratio_reported": med["this"]["reported"] / med["base"]["reported"],
                    "ratio_wall": med["this"]["wall"] / med["base"]["wall"]}
                print(f"{photo.name}: base {med['base']['reported']:.2f} s, this tree {med['this']['reported']:.2f} s "
                      f"(ratio {row['ratio_reported']:.3f}; wall {row['ratio_wall']:.3f}); outputs "
                      f"{'identical' if row['identical_output'] else 'differ'} "
                      f"(max {row['output_difference']['max_abs_levels']:.0f} levels)", flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base_tree)], cwd=ROOT, capture_output=True)
    ratios = [r["ratio_reported"] for r in rows.values()]
    print(f"median ratio (this tree / base), reported seconds: {statistics.median(ratios):.3f} over {len(rows)} photos")
    if args.json:
        out = {"rows": rows, "base": base_commit, "median_ratio_reported": statistics.median(ratios),
               "median_ratio_wall": statistics.median(r["ratio_wall"] for r in rows.values()),
               "record": result_record(argv, threads=args.threads, script=__file__)}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
