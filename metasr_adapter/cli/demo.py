"""``metasr demo``: a web-style JPEG through the photo path (the default), or a photo degraded by a known kernel
and adapted step by step (``--kernel``), with labelled crops."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..pipelines.evaluate import synthesize_lr
from ..ops.imageio import modcrop, read_image
from ..ops.kernels import resolve_kernel
from ..ops.metrics import psnr, to_uint8

__all__ = ["bundled_photo", "run_demo", "run_photo_demo", "side_by_side", "crops_figure", "web_jpeg"]


def bundled_photo() -> np.ndarray:
    """A real RGB photo that ships with matplotlib (Grace Hopper, 600x512)."""
    import matplotlib

    return read_image(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg")


def side_by_side(panels: list[tuple[str, np.ndarray]], output: str | Path, crop: tuple[int, int, int] | None = None) -> Path:
    """Save equally sized labelled images in a row (and a zoomed crop ``(top, left, size)`` below) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..atomic import atomic_savefig

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
    out = atomic_savefig(fig, output, dpi=110)
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
    back_projection: int | None = None,
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


def web_jpeg(hr: np.ndarray, quality: int = 75) -> bytes:
    """What a web page serves: ``hr`` resized to half with PIL's bicubic filter, saved as JPEG at ``quality``."""
    import io

    from PIL import Image

    h, w = hr.shape[:2]
    buf = io.BytesIO()
    Image.fromarray(hr).resize((w // 2, h // 2), Image.BICUBIC).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _textured_boxes(img: np.ndarray, size: int, count: int = 2) -> list[tuple[int, int]]:
    """Top-left corners of the ``count`` most textured non-overlapping ``size``² windows (a coarse grid)."""
    g = img.astype(np.float64).mean(-1) if img.ndim == 3 else img.astype(np.float64)
    e = np.abs(np.diff(g, axis=0))[:, :-1] + np.abs(np.diff(g, axis=1))[:-1, :]
    cands = []
    for i in range(0, g.shape[0] - size, size // 2):
        for j in range(0, g.shape[1] - size, size // 2):
            cands.append((float(e[i : i + size, j : j + size].mean()), i, j))
    chosen: list[tuple[int, int]] = []
    for _, i, j in sorted(cands, reverse=True):
        if all(abs(i - a) >= size or abs(j - b) >= size for a, b in chosen):
            chosen.append((i, j))
        if len(chosen) == count:
            break
    return chosen


def crops_figure(full: np.ndarray, panels: list[tuple[str, np.ndarray]], output: str | Path, size: int = 96,
                 title: str = "") -> Path:
    """The full image with each crop's box marked, then one row per crop with every panel's crop, labelled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from ..atomic import atomic_savefig

    boxes = _textured_boxes(full, size)
    colours = ["red", "cyan", "yellow"]
    n = len(panels)
    fig = plt.figure(figsize=(3.0 * (n + 1), 3.4 * len(boxes)))
    grid = fig.add_gridspec(len(boxes), n + 1)
    ax = fig.add_subplot(grid[:, 0])
    ax.imshow(full)
    for (i, j), c in zip(boxes, colours):
        ax.add_patch(Rectangle((j, i), size, size, fill=False, edgecolor=c, linewidth=2))
    ax.set_title(title or "ground truth (boxes: crops)", fontsize=9)
    ax.axis("off")
    for r, ((i, j), c) in enumerate(zip(boxes, colours)):
        for k, (label, img) in enumerate(panels):
            a = fig.add_subplot(grid[r, k + 1])
            a.imshow(img[i : i + size, j : j + size], interpolation="nearest")
            a.set_title(label, fontsize=9)
            for spine in a.spines.values():
                spine.set_edgecolor(c)
                spine.set_linewidth(2)
            a.set_xticks([])
            a.set_yticks([])
    fig.tight_layout()
    out = atomic_savefig(fig, output, dpi=100)
    plt.close(fig)
    return out


def run_photo_demo(metasr, weights: str, *, image: str | None = None, quality: int = 75, steps: int = 5,
                   output: str = "metasr_demo.png", specialists: dict | None = None) -> int:
    """A web JPEG of the photo (half size, bicubic, JPEG ``quality``) through the photo path, against PIL bicubic
    and the plain network; prints the scores and the path's choice, writes the crops figure. ``specialists``:
    the photo path's grid specialists (see :func:`~metasr_adapter.pipelines.photo.upscale_photo`)."""
    import tempfile

    from PIL import Image

    from ..ops.jpeg import read_jpeg_quality
    from ..pipelines.photo import upscale_photo

    gt = modcrop(bundled_photo() if image is None else read_image(image), 2)
    if gt.ndim == 2:
        gt = np.repeat(gt[:, :, None], 3, axis=2)
    gt = np.ascontiguousarray(gt[:, :, :3])
    data = web_jpeg(gt, quality)
    with tempfile.TemporaryDirectory() as tmp:  # read back as a file, as a user's photo is
        path = Path(tmp) / "web.jpg"
        path.write_bytes(data)
        lr = read_image(path)
        q = read_jpeg_quality(path)
    h, w = gt.shape[:2]
    bic = np.asarray(Image.fromarray(lr).resize((w, h), Image.BICUBIC))
    print(f"photo {w}x{h} -> a web JPEG: PIL bicubic to {lr.shape[1]}x{lr.shape[0]}, JPEG quality {q} "
          f"({len(data) / 1024:.0f} KiB); weights {weights}")
    plain, plain_info = upscale_photo(lr, metasr, steps=0, jpeg_quality=q, weights_name=weights,
                                      specialists=specialists, return_info=True)
    sr, info = upscale_photo(lr, metasr, steps=steps, jpeg_quality=q, weights_name=weights, specialists=specialists,
                             return_info=True)
    for line in info.summary_lines():
        print(line)
    scores = {"PIL bicubic": psnr(bic, gt, 2), f"{plain_info.weights}, no adaptation": psnr(plain, gt, 2),
              "metasr adapt (default)": psnr(sr, gt, 2)}
    print(f"{'':>28} {'PSNR (dB, Y)':>14}")
    for name, value in scores.items():
        print(f"{name:>28} {value:14.4f}")
    lr_big = np.repeat(np.repeat(lr, 2, 0), 2, 1)[:h, :w]
    panels = [("web JPEG (nearest)", lr_big), (f"PIL bicubic {scores['PIL bicubic']:.2f} dB", bic),
              (f"metasr adapt {scores['metasr adapt (default)']:.2f} dB", sr), ("ground truth", gt)]
    out = crops_figure(gt, panels, output, size=min(96, h // 3, w // 3))
    print(f"wrote {out}")
    return 0
