"""MZSR task sampler (SPEC §3): patch pool, filter, augmentation, task construction, loader."""
from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from scipy import ndimage

from metasr_adapter.ops.augment import dihedral
from metasr_adapter.ops.kernels import random_kernel
from metasr_adapter.meta.tasks import (
    MLSRTaskSampler,
    PatchPool,
    TaskSampler,
    find_images,
    gradient_energy,
    iteration_rng,
    task_loader,
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _write(path: Path, img: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    bgr = img[:, :, ::-1] if img.ndim == 3 else img
    assert cv2.imwrite(str(path), np.ascontiguousarray(bgr))
    return path


@pytest.fixture
def photo_dir(tmp_path: Path, photo: np.ndarray) -> Path:
    """Three crops of the photo (one in a sub-folder, one grayscale)."""
    d = tmp_path / "train"
    _write(d / "a.png", photo[:300, :260])
    _write(d / "sub" / "b.png", photo[250:500, 200:512])
    _write(d / "c.png", cv2.cvtColor(np.ascontiguousarray(photo[300:600, :300]), cv2.COLOR_RGB2GRAY))
    return d


# ---------------------------------------------------------------------------------------------
# numpy references written from the SPEC's description (independent of the package's torch code)
# ---------------------------------------------------------------------------------------------
def _np_cubic(x: np.ndarray) -> np.ndarray:
    a = np.abs(x)
    return ((1.5 * a**3 - 2.5 * a**2 + 1) * (a <= 1)
            + (-0.5 * a**3 + 2.5 * a**2 - 4 * a + 2) * ((a > 1) & (a <= 2)))


def _np_resize_axis(img: np.ndarray, axis: int, out_len: int, scale: float) -> np.ndarray:
    """SPEC §2a contributions along one axis (scale >= 1 here: upsampling, no antialiasing)."""
    in_len = img.shape[axis]
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - 2.0)
    p = 6
    ind = left[:, None] + np.arange(p)[None, :]
    w = _np_cubic(u[:, None] - ind)
    w = w / w.sum(1, keepdims=True)
    if np.any(w[:, 0] == 0):
        w, ind = w[:, 1:-1], ind[:, 1:-1]
    elif np.any(w[:, -1] == 0):
        w, ind = w[:, :-1], ind[:, :-1]
    ind = ind.astype(int) - 1  # 0-based
    ind = np.where(ind < 0, -ind - 1, ind)  # half-sample symmetric
    ind = np.where(ind >= in_len, 2 * in_len - 1 - ind, ind)
    moved = np.moveaxis(img, axis, 0)
    out = np.einsum("ot,ot...->o...", w, moved[ind])
    return np.moveaxis(out, 0, axis)


def _np_task(hr: np.ndarray, kernel: np.ndarray, noise: np.ndarray, noise_std: float) -> np.ndarray:
    """SPEC §3b for one HR patch (HxWx3 float): correlate (scipy reflect), direct x2, noise, clip, bicubic x2."""
    blurred = np.stack([ndimage.correlate(hr[:, :, c], kernel, mode="reflect") for c in range(3)], axis=2)
    h, w = hr.shape[:2]
    rows = np.round(np.linspace(0, h - 2, int(math.ceil(h / 2)))).astype(int)
    cols = np.round(np.linspace(0, w - 2, int(math.ceil(w / 2)))).astype(int)
    lr = np.clip(blurred[rows][:, cols] + noise * noise_std, 0, 1)
    up = _np_resize_axis(lr, 0, h, 2.0)
    return _np_resize_axis(up, 1, w, 2.0)


# ---------------------------------------------------------------------------------------------
def test_gradient_energy_matches_hand_values() -> None:
    flat = np.full((64, 64, 3), 77, np.uint8)
    assert gradient_energy(flat) == pytest.approx(math.log(1e-10))
    checker = ((np.indices((64, 64)).sum(0) % 2) * 255).astype(np.uint8)[:, :, None].repeat(3, 2)
    # every pixel differs by 1 from its lower and right neighbour: energy 1 + 1 = 2
    assert gradient_energy(checker) == pytest.approx(math.log(2 + 1e-10))
    ramp = np.tile((np.arange(64) * 2).astype(np.uint8)[None, :, None], (64, 1, 3))  # only horizontal steps of 2/255
    assert gradient_energy(ramp) == pytest.approx(math.log((2 / 255) ** 2 + 1e-10))


def test_pool_positions_filter_and_augmentation(tmp_path: Path, rng: np.random.Generator) -> None:
    img = rng.integers(0, 256, (310, 250, 3), dtype=np.uint8)
    img[:, 120:184] = 128  # the patches at column 120 are flat and must be filtered out
    _write(tmp_path / "img.png", img)
    pool = PatchPool(tmp_path, patch_size=64, stride=120)
    # rows 0,120,240 (range(0, 310-64+1, 120)) x cols 0,120 (range(0, 250-64+1, 120)); column 120 is flat -> 3 patches kept
    assert pool.num_patches == 3
    assert len(pool) == 3 * 8
    seen = set()
    for idx in range(len(pool)):
        f, i, j, m = pool.origin(idx)
        assert j == 0 and i in (0, 120, 240)
        np.testing.assert_array_equal(pool.hr_patches([idx])[0], dihedral(img[i : i + 64, j : j + 64], m, dims=(0, 1)))
        seen.add((i, m))
    assert len(seen) == 24
    no_aug = PatchPool(tmp_path, patch_size=64, stride=120, augment=False)
    assert len(no_aug) == 3


def test_pool_threshold_is_inclusive_boundary(tmp_path: Path) -> None:
    ramp = np.tile((np.arange(64) * 2).astype(np.uint8)[None, :, None], (64, 1, 3))
    _write(tmp_path / "r.png", ramp)
    e = gradient_energy(ramp)
    assert PatchPool(tmp_path, grad_threshold=e).num_patches == 1
    with pytest.raises(ValueError, match="gradient-energy filter"):
        PatchPool(tmp_path, grad_threshold=e + 1e-9).build()


def test_pool_reads_folders_recursively_and_grayscale(photo_dir: Path) -> None:
    assert [p.name for p in find_images(photo_dir)] == ["a.png", "c.png", "b.png"]  # sorted by relative path
    assert [p.name for p in find_images(photo_dir, recursive=False)] == ["a.png", "c.png"]
    pool = PatchPool(photo_dir)
    patches = pool.hr_patches(np.arange(len(pool)))
    assert patches.shape[1:] == (64, 64, 3) and patches.dtype == np.uint8
    gray_rows = [k for k in range(len(pool)) if pool.origin(k)[0].name == "c.png"]
    assert gray_rows
    g = patches[gray_rows]
    assert np.array_equal(g[..., 0], g[..., 1]) and np.array_equal(g[..., 0], g[..., 2])


def test_pool_errors(tmp_path: Path, rng: np.random.Generator) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        PatchPool(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        PatchPool(tmp_path / "empty")
    _write(tmp_path / "small" / "s.png", rng.integers(0, 256, (40, 50, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="smaller than the patch"), pytest.warns(UserWarning, match="smaller"):
        PatchPool(tmp_path / "small").build()
    _write(tmp_path / "nested" / "deep" / "x.png", rng.integers(0, 256, (80, 80, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="recursive"):
        PatchPool(tmp_path / "nested", recursive=False)


def test_pool_disk_cache_round_trip(photo_dir: Path, tmp_path: Path) -> None:
    a = PatchPool(photo_dir, cache_dir=tmp_path / "cache").build()
    files = list((tmp_path / "cache").glob("*.npz"))
    assert len(files) == 1
    b = PatchPool(photo_dir, cache_dir=tmp_path / "cache").build()
    np.testing.assert_array_equal(a.hr_patches(range(len(a))), b.hr_patches(range(len(b))))
    c = PatchPool(photo_dir, cache_dir=tmp_path / "cache", stride=100).build()  # other settings: other file
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 2 and c.num_patches != a.num_patches


def test_the_pool_fingerprint_follows_content_not_timestamps(photo_dir: Path, tmp_path: Path) -> None:
    """A data folder copied again (new mtimes, same bytes) is the same training set: resuming a run on it
    must not warn that the images changed, and the patch cache must still hit. One changed byte is another set."""
    import os
    import shutil
    import warnings

    from metasr_adapter.meta.tasks import warn_if_pool_changed

    copy = shutil.copytree(photo_dir, tmp_path / "copy")
    for f in copy.rglob("*.png"):
        os.utime(f, (1_000_000_000, 1_000_000_000))
    original = PatchPool(photo_dir)
    assert PatchPool(copy).fingerprint() == original.fingerprint()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_if_pool_changed(PatchPool(copy), {"pool": original.fingerprint()})
    target = copy / "a.png"
    data = bytearray(target.read_bytes())
    data[-20] ^= 0xFF
    target.write_bytes(bytes(data))
    assert PatchPool(copy).fingerprint() != original.fingerprint()
    with pytest.warns(UserWarning, match="training images changed"):
        warn_if_pool_changed(PatchPool(copy), {"pool": original.fingerprint()})


def test_pairs_are_aligned_bicubic_downscales(photo_dir: Path) -> None:
    from metasr_adapter.ops.degrade import imresize
    from metasr_adapter.ops.imageio import read_image

    pool = PatchPool(photo_dir, patch_size=96, stride=120, lr_scale=2)
    for idx in range(0, len(pool), 13):
        f, i, j, m = pool.origin(idx)
        img = read_image(f)
        img = img if img.ndim == 3 else np.repeat(img[:, :, None], 3, 2)
        img = img[: img.shape[0] // 2 * 2, : img.shape[1] // 2 * 2]
        lr = imresize(torch.from_numpy(img.transpose(2, 0, 1) / 255.0)[None], 0.5)[0].clamp(0, 1).numpy()
        lr8 = np.round(lr.transpose(1, 2, 0) * 255).astype(np.uint8)
        np.testing.assert_array_equal(pool.lr_patches([idx])[0], dihedral(lr8[i // 2 : i // 2 + 48, j // 2 : j // 2 + 48], m, dims=(0, 1)))
        np.testing.assert_array_equal(pool.hr_patches([idx])[0], dihedral(img[i : i + 96, j : j + 96], m, dims=(0, 1)))


@pytest.fixture
def pool(photo_dir: Path) -> PatchPool:
    return PatchPool(photo_dir).build()


def test_task_batch_matches_numpy_reference(pool: PatchPool) -> None:
    """One meta-batch rebuilt from the SPEC §3b recipe with scipy/numpy (same random draws)."""
    mb, tb, seed, it, noise_std = 2, 2, 7, 3, 0.05
    sampler = TaskSampler(pool, meta_batch=mb, task_batch=tb, seed=seed, noise_std=noise_std)
    batch = sampler.sample(it)
    assert batch.support_x.shape == (mb, tb, 3, 64, 64) and batch.query_y.shape == (mb, tb, 3, 64, 64)

    rng = iteration_rng(seed, it)
    index = rng.choice(len(pool), size=2 * tb * mb, replace=False)
    hr = pool.hr_patches(index).astype(np.float32) / np.float32(255.0)
    for t in range(mb):
        assert float(rng.choice([2.0])) == 2.0
        k = random_kernel(5.0, 15, rng)  # k1 = 2.5 * scale
        np.testing.assert_allclose(batch.kernels[t].numpy(), k, rtol=1e-6, atol=1e-9)
        for n in range(2 * tb):
            noise = rng.randn(32, 32, 3)
            patch = hr[t * 2 * tb + n].astype(np.float64)
            ilr = _np_task(patch, k, noise, noise_std)
            x = (batch.support_x if n < tb else batch.query_x)[t, n % tb].numpy().transpose(1, 2, 0)
            y = (batch.support_y if n < tb else batch.query_y)[t, n % tb].numpy().transpose(1, 2, 0)
            np.testing.assert_array_equal(y, hr[t * 2 * tb + n])
            np.testing.assert_allclose(x, ilr, atol=2e-6)


def test_batches_are_a_function_of_seed_and_iteration(pool: PatchPool) -> None:
    s = TaskSampler(pool, meta_batch=2, task_batch=1, seed=3)
    late_first = s.sample(5)
    early = s.sample(2)
    assert torch.equal(s.sample(5).support_x, late_first.support_x)
    assert torch.equal(TaskSampler(pool, meta_batch=2, task_batch=1, seed=3).sample(2).query_x, early.query_x)
    assert not torch.equal(early.support_y, late_first.support_y)
    assert not torch.equal(TaskSampler(pool, meta_batch=2, task_batch=1, seed=4).sample(2).support_y, early.support_y)
    assert s.state_dict()["seed"] == 3


def test_noise_is_drawn_even_when_zero(pool: PatchPool) -> None:
    a = TaskSampler(pool, meta_batch=3, task_batch=1, noise_std=0.0).sample(0)
    b = TaskSampler(pool, meta_batch=3, task_batch=1, noise_std=0.1).sample(0)
    # same patches and kernels (noise draws consumed in both), different inputs
    assert torch.equal(a.support_y, b.support_y) and torch.equal(a.kernels, b.kernels)
    assert not torch.equal(a.support_x, b.support_x)


def test_variants_bicubic_lr_input_and_multiscale(pool: PatchPool) -> None:
    direct = TaskSampler(pool, meta_batch=2, task_batch=1).sample(0)
    bic = TaskSampler(pool, meta_batch=2, task_batch=1, ds_method="bicubic").sample(0)
    assert torch.equal(direct.support_y, bic.support_y) and not torch.equal(direct.support_x, bic.support_x)
    lr_in = TaskSampler(pool, meta_batch=2, task_batch=1, upsample_input=False).sample(0)
    assert lr_in.support_x.shape == (2, 1, 3, 32, 32) and lr_in.support_y.shape == (2, 1, 3, 64, 64)
    ms = TaskSampler(pool, meta_batch=6, task_batch=1, scales=[2.0, 4.0]).sample(1)
    assert ms.support_x.shape == (6, 1, 3, 64, 64)
    with pytest.raises(ValueError, match="upsample_input"):
        TaskSampler(pool, scales=[2.0, 4.0], upsample_input=False)
    with pytest.raises(ValueError, match="ds_method"):
        TaskSampler(pool, ds_method="nearest")


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_yields_the_same_batches_in_order(pool: PatchPool, workers: int) -> None:
    s = TaskSampler(pool, meta_batch=2, task_batch=1, seed=1)
    got = list(task_loader(s, 3, 7, num_workers=workers))
    assert len(got) == 4
    for k, b in enumerate(got):
        ref = s.sample(3 + k)
        torch.testing.assert_close(b.support_x, ref.support_x, rtol=0, atol=1e-6)
        assert torch.equal(b.query_y, ref.query_y)


# ------------------------------------------------------------------------------------------
# MLSR tasks: support = (LR↓ → LR), query = (LR → HR) from the same patch
# ------------------------------------------------------------------------------------------
def test_mlsr_bicubic_tasks_are_the_patch_its_lr_and_its_son(pool: PatchPool) -> None:
    from metasr_adapter.ops.degrade import imresize

    mb, tb, seed, it = 3, 2, 5, 4
    batch = MLSRTaskSampler(pool, meta_batch=mb, task_batch=tb, seed=seed).sample(it)
    assert batch.query_y.shape == (mb, tb, 3, 64, 64) and batch.query_x.shape == (mb, tb, 3, 32, 32)
    assert batch.support_y.shape == (mb, tb, 3, 32, 32) and batch.support_x.shape == (mb, tb, 3, 16, 16)
    assert batch.kernels is None
    # the same draws by hand: patches, MATLAB-bicubic LR, and the LR's own bicubic son
    index = iteration_rng(seed, it).choice(len(pool), size=mb * tb, replace=False)
    hr = torch.from_numpy(pool.hr_patches(index).transpose(0, 3, 1, 2).astype(np.float32) / 255.0)
    lr = imresize(hr, 0.5).clamp(0, 1)
    son = imresize(lr, 0.5).clamp(0, 1)
    assert torch.equal(batch.query_y.reshape(-1, 3, 64, 64), hr)
    torch.testing.assert_close(batch.query_x.reshape(-1, 3, 32, 32), lr)
    torch.testing.assert_close(batch.support_y.reshape(-1, 3, 32, 32), lr)  # the support target is the query input
    torch.testing.assert_close(batch.support_x.reshape(-1, 3, 16, 16), son)
    # a pure function of (seed, iteration)
    again = MLSRTaskSampler(pool, meta_batch=mb, task_batch=tb, seed=seed).sample(it)
    assert torch.equal(again.support_x, batch.support_x)


def test_mlsr_random_kernels_and_pre_upsampling(pool: PatchPool) -> None:
    from metasr_adapter.ops.degrade import degrade, imresize

    s = MLSRTaskSampler(pool, meta_batch=2, task_batch=1, kernel="random", kernel_size=9, upsample_input=True, seed=2)
    b = s.sample(0)
    assert b.kernels.shape == (2, 9, 9)
    lr = b.support_y[:, 0]
    hr = b.query_y[:, 0]
    for t in range(2):  # one kernel per task, used for both the LR and its son
        torch.testing.assert_close(lr[t : t + 1], degrade(hr[t : t + 1], b.kernels[t], 2, "direct").clamp(0, 1))
    son = torch.cat([degrade(lr[t : t + 1], b.kernels[t], 2, "direct").clamp(0, 1) for t in range(2)])
    # pre-upsampling networks get the bicubic-upsampled son / LR at the target's size
    assert b.support_x.shape == b.support_y.shape and b.query_x.shape == b.query_y.shape
    torch.testing.assert_close(b.support_x[:, 0], imresize(son, 2.0, output_shape=(32, 32)))
    with pytest.raises(ValueError, match="patch_size=64 is not divisible by scale² = 9"):
        MLSRTaskSampler(pool, scale=3)
    with pytest.raises(ValueError, match="kernel='gaussian'"):
        MLSRTaskSampler(pool, kernel="gaussian")
    with pytest.raises(ValueError, match="integer factor"):
        MLSRTaskSampler(pool, scale=1.5)


def test_mlsr_loader_matches_sample(pool: PatchPool) -> None:
    s = MLSRTaskSampler(pool, meta_batch=2, task_batch=1, seed=1)
    got = list(task_loader(s, 0, 2, num_workers=0))
    assert torch.equal(got[1].support_x, s.sample(1).support_x)
