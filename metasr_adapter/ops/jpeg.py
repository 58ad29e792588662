"""JPEG as a degradation: compress NCHW tensors, and read a JPEG file's quality from its quantisation tables.

Compression goes through OpenCV's libjpeg (4:2:0 chroma, the IJG tables scaled by ``quality``), image by
image; it is not differentiable (data and son generation only). The quality of an existing file is the IJG
quality whose scaled luminance table is closest to the file's own.
"""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import Tensor

__all__ = ["jpeg_compress", "ijg_luma_table", "quality_from_table", "read_jpeg_quality"]

# ITU-T T.81 Annex K, table K.1 (luminance), natural (row-major) order: the table libjpeg scales by quality
_LUMA_BASE = np.array([
    16, 11, 10, 16, 24, 40, 51, 61,
    12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77,
    24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101,
    72, 92, 95, 98, 112, 100, 103, 99,
], dtype=np.int64)


def _check_quality(quality: int) -> int:
    if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)) or not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality={quality!r} must be an integer in 1..100 (libjpeg's scale; 75 is its default)")
    return int(quality)


def jpeg_compress(x: Tensor, quality: int) -> Tensor:
    """JPEG-compress and decode ``x`` ((C, H, W) or (N, C, H, W), C = 1 or 3, values in [0, 1]) at ``quality``.

    Each image is rounded to 8 bits first, as a JPEG file is; the result has ``x``'s dtype and device.
    """
    q = _check_quality(quality)
    if x.dim() not in (3, 4) or x.shape[-3] not in (1, 3):
        raise ValueError(f"jpeg_compress takes (C, H, W) or (N, C, H, W) with C = 1 or 3; got {tuple(x.shape)}")
    batch = x if x.dim() == 4 else x[None]
    arrays = (batch.detach().float().clamp(0, 1) * 255.0).round().to(torch.uint8).cpu().numpy()
    out = np.empty(arrays.shape, dtype=np.uint8)
    for i, a in enumerate(arrays):
        img = a[0] if a.shape[0] == 1 else np.ascontiguousarray(a.transpose(1, 2, 0)[:, :, ::-1])
        ok, buf = cv2.imencode(".jpg", img, [int(cv2.IMWRITE_JPEG_QUALITY), q])
        if not ok:
            raise RuntimeError(f"OpenCV could not JPEG-encode an image of shape {img.shape}")
        dec = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE if a.shape[0] == 1 else cv2.IMREAD_COLOR)
        out[i] = dec[None] if a.shape[0] == 1 else dec[:, :, ::-1].transpose(2, 0, 1)
    res = torch.from_numpy(out).to(device=x.device, dtype=x.dtype) / 255.0
    return res if x.dim() == 4 else res[0]


def ijg_luma_table(quality: int) -> np.ndarray:
    """The 64 luminance quantisers libjpeg writes for ``quality`` (baseline, natural order)."""
    q = _check_quality(quality)
    scale = 5000 // q if q < 50 else 200 - 2 * q
    return np.clip((_LUMA_BASE * scale + 50) // 100, 1, 255)


def quality_from_table(table: np.ndarray | list[int]) -> tuple[int, float]:
    """The IJG quality whose luminance table is closest to ``table`` (64 values, any order: the comparison
    sorts both, so zig-zag and natural order agree), and the mean absolute difference of that match
    (0 for a file written by libjpeg; larger for encoders with their own tables)."""
    t = np.sort(np.asarray(table, dtype=np.float64).ravel())
    if t.size != 64:
        raise ValueError(f"a JPEG quantisation table has 64 entries; got {t.size}")
    errors = [float(np.abs(np.sort(ijg_luma_table(q)) - t).mean()) for q in range(1, 101)]
    best = int(np.argmin(errors))
    return best + 1, errors[best]


def read_jpeg_quality(path: str | os.PathLike) -> int | None:
    """The JPEG quality of the file at ``path`` (from its luminance table), or None for a file that is not
    a JPEG. A progressive or non-IJG file still gets the closest IJG quality."""
    from PIL import Image

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"image not found: {p}")
    with Image.open(p) as im:
        if im.format != "JPEG":
            return None
        tables = getattr(im, "quantization", None) or {}
    if 0 not in tables:
        return None
    return quality_from_table(list(tables[0]))[0]
