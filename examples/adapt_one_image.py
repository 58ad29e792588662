"""Adapt a network to one LR image and compare its PSNR before and after adaptation.

    python examples/adapt_one_image.py LR.png GT.png [--weights NAME|PATH] [--kernel gd2.0] [--steps 10]

Shows the library calls a downstream pipeline uses: load_model, MetaSR.start / step / result,
and psnr.
"""
from __future__ import annotations

import argparse

from metasr_adapter import MetaSR, load_model, psnr, read_image, write_image
from metasr_adapter.ops.imageio import modcrop


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("lr")
    ap.add_argument("gt")
    ap.add_argument("--weights", default=None,
                    help="bundled weights name or a file (default: the bundled default, mzsr_x2_direct_lslr_v3)")
    ap.add_argument("--kernel", default="gd2.0")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("-o", "--output", default="sr.png")
    args = ap.parse_args()

    # arch, scale and test-time schedule (learned rates for mzsr_x2_direct_lslr_v3) come from the weights' metadata;
    # a file without it gets MetaSR's defaults (x2, the MZSR direct schedule)
    msr = MetaSR(load_model(weights=args.weights))
    lr, gt = read_image(args.lr), modcrop(read_image(args.gt), 2)
    session = msr.start(lr, args.kernel)
    print(f"step  0: {psnr(session.result(), gt, crop_border=2):.4f} dB")
    for _ in range(args.steps):
        rec = session.step()
        print(f"step {rec.step + 1:2d}: {psnr(session.result(), gt, crop_border=2):.4f} dB  (loss {rec.loss:.5f})")
    write_image(args.output, session.result())
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
