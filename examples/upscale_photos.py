"""Upscale photos x2 inside a Python pipeline with the photo path, and keep what it decided for each one.

    python examples/upscale_photos.py photo1.jpg photo2.png ... [-o out_dir] [--steps 5]

Shows the library calls a downstream pipeline uses: load the photo path's networks once
(``load_photo_model``, ``load_grid_specialists``), then per image ``upscale_photo`` with the file's JPEG
quality (``read_jpeg_quality``) and ``return_info=True`` (the weights used, the estimated degradation, and
whether the adapted or the plain network's output was kept, with the reason).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from metasr_adapter import read_image, upscale_photo, write_image
from metasr_adapter.ops.jpeg import read_jpeg_quality
from metasr_adapter.pipelines.photo import load_grid_specialists, load_photo_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("photos", nargs="+")
    ap.add_argument("-o", "--out-dir", default="upscaled")
    ap.add_argument("--steps", type=int, default=5)
    args = ap.parse_args()

    msr, name = load_photo_model()  # loaded once for every image (bf16 where the CPU runs it fast)
    specialists = load_grid_specialists(device=msr.device, precision=msr.precision)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in map(Path, args.photos):
        sr, info = upscale_photo(read_image(path), msr, steps=args.steps, jpeg_quality=read_jpeg_quality(path),
                                 weights_name=name, specialists=specialists, return_info=True)
        write_image(out_dir / f"{path.stem}_x2.png", sr)
        (out_dir / f"{path.stem}_x2.json").write_text(json.dumps(info.to_dict(), indent=1) + "\n")
        print(f"{path.name}: " + "; ".join(info.summary_lines()) + f" ({info.seconds:.1f} s)")


if __name__ == "__main__":
    main()
