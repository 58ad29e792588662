"""Reading, writing and converting images.

Images in files and numpy are HxWxC RGB (or HxW grayscale), uint8 or floats in [0, 1];
networks see NCHW float tensors. :func:`to_tensor` converts the former into the latter and
remembers how to give a result back in the caller's format (:meth:`ImageFormat.restore`).
"""
from __future__ import annotations

import os
import struct
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from ..atomic import atomic_write_bytes

__all__ = ["read_image", "exif_orientation", "read_icc_profile", "write_image", "modcrop", "list_images", "to_tensor",
           "ImageFormat", "IMAGE_EXTENSIONS"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


#: EXIF orientation (tag 0x0112) → the turn that shows the stored pixels upright, as viewers (and PIL's
#: ``ImageOps.exif_transpose``) apply it: 2 mirrored, 3 upside down, 4 flipped, 5-8 stored sideways
_UPRIGHT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a.swapaxes(0, 1)[::-1, ::-1],
    8: lambda a: np.rot90(a, 1),
}


def exif_orientation(path: str | os.PathLike) -> int:
    """The file's EXIF orientation (1-8; 1 = stored upright, also when the file has no EXIF or PIL cannot
    read it)."""
    from PIL import Image

    try:
        with Image.open(path) as f:
            value = int(f.getexif().get(0x0112, 1))
    except (OSError, ValueError, SyntaxError):  # not an image PIL reads (cv2 may), or a damaged EXIF block
        return 1
    return value if value in _UPRIGHT else 1


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as RGB(A) or grayscale numpy, uint8 (16-bit files stay uint16), turned upright by its
    EXIF orientation as image viewers show it (phone photos are often stored sideways with such a tag)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)  # all channels and bit depths; orientation left to us
    if img is None:
        raise ValueError(f"could not decode {path} as an image (supported: {', '.join(IMAGE_EXTENSIONS)})")
    if img.ndim == 3:
        if img.shape[2] == 3:
            img = img[:, :, ::-1]
        elif img.shape[2] == 4:
            img = img[:, :, [2, 1, 0, 3]]
    upright = _UPRIGHT.get(exif_orientation(path))
    return np.ascontiguousarray(upright(img) if upright else img)


def read_icc_profile(path: str | os.PathLike) -> bytes | None:
    """The ICC colour profile embedded in an image file (Display P3, Adobe RGB, ...), or None."""
    from PIL import Image

    try:
        with Image.open(path) as f:
            return f.info.get("icc_profile") or None
    except (OSError, ValueError, SyntaxError):  # not an image PIL reads (cv2 may)
        return None


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _with_icc_profile(encoded: bytes, ext: str, profile: bytes) -> bytes | None:
    """``encoded`` (cv2's PNG or JPEG bytes) with ``profile`` embedded: a PNG iCCP chunk after IHDR, or JPEG APP2
    ICC_PROFILE segments after SOI/APP0 (65,519 bytes of profile each); None for other formats."""
    if ext == ".png":
        end_of_ihdr = 8 + 4 + 4 + 13 + 4  # signature, then IHDR's length, type, 13 bytes of data and CRC
        chunk = _png_chunk(b"iCCP", b"ICC Profile\0\0" + zlib.compress(profile))
        return encoded[:end_of_ihdr] + chunk + encoded[end_of_ihdr:]
    if ext in (".jpg", ".jpeg"):
        at = 2  # after SOI; after a JFIF APP0 segment too, which must come first
        if encoded[2:4] == b"\xff\xe0":
            at = 4 + struct.unpack(">H", encoded[4:6])[0]
        pieces = [profile[i:i + 65519] for i in range(0, len(profile), 65519)]
        if len(pieces) > 255:
            return None
        segments = b"".join(b"\xff\xe2" + struct.pack(">H", 2 + 14 + len(piece)) + b"ICC_PROFILE\0"
                            + bytes([n + 1, len(pieces)]) + piece for n, piece in enumerate(pieces))
        return encoded[:at] + segments + encoded[at:]
    return None


def write_image(path: str | os.PathLike, img: np.ndarray | torch.Tensor, *, icc_profile: bytes | None = None) -> Path:
    """Write an RGB(A)/grayscale image (uint8, or floats in [0, 1], or a 1xCxHxW tensor) atomically.
    ``icc_profile``: the colour profile of the pixels (:func:`read_icc_profile` of the source), embedded in PNG
    and JPEG files; other formats cannot carry it here and warn."""
    from .metrics import to_uint8

    path = Path(path)
    a = to_uint8(img) if not (isinstance(img, np.ndarray) and img.dtype == np.uint16) else img
    if a.ndim == 3 and a.shape[2] == 3:
        a = a[:, :, ::-1]
    elif a.ndim == 3 and a.shape[2] == 4:
        a = a[:, :, [2, 1, 0, 3]]
    ext = path.suffix.lower() or ".png"
    ok, buf = cv2.imencode(ext, np.ascontiguousarray(a))
    if not ok:
        raise ValueError(f"cannot encode an image as {ext!r} for {path}; use one of {', '.join(IMAGE_EXTENSIONS)}")
    data = buf.tobytes()
    if icc_profile:
        tagged = _with_icc_profile(data, ext, icc_profile)
        if tagged is None:
            warnings.warn(f"{path}: {ext} files are written without the source's ICC colour profile, so colour-managed "
                          f"viewers may show other colours; write .png (or .jpg) to keep it", UserWarning, stacklevel=2)
        data = tagged or data
    return atomic_write_bytes(path, data)


def modcrop(img: np.ndarray, scale: int | float) -> np.ndarray:
    """Crop H and W down to multiples of ``scale`` (from the top-left, as the official code)."""
    s = int(round(scale))
    h, w = img.shape[:2]
    if s >= 1 and (h < s or w < s):  # cropping would leave an empty image, which fails far from here
        raise ValueError(f"image of {w}x{h} pixels is smaller than the scale {scale:g}: cropping it to multiples of "
                         f"{s} leaves nothing; give images of at least {s}x{s} pixels (in practice far larger)")
    return img[: h - h % s, : w - w % s]


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly in ``folder``, sorted by name."""
    folder = Path(folder)
    if folder.is_file():
        raise NotADirectoryError(f"{folder} is a file, not a folder of images; give the folder that holds the images")
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not files:
        raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {folder}")
    return files


@dataclass(frozen=True)
class ImageFormat:
    """How an input image was given, so a result can be returned the same way.

    * ``kind``: 'numpy' or 'tensor'; ``dtype``: the numpy/torch dtype
    * ``layout``: 'HW', 'HWC' (numpy), 'CHW' or 'NCHW' (tensor)
    * ``channels``: channels of the input (1, 3 or 4); grayscale is fed to a 3-channel network
      by repeating it, and the output is the mean of the three output channels. An alpha
      channel is not adapted: it is resized with bicubic interpolation and re-attached.
    """

    kind: str
    dtype: object
    layout: str
    channels: int
    device: torch.device | None = None

    def restore(self, rgb: torch.Tensor, alpha: torch.Tensor | None = None) -> np.ndarray | torch.Tensor:
        """Turn an 1xCxHxW float result in [0, 1] into the input's format (clipped). Numpy results are
        converted a band of rows at a time, so a large image never exists as a float64 array."""
        if self.kind == "tensor":
            out = self._channels(rgb, alpha)
            out = out.to(dtype=self.dtype, device=self.device)
            return out[0] if self.layout == "CHW" else out
        h, w = rgb.shape[-2:]
        channels = (1 if self.channels in (1, 2) and rgb.shape[1] == 3 else rgb.shape[1]) + (0 if alpha is None else 1)
        arr = np.empty((h, w, channels), dtype=np.dtype(self.dtype))
        band = max(1, _RESTORE_BAND_PIXELS // max(1, w))
        for r0 in range(0, h, band):
            part = self._channels(rgb[..., r0 : r0 + band, :], None if alpha is None else alpha[..., r0 : r0 + band, :])
            a = part[0].detach().to("cpu", torch.float64).permute(1, 2, 0).numpy()
            if np.dtype(self.dtype) == np.uint8:
                a = np.round(a * 255.0)
            elif np.dtype(self.dtype) == np.uint16:
                a = np.round(a * 65535.0)
            arr[r0 : r0 + band] = a  # casts to the input's dtype
        return arr[:, :, 0] if self.layout == "HW" else arr

    def _channels(self, rgb: torch.Tensor, alpha: torch.Tensor | None) -> torch.Tensor:
        """The result's channels, clipped to [0, 1]: the mean for grayscale inputs, alpha re-attached."""
        out = rgb.clamp(0, 1)
        if self.channels in (1, 2) and out.shape[1] == 3:
            out = out.mean(dim=1, keepdim=True)
        if alpha is not None:
            out = torch.cat([out, alpha.clamp(0, 1).to(out.dtype)], dim=1)
        return out


#: pixels per band when a result is converted to numpy (bounds the float64 temporaries to ~50 MB)
_RESTORE_BAND_PIXELS = 1 << 21


def to_tensor(
    img: np.ndarray | torch.Tensor, *, channels: int = 3, dtype: torch.dtype = torch.float32, device=None
) -> tuple[torch.Tensor, torch.Tensor | None, ImageFormat]:
    """Convert an image to a 1xCxHxW float tensor in [0, 1] for a ``channels``-channel network.

    Returns ``(rgb, alpha_or_None, format)``. Accepts numpy HxW / HxWxC (uint8, uint16 or float in
    [0, 1]) and tensors CxHxW / 1xCxHxW (float in [0, 1]).
    """
    if isinstance(img, torch.Tensor):
        if not img.is_floating_point():
            raise TypeError(f"tensor images must be float in [0, 1], got {img.dtype}; divide uint8 by 255")
        if img.ndim == 3:
            layout, t = "CHW", img[None]
        elif img.ndim == 4:
            if img.shape[0] != 1:
                raise ValueError(f"adapt() takes one image (1xCxHxW); got a batch of {img.shape[0]}: loop over it")
            layout, t = "NCHW", img
        else:
            raise ValueError(f"tensor image must be CxHxW or 1xCxHxW, got shape {tuple(img.shape)}")
        if not bool(torch.isfinite(t).all()):
            raise ValueError("image tensor contains NaN or infinite values")
        fmt = ImageFormat("tensor", img.dtype, layout, int(t.shape[1]), img.device)
        t = t.to(dtype=dtype, device=device if device is not None else img.device)
    elif isinstance(img, np.ndarray):
        a = img
        if a.ndim == 2:
            layout, a = "HW", a[:, :, None]
        elif a.ndim == 3:
            layout = "HWC"
            if a.shape[2] not in (1, 2, 3, 4, channels) and a.shape[0] in (1, 2, 3, 4, channels) \
                    and min(a.shape[1], a.shape[2]) > 4:  # a tiny HxWxC image is not mistaken for CHW
                raise ValueError(f"numpy image of shape {a.shape} looks like CHW (channels first, as torch holds "
                                 "images); numpy images are HxWxC: pass img.transpose(1, 2, 0), or a torch tensor")
        else:
            raise ValueError(f"numpy image must be HxW or HxWxC, got shape {a.shape}")
        if a.dtype == np.uint8:
            f = a.astype(np.float32) / 255.0
        elif a.dtype == np.uint16:
            f = a.astype(np.float32) / 65535.0
        elif np.issubdtype(a.dtype, np.floating):
            f = a.astype(np.float32)
            if not np.isfinite(f).all():
                raise ValueError("image contains NaN or infinite values")
            if f.size and (np.nanmin(f) < -1e-3 or np.nanmax(f) > 1 + 1e-3):
                raise ValueError(
                    f"float image values span [{np.nanmin(f):.3g}, {np.nanmax(f):.3g}]; expected [0, 1] "
                    "(divide 8-bit data by 255, or pass it as uint8)"
                )
        else:
            raise TypeError(f"image dtype {a.dtype} is not supported: use uint8, uint16 or float in [0, 1]")
        fmt = ImageFormat("numpy", a.dtype, layout, int(a.shape[2]))
        t = torch.from_numpy(np.ascontiguousarray(f.transpose(2, 0, 1)))[None].to(dtype=dtype, device=device)
    else:
        raise TypeError(f"image must be a numpy array or a torch tensor, got {type(img).__name__}")

    c = t.shape[1]
    alpha = None
    if c == channels:
        pass
    elif c == 4 and channels == 3:
        t, alpha = t[:, :3], t[:, 3:]
    elif c == 2 and channels == 3:  # gray + alpha
        t, alpha = t[:, :1].expand(-1, 3, -1, -1), t[:, 1:]
    elif c == 1 and channels == 3:
        t = t.expand(-1, 3, -1, -1)
    else:
        raise ValueError(f"image has {c} channels but the network takes {channels}")
    return t.contiguous(), alpha, fmt
