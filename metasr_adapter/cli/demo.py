"""``metasr demo``: degrade a photo by a known kernel, adapt, and show what adaptation did."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..adapt.evaluate import synthesize_lr
from ..ops.imageio import modcrop, read_image
from ..ops.kernels import resolve_kernel
from ..ops.metrics import psnr, to_uint8

__all__ = ["bundled_photo", "run_demo", "side_by_side"]


def bundled_photo() -> np.ndarray:
    """A real RGB photo that ships with matplotlib (Grace Hopper, 600x512)."""
    import matplotlib

    return read_image(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg")


def side_by_side(panels: list[tuple[str, np.ndarray]], output: str | Path, crop: tuple[int, int, int] | None = None) -> Path:
    """Save equally sized labelled images in a row (and a zoomed crop ``(top, left, size)`` below) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..io.atomic import atomic_write

    rows = 2 if crop else 1
    fig, axes = plt.subplots(rows, len(panels), figsize=(3.2 * len(panels), 3.4 * rows), squeeze=False)
    for j, (title, img) in enumerate(panels):
        axes[0, j].imshow(img, interpolation="nearest")
        axes[0, j].set_title(title, fontsize=9)
        if crop:
            t, l, s = crop
            axes[1, j].imshow(img[t : t + s, l : l + s], interpolation="nearest")
        for ax in axes[:, j]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    out = Path(output)
    atomic_write(out, lambda tmp: fig.savefig(tmp, format=out.suffix.lstrip(".") or "png", dpi=110))
    plt.close(fig)
    return out


def run_demo(
    metasr,
    *,
    image: str | None = None,
    kernel: str = "gd2.0",
    ds_method: str | None = None,
    steps: int = 10,
    output: str = "metasr_demo.png",
    back_projection: int = 0,
    self_ensemble: bool = False,
) -> int:
    """Degrade, adapt for ``steps`` steps printing PSNR after each, write the comparison PNG."""
    from ..ops.degrade import imresize
    from ..ops.imageio import to_tensor

    s = metasr.scale
    gt = modcrop(bundled_photo() if image is None else read_image(image), s)
    if gt.ndim == 3 and gt.shape[2] == 4:
        gt = gt[:, :, :3]
    spec = resolve_kernel(kernel, ds_method)
    lr = synthesize_lr(gt, spec, s)
    crop = int(s)
    x, _, _ = to_tensor(lr)
    bic = to_uint8(imresize(x, s, output_shape=gt.shape[:2]).clamp(0, 1))
    print(f"photo {gt.shape[1]}x{gt.shape[0]} -> LR {lr.shape[1]}x{lr.shape[0]} by kernel "
          f"{spec.name or 'custom'} ({spec.ds_method} subsampling), x{s:g}; {metasr}")
    print(f"{'':>12} {'PSNR (dB, Y)':>14}")
    print(f"{'bicubic':>12} {psnr(bic, gt, crop):14.4f}")
    session = metasr.start(lr, spec)
    first = session.result()
    print(f"{'step 0':>12} {psnr(first, gt, crop):14.4f}")
    for k in range(1, steps + 1):
        rec = session.step()
        sr = session.result(back_projection=back_projection, self_ensemble=self_ensemble) if k == steps else session.result()
        print(f"{'step ' + str(k):>12} {psnr(sr, gt, crop):14.4f}   (loss {rec.loss:.5f}, lr {rec.lr:g})")
    last = sr if steps else first
    lr_big = np.repeat(np.repeat(lr, int(math.ceil(s)), 0), int(math.ceil(s)), 1)[: gt.shape[0], : gt.shape[1]]
    panels = [
        ("LR (nearest)", lr_big),
        (f"bicubic {psnr(bic, gt, crop):.2f} dB", bic),
        (f"0 steps {psnr(first, gt, crop):.2f} dB", first),
        (f"{steps} steps {psnr(last, gt, crop):.2f} dB", last),
        ("ground truth", gt),
    ]
    h, w = gt.shape[:2]
    size = min(h, w) // 4
    out = side_by_side(panels, output, crop=((h - size) // 3, (w - size) // 2, size))
    print(f"wrote {out}")
    return 0
