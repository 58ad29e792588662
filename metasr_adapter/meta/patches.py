"""The HR patches MZSR meta-trains on (SPEC §3a): :class:`PatchPool` crops a folder of images into
``patch_size`` patches at ``stride``, keeps those whose gradient energy passes the filter, each usable in the 8
dihedral orientations, and optionally stores the aligned bicubic LR patches of the large-scale pretraining
(SPEC §8). Built lazily on first use, kept in memory, optionally cached on disk under a fingerprint of the
images' contents and the settings."""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..ops.augment import dihedral
from ..ops.degrade import imresize
from ..ops.imageio import IMAGE_EXTENSIONS, exif_orientation, read_image

__all__ = ["GRAD_THRESHOLD", "gradient_energy", "find_images", "PatchPool", "warn_if_pool_changed"]

#: SPEC §3a: a patch is kept when log(mean gradient energy + 1e-10) >= -6.0
GRAD_THRESHOLD = -6.0
_POOL_VERSION = 1


def gradient_energy(patch: np.ndarray) -> float:
    """SPEC §3a's filter value of one uint8 HxWxC patch:
    ``log(mean((p[:-1,:-1]-p[1:,:-1])² + (p[:-1,:-1]-p[:-1,1:])²) + 1e-10)`` with ``p = patch/255``
    in float64, the mean over all (H-1)(W-1)C elements."""
    p = patch.astype(np.float64) / 255.0
    dy = p[:-1, :-1] - p[1:, :-1]
    dx = p[:-1, :-1] - p[:-1, 1:]
    return float(np.log(np.mean(dy**2 + dx**2) + 1e-10))


def find_images(root: str | os.PathLike, recursive: bool = True) -> list[Path]:
    """Image files under ``root`` (PNG/JPG/BMP/TIF/WebP), sorted by relative path."""
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"training-image folder not found: {root} (set data.train_dir to a folder of images)")
    if not root.is_dir():
        raise ValueError(f"training-image path {root} is not a folder; give a folder of PNG/JPG images")
    it = root.rglob("*") if recursive else root.iterdir()
    files = sorted((p for p in it if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS),
                   key=lambda p: p.relative_to(root).as_posix())
    if not files:
        where = "under" if recursive else "directly in"
        raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) {where} {root}"
                         + ("" if recursive else "; images in sub-folders need recursive=True"))
    return files


def _as_rgb_uint8(img: np.ndarray, path: Path) -> np.ndarray:
    if img.dtype == np.uint16:
        img = np.round(img / 257.0).astype(np.uint8)
    if img.dtype != np.uint8:
        raise ValueError(f"{path}: unsupported image dtype {img.dtype}; use 8-bit images")
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    elif img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    elif img.shape[2] == 2:  # gray + alpha
        img = np.repeat(img[:, :, :1], 3, axis=2)
    elif img.shape[2] == 4:
        img = img[:, :, :3]
    return np.ascontiguousarray(img)



class PatchPool:
    """HR patches of the images in ``root`` (SPEC §3a), extracted lazily and cached.

    Args:
        root: folder of images (grayscale is repeated to RGB, alpha dropped).
        patch_size / stride / grad_threshold: SPEC §3a (64 / 120 / -6.0).
        augment: each kept patch enters the pool in the 8 dihedral orientations (SPEC §3a).
        recursive: also read sub-folders.
        lr_scale: also store the aligned LR patch of each HR patch: the whole image (modcropped
            by the scale) is downscaled with antialiased MATLAB bicubic and rounded to uint8, like
            DIV2K's official LR images (SPEC §8; those files are not used here), and the LR patch
            is ``lr[i//s : i//s + P//s, j//s : j//s + P//s]``.
        cache_dir: folder for an on-disk copy of the pool (keyed by :meth:`fingerprint`: the files' names
            and contents, and the settings); ``None`` keeps it in memory only.
        progress: tqdm bar while building.

    Images smaller than ``patch_size`` give no patch and are skipped with one warning; a folder
    with no usable patch raises ``ValueError``.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        patch_size: int = 64,
        stride: int = 120,
        grad_threshold: float = GRAD_THRESHOLD,
        augment: bool = True,
        recursive: bool = True,
        lr_scale: int | None = None,
        cache_dir: str | os.PathLike | None = None,
        progress: bool = False,
    ) -> None:
        if patch_size < 2 or stride < 1:
            raise ValueError(f"patch_size={patch_size}, stride={stride}: need patch_size >= 2 and stride >= 1")
        if lr_scale is not None and (lr_scale < 1 or patch_size % lr_scale):
            raise ValueError(f"patch_size={patch_size} must be a multiple of lr_scale={lr_scale}")
        self.root = Path(root)
        self.files = find_images(self.root, recursive)
        self.patch_size = int(patch_size)
        self.stride = int(stride)
        self.grad_threshold = float(grad_threshold)
        self.augment = bool(augment)
        self.lr_scale = None if lr_scale is None else int(lr_scale)
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self.progress = progress
        self._hr: np.ndarray | None = None
        self._lr: np.ndarray | None = None
        self._origin: np.ndarray | None = None
        self._fingerprint: tuple[tuple[tuple[int, int], ...], str] | None = None

    # -- identity --------------------------------------------------------------------------
    def fingerprint(self) -> str:
        """Hash of the files (relative names and bytes) and the extraction settings. Timestamps do not count:
        the same images copied again are the same training set. The bytes are read again only when a file's
        size or mtime moved since the last call."""
        stats = tuple((st.st_size, st.st_mtime_ns) for st in (f.stat() for f in self.files))
        if self._fingerprint is None or self._fingerprint[0] != stats:
            h = hashlib.sha256()
            settings = [_POOL_VERSION, self.patch_size, self.stride, self.grad_threshold, self.lr_scale]
            h.update(json.dumps(settings).encode())
            for f in self.files:
                h.update(f"{f.relative_to(self.root).as_posix()}\0".encode())
                h.update(hashlib.sha256(f.read_bytes()).digest())
                turn = exif_orientation(f)
                if turn != 1:  # read upright since 2026-12-04: a pool cached from the stored pixels is not this one
                    h.update(f"\0upright {turn}".encode())
            self._fingerprint = (stats, h.hexdigest()[:20])
        return self._fingerprint[1]

    # -- building --------------------------------------------------------------------------
    def _extract(self, img: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray], list[tuple[int, int]]]:
        ps, st = self.patch_size, self.stride
        hr_list, lr_list, pos = [], [], []
        lr_img = None
        if self.lr_scale is not None:
            s = self.lr_scale
            img = img[: img.shape[0] - img.shape[0] % s, : img.shape[1] - img.shape[1] % s]
            x = torch.from_numpy(img.transpose(2, 0, 1).astype(np.float64) / 255.0)[None]
            lr_t = imresize(x, 1.0 / s)
            lr_img = np.round(lr_t.clamp(0, 1)[0].numpy().transpose(1, 2, 0) * 255.0).astype(np.uint8)
        h, w = img.shape[:2]
        for i in range(0, h - ps + 1, st):
            for j in range(0, w - ps + 1, st):
                p = img[i : i + ps, j : j + ps]
                if gradient_energy(p) >= self.grad_threshold:
                    hr_list.append(p)
                    pos.append((i, j))
                    if lr_img is not None:
                        s, q = self.lr_scale, ps // self.lr_scale
                        lr_list.append(lr_img[i // s : i // s + q, j // s : j // s + q])
        return hr_list, lr_list, pos

    def build(self) -> "PatchPool":
        """Extract the patches now (otherwise done on first use)."""
        if self._hr is not None:
            return self
        cache = None
        if self.cache_dir is not None:
            tag = "pairs" if self.lr_scale else "hr"
            cache = self.cache_dir / f"patchpool_{tag}_{self.fingerprint()}.npz"
            if cache.is_file():
                with np.load(cache, allow_pickle=False) as data:
                    self._hr = data["hr"]
                    self._lr = data["lr"] if "lr" in data else None
                    self._origin = data["origin"]
                return self
        from tqdm.auto import tqdm

        hr_all, lr_all, origin = [], [], []
        small = []
        for k, f in enumerate(tqdm(self.files, desc="patch pool", unit="img", disable=not self.progress)):
            img = _as_rgb_uint8(read_image(f), f)
            if min(img.shape[:2]) < self.patch_size:
                small.append(f.name)
                continue
            hr, lr, pos = self._extract(img)
            hr_all.extend(hr)
            lr_all.extend(lr)
            origin.extend((k, i, j) for i, j in pos)
        if small:
            warnings.warn(f"{len(small)} image(s) smaller than the {self.patch_size}x{self.patch_size} patch were "
                          f"skipped (e.g. {small[0]})", UserWarning, stacklevel=2)
        if not hr_all:
            raise ValueError(
                f"no usable {self.patch_size}x{self.patch_size} patch in {len(self.files)} image(s) under {self.root}: "
                + ("every image is smaller than the patch; use larger images or a smaller patch size"
                   if len(small) == len(self.files) else
                   f"all patches fail the gradient-energy filter (>= {self.grad_threshold}); use textured images")
            )
        self._hr = np.ascontiguousarray(np.stack(hr_all))
        self._lr = np.ascontiguousarray(np.stack(lr_all)) if self.lr_scale is not None else None
        self._origin = np.asarray(origin, dtype=np.int64)
        if cache is not None:
            from ..atomic import atomic_write

            arrays = {"hr": self._hr, "origin": self._origin}
            if self._lr is not None:
                arrays["lr"] = self._lr

            def _write(tmp: str) -> None:
                with open(tmp, "wb") as fh:
                    np.savez(fh, **arrays)

            atomic_write(cache, _write)
        return self

    # -- access ----------------------------------------------------------------------------
    @property
    def num_patches(self) -> int:
        """Distinct (unaugmented) patches that passed the filter."""
        return int(self.build()._hr.shape[0])

    def __len__(self) -> int:
        """Pool entries: patches × 8 orientations with ``augment``."""
        return self.num_patches * (8 if self.augment else 1)

    def _split(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        index = np.asarray(index, dtype=np.int64)
        if index.size and (index.min() < 0 or index.max() >= len(self)):
            raise IndexError(f"pool index out of range 0..{len(self) - 1}")
        return (index // 8, index % 8) if self.augment else (index, np.zeros_like(index))

    def hr_patches(self, index: Sequence[int] | np.ndarray) -> np.ndarray:
        """uint8 [N, P, P, 3] patches for pool entries ``index`` (orientation applied)."""
        self.build()
        n, m = self._split(np.asarray(index))
        return np.stack([dihedral(self._hr[a], b, dims=(0, 1)) for a, b in zip(n, m)]) if n.size else self._hr[:0]

    def lr_patches(self, index: Sequence[int] | np.ndarray) -> np.ndarray:
        """uint8 [N, P/s, P/s, 3] LR patches aligned with :meth:`hr_patches` (needs ``lr_scale``)."""
        self.build()
        if self._lr is None:
            raise ValueError("this pool has no LR patches; build it with lr_scale=2 (pretraining pairs)")
        n, m = self._split(np.asarray(index))
        return np.stack([dihedral(self._lr[a], b, dims=(0, 1)) for a, b in zip(n, m)]) if n.size else self._lr[:0]

    def origin(self, index: int) -> tuple[Path, int, int, int]:
        """(image file, row, column, orientation) of pool entry ``index``."""
        self.build()
        n, m = self._split(np.asarray([index]))
        k, i, j = self._origin[n[0]]
        return self.files[int(k)], int(i), int(j), int(m[0])

    def draw(self, rng: np.random.RandomState, count: int) -> np.ndarray:
        """``count`` pool indices, without repetition when the pool is large enough."""
        size = len(self)
        return rng.choice(size, size=count, replace=size < count)

    def __repr__(self) -> str:
        n = "unbuilt" if self._hr is None else f"{self.num_patches} patches"
        return (f"PatchPool({str(self.root)!r}, {len(self.files)} images, {n}, patch={self.patch_size}, "
                f"stride={self.stride}, augment={self.augment}, lr_scale={self.lr_scale})")


def warn_if_pool_changed(pool: "PatchPool", state: dict[str, Any]) -> None:
    """Warn when a sampler's saved state was made from other training images than ``pool`` holds now."""
    if state.get("pool") not in (None, pool.fingerprint()):
        warnings.warn("the training images changed since the checkpoint was written; resumed batches will "
                      "differ from the original run's", UserWarning, stacklevel=3)
