"""metasr_adapter.ops.kernels: SPEC §3c Gaussians and sampler, MZSR Table 2 kernels, loading, validation."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import scipy.io
import torch

from conftest import shared_path
from metasr_adapter.ops import kernels as K
from metasr_adapter.ops.kernels import (
    KERNEL_NAMES,
    KernelSpec,
    anisotropic_gaussian,
    gaussian_kernel,
    load_kernel,
    named_kernel,
    random_kernel,
    resolve_kernel,
    validate_kernel,
)


def hand_gaussian(size, sigma):
    """Pixel by pixel: k[r, c] ∝ exp(-0.5 pᵀ Σ⁻¹ p), p = (x, y) = (c - centre, r - centre), centre = size/2 - 0.5."""
    inv = np.linalg.inv(np.asarray(sigma, dtype=np.float64))
    centre = size / 2 - 0.5
    k = np.empty((size, size))
    for r in range(size):
        for c in range(size):
            p = np.array([c - centre, r - centre])
            k[r, c] = math.exp(-0.5 * p @ inv @ p)
    return k / k.sum()


def moments(k):
    """Second moments (E[x²], E[xy], E[y²]) of a centred kernel, x along columns."""
    n = k.shape[0]
    c = np.arange(n) - (n - 1) / 2
    x, y = np.meshgrid(c, c)
    return (k * x * x).sum(), (k * x * y).sum(), (k * y * y).sum()


# ------------------------------------------------------------------------------------------------
# Gaussians
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [4, 15, 21])
def test_gaussian_kernel_matches_hand_formula(size):
    sigma = np.array([[2.5, -0.8], [-0.8, 1.2]])
    k = gaussian_kernel(size, sigma)
    np.testing.assert_allclose(k, hand_gaussian(size, sigma), rtol=1e-13, atol=1e-17)
    assert k.dtype == np.float64 and k.shape == (size, size)
    assert abs(k.sum() - 1) < 1e-14
    np.testing.assert_allclose(k, k[::-1, ::-1], rtol=0, atol=1e-17)


def test_gaussian_centre_and_scalar_variance():
    k = gaussian_kernel(15, 2.0)
    np.testing.assert_array_equal(k, gaussian_kernel(15, 2.0 * np.eye(2)))
    assert np.unravel_index(k.argmax(), k.shape) == (7, 7)
    k4 = gaussian_kernel(4, 1.0)  # even size: centred between the four middle pixels
    assert np.allclose(k4[1:3, 1:3], k4[1, 1]) and k4[1, 1] == k4.max()


@pytest.mark.shared
def test_gd20_equals_official_kernel_mat():
    official = scipy.io.loadmat(str(shared_path("data", "mzsr_g20", "kernel.mat")))["kernel"]
    spec = named_kernel("gd2.0")
    assert spec.kernel.shape == official.shape == (21, 21)
    np.testing.assert_allclose(spec.kernel, official, rtol=0, atol=1e-15)
    assert spec.ds_method == "direct"


def test_anisotropic_orientation_and_variances():
    """Variance l1 lies along (cos θ, sin θ) in (column, row) coordinates: check via the kernel's moments."""
    theta, l1, l2 = 0.3, 4.0, 1.5
    k = anisotropic_gaussian(41, theta, l1, l2)
    c, s = math.cos(theta), math.sin(theta)
    want = (l1 * c * c + l2 * s * s, (l1 - l2) * c * s, l1 * s * s + l2 * c * c)
    np.testing.assert_allclose(moments(k), want, rtol=1e-6, atol=1e-9)
    # theta = 0: wide along columns (x)
    k0 = anisotropic_gaussian(21, 0.0, 4.0, 1.0)
    assert k0[10, 14] > k0[14, 10]


def test_named_kernels():
    assert KERNEL_NAMES == ("gd0.2", "gd2.0", "gdani", "gb1.3")
    expected = {
        "gd0.2": (hand_gaussian(21, 0.2 * np.eye(2)), "direct"),
        "gd2.0": (hand_gaussian(21, 2.0 * np.eye(2)), "direct"),
        "gdani": (None, "direct"),
        "gb1.3": (hand_gaussian(21, 1.3 * np.eye(2)), "bicubic"),
    }
    for name, (kernel, ds) in expected.items():
        spec = named_kernel(name)
        assert spec.name == name and spec.ds_method == ds and spec.kernel.shape == (21, 21)
        assert abs(spec.kernel.sum() - 1) < 1e-14
        if kernel is not None:
            np.testing.assert_allclose(spec.kernel, kernel, rtol=1e-12, atol=1e-300)
    c, s = math.cos(-0.5), math.sin(-0.5)
    sigma = np.array([[4 * c * c + s * s, 3 * c * s], [3 * c * s, 4 * s * s + c * c]])
    np.testing.assert_allclose(named_kernel("gdani").kernel, hand_gaussian(21, sigma), rtol=1e-12, atol=1e-300)
    assert named_kernel(" GD2.0 ").name == "gd2.0"
    with pytest.raises(ValueError, match="unknown kernel name 'g2.0'.*gd0.2"):
        named_kernel("g2.0")


# ------------------------------------------------------------------------------------------------
# random sampler (SPEC §3c)
# ------------------------------------------------------------------------------------------------
def test_random_kernel_draw_order_matches_spec():
    for seed in (0, 7, 123):
        u = np.random.RandomState(seed).random_sample(3)
        theta = math.pi * u[0]
        l1 = 1 + (5.0 - 1) * u[1]
        l2 = 1 + (l1 - 1) * u[2]
        c, s = math.cos(theta), math.sin(theta)
        sigma = np.array([[l1 * c * c + l2 * s * s, (l1 - l2) * c * s], [(l1 - l2) * c * s, l1 * s * s + l2 * c * c]])
        got = random_kernel(5.0, 15, np.random.RandomState(seed))
        np.testing.assert_allclose(got, hand_gaussian(15, sigma), rtol=1e-12, atol=1e-300)
        np.testing.assert_array_equal(got, random_kernel(5.0, 15, seed))  # int seed = RandomState(seed)
    np.random.seed(11)
    a = random_kernel(5.0)  # global legacy state, like the official code
    np.testing.assert_array_equal(a, random_kernel(5.0, 15, np.random.RandomState(11)))
    g1, g2 = np.random.default_rng(3), np.random.default_rng(3)
    got = random_kernel(5.0, 15, g1)
    u = g2.random(3)
    l1 = 1 + 4 * u[1]
    np.testing.assert_allclose(got, anisotropic_gaussian(15, math.pi * u[0], l1, 1 + (l1 - 1) * u[2]), rtol=1e-14)


def test_random_kernel_parameter_ranges(monkeypatch):
    seen = []
    real = K.anisotropic_gaussian

    def spy(ksize, theta, l1, l2):
        seen.append((ksize, theta, l1, l2))
        return real(ksize, theta, l1, l2)

    monkeypatch.setattr(K, "anisotropic_gaussian", spy)
    rs = np.random.RandomState(0)
    for _ in range(200):
        k = random_kernel(5.0, 15, rs)
        assert abs(k.sum() - 1) < 1e-13 and k.shape == (15, 15)
        np.testing.assert_allclose(k, k[::-1, ::-1], rtol=0, atol=1e-17)  # 180° rotation symmetry
    arr = np.array([s[1:] for s in seen])
    assert len(seen) == 200 and all(s[0] == 15 for s in seen)
    assert np.all((arr[:, 0] >= 0) & (arr[:, 0] < math.pi))
    assert np.all((arr[:, 1] >= 1) & (arr[:, 1] < 5))
    assert np.all((arr[:, 2] >= 1) & (arr[:, 2] <= arr[:, 1]))


@pytest.mark.shared
def test_random_kernel_official_fixture():
    """fixtures: np.random.seed(123); kernel 0; 4 randn(32,32,3) noise draws; kernel 1 (SPEC §3b order)."""
    kernels = np.load(shared_path("fixtures", "meta_step_reference_mb2_tb2.npz"))["kernels"]
    rs = np.random.RandomState(123)
    k0 = random_kernel(5.0, 15, rs)
    for _ in range(4):
        rs.randn(32, 32, 3)
    k1 = random_kernel(5.0, 15, rs)
    np.testing.assert_allclose(k0, kernels[0], rtol=0, atol=1e-15)
    np.testing.assert_allclose(k1, kernels[1], rtol=0, atol=1e-15)


def test_random_kernel_bad_arguments():
    with pytest.raises(ValueError, match="k1"):
        random_kernel(0.5)
    with pytest.raises(TypeError, match="rng"):
        random_kernel(5.0, 15, rng="seed")


# ------------------------------------------------------------------------------------------------
# validation
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kernel,image_shape,match",
    [
        (np.ones(5) / 5, None, "must be 2-D"),
        (np.ones((2, 3, 3)) / 18, None, "must be 2-D"),
        (np.zeros((0, 3)), None, "empty"),
        (np.array([[0.5, np.nan], [0.25, 0.25]]), None, "NaN or inf"),
        (np.array([[0.5, np.inf], [0.25, 0.25]]), None, "NaN or inf"),
        (np.array([[0.6, -0.1], [0.25, 0.25]]), None, "negative entries"),
        (np.zeros((3, 3)), None, "sums to zero"),
        (np.ones((9, 5)) / 45, (8, 20, 3), "larger than the image"),
        (np.ones((5, 9)) / 45, (20, 8), "larger than the image"),
    ],
)
def test_bad_kernels_raise(kernel, image_shape, match):
    with pytest.raises(ValueError, match=match):
        validate_kernel(kernel, image_shape)


def test_unnormalised_kernel_warns_and_normalises():
    raw = np.arange(1, 10, dtype=np.float64).reshape(3, 3)
    with pytest.warns(UserWarning, match="sums to 45.*normalis"):
        k = validate_kernel(raw)
    np.testing.assert_allclose(k, raw / 45, rtol=1e-15)
    assert raw[0, 0] == 1  # input untouched


def test_validate_accepts_tensors_and_keeps_good_kernels(recwarn):
    k = gaussian_kernel(9, 1.3)
    out = validate_kernel(torch.from_numpy(k).float(), image_shape=(9, 9))
    assert out.dtype == np.float64 and out.shape == (9, 9)
    np.testing.assert_array_equal(validate_kernel(k), k)  # sum 1 already: returned unchanged
    assert not [w for w in recwarn if issubclass(w.category, UserWarning)]


# ------------------------------------------------------------------------------------------------
# loading
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("key", ["kernel", "Kernel"])
def test_load_mat(tmp_path, key):
    k = gaussian_kernel(11, 1.7)
    path = tmp_path / "k.mat"
    scipy.io.savemat(str(path), {key: k, "other": np.ones(2)})
    np.testing.assert_array_equal(load_kernel(path), k)
    np.testing.assert_array_equal(load_kernel(str(path)), k)


def test_load_mat_without_kernel_key_names_its_keys(tmp_path):
    path = tmp_path / "k.mat"
    scipy.io.savemat(str(path), {"weights": np.ones((3, 3)) / 9, "blur": np.ones((2, 2)) / 4})
    with pytest.raises(ValueError, match=r"no 'kernel' or 'Kernel'.*\['blur', 'weights'\]"):
        load_kernel(path)


def test_load_npy_and_bad_files(tmp_path):
    k = anisotropic_gaussian(13, 0.4, 3.0, 1.2)
    np.save(tmp_path / "k.npy", k)
    np.testing.assert_array_equal(load_kernel(tmp_path / "k.npy"), k)
    np.save(tmp_path / "bad.npy", -k)
    with pytest.raises(ValueError, match="negative"):
        load_kernel(tmp_path / "bad.npy")
    (tmp_path / "k.txt").write_text("1")
    with pytest.raises(ValueError, match="unsupported kernel file type '.txt'"):
        load_kernel(tmp_path / "k.txt")
    with pytest.raises(ValueError, match="not found"):
        load_kernel(tmp_path / "missing.mat")


@pytest.mark.shared
def test_load_official_mat_files():
    official = load_kernel(shared_path("data", "mzsr_g20", "kernel.mat"))
    np.testing.assert_allclose(official, named_kernel("gd2.0").kernel, rtol=0, atol=1e-15)
    zk = load_kernel(shared_path("data", "zssr", "kernel_example", "BSD100_100_lr_rand_ker_c_X2_0.mat"))  # 'Kernel' key
    assert zk.shape == (9, 9) and abs(zk.sum() - 1) < 1e-6


# ------------------------------------------------------------------------------------------------
# KernelSpec / resolve_kernel
# ------------------------------------------------------------------------------------------------
def test_kernelspec_is_frozen_and_read_only():
    spec = named_kernel("gd2.0")
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.ds_method = "bicubic"  # type: ignore[misc]
    with pytest.raises(ValueError):
        spec.kernel[0, 0] = 1.0
    with pytest.raises(ValueError, match="ds_method"):
        KernelSpec(kernel=None, ds_method="nearest")
    with pytest.raises(ValueError, match="negative"):
        KernelSpec(kernel=-np.ones((3, 3)))


def test_resolve_kernel_forms(tmp_path):
    for plain in (None, "bicubic", "cubic"):
        spec = resolve_kernel(plain)
        assert spec.kernel is None and spec.name == "bicubic"
    gb = resolve_kernel("gb1.3")
    assert gb.ds_method == "bicubic" and resolve_kernel("gb1.3", "direct").ds_method == "direct"
    np.testing.assert_array_equal(resolve_kernel(gb).kernel, gb.kernel)
    assert resolve_kernel(gb, ds_method="direct").ds_method == "direct"
    k = gaussian_kernel(7, 1.1)
    for form in (k, torch.from_numpy(k)):
        spec = resolve_kernel(form)
        assert spec.ds_method == "direct" and spec.name is None
        np.testing.assert_array_equal(spec.kernel, k)
    np.save(tmp_path / "mine.npy", k)
    spec = resolve_kernel(str(tmp_path / "mine.npy"), "bicubic")
    assert spec.ds_method == "bicubic" and spec.name == "mine.npy"
    np.testing.assert_array_equal(resolve_kernel(tmp_path / "mine.npy").kernel, k)
    with pytest.raises(ValueError, match="neither a known name"):
        resolve_kernel("gd9.9")
    with pytest.raises(ValueError, match="ds_method"):
        resolve_kernel("gd2.0", "area")
    with pytest.raises(ValueError, match="must be 2-D"):
        resolve_kernel(np.ones((2, 3, 3)))


def test_random_kernels_reach_sharp_variances_only_when_asked() -> None:
    """k0 (recipe data.kernel_min_var) is the smallest variance: 1 officially, so g^d_0.2-like kernels never
    occur; with k0 = 0.2 they do, and the official draw sequence is unchanged at k0 = 1."""
    from metasr_adapter.ops.kernels import random_kernel

    def spread(k: np.ndarray) -> float:  # the kernel's variance along its sharper axis
        ys, xs = np.mgrid[: k.shape[0], : k.shape[1]].astype(np.float64)
        my, mx = (k * ys).sum(), (k * xs).sum()
        cov = np.array([[(k * (ys - my) ** 2).sum(), (k * (ys - my) * (xs - mx)).sum()],
                        [(k * (ys - my) * (xs - mx)).sum(), (k * (xs - mx) ** 2).sum()]])
        return float(np.linalg.eigvalsh(cov)[0])

    official = [spread(random_kernel(5.0, 15, np.random.RandomState(i))) for i in range(200)]
    sharp = [spread(random_kernel(5.0, 15, np.random.RandomState(i), k0=0.2)) for i in range(200)]
    assert min(official) > 0.95 and min(sharp) < 0.35
    assert np.array_equal(random_kernel(5.0, 15, np.random.RandomState(3)),
                          random_kernel(5.0, 15, np.random.RandomState(3), k0=1.0))
    with pytest.raises(ValueError, match="0 < k0 <= k1"):
        random_kernel(5.0, 15, 0, k0=6.0)
