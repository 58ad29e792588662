"""Dihedral transforms, geometric self-ensemble and random crops, on cases computed by hand."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from metasr_adapter.ops.augment import (
    AXIS_PRESERVING_MODES,
    Dihedral,
    SelfEnsemble,
    dihedral,
    geometric_self_ensemble,
    inverse_dihedral,
    median_reduce,
    random_crop,
    random_crop_box,
)

# [[a, b], [c, d]] with a=1, b=2, c=3, d=4 under the 8 modes, written out by hand (SPEC §3a):
# mode // 2 counter-clockwise quarter turns (np.rot90), then an up-down flip for odd modes.
HAND_2X2 = {
    0: [[1, 2], [3, 4]],
    1: [[3, 4], [1, 2]],
    2: [[2, 4], [1, 3]],
    3: [[1, 3], [2, 4]],
    4: [[4, 3], [2, 1]],
    5: [[2, 1], [4, 3]],
    6: [[3, 1], [4, 2]],
    7: [[4, 2], [3, 1]],
}


def test_dihedral_modes_match_hand_computed_2x2():
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]])[None, None]
    for mode, expected in HAND_2X2.items():
        assert dihedral(x, mode)[0, 0].tolist() == expected, mode


def test_eight_modes_are_distinct_and_closed_under_inverse():
    x = torch.arange(12.0).reshape(1, 1, 3, 4)
    outs = [dihedral(x, m) for m in range(8)]
    keys = {(tuple(o.shape), tuple(o.flatten().tolist())) for o in outs}
    assert len(keys) == 8
    # rotations by 90/270 degrees swap H and W; the axis-preserving modes do not
    for m in range(8):
        expected = (3, 4) if m in AXIS_PRESERVING_MODES else (4, 3)
        assert tuple(outs[m].shape[-2:]) == expected


def test_dihedral_roundtrip_all_modes(rng):
    x = torch.from_numpy(rng.random((2, 3, 5, 7))).float()
    for m in range(8):
        y = dihedral(x, m)
        assert torch.equal(inverse_dihedral(y, m), x)
        assert torch.equal(Dihedral(m, inverse=True)(Dihedral(m)(x)), x)


def test_dihedral_matches_numpy_rot90_and_flipud_on_tensors_and_arrays(rng):
    a = rng.random((4, 6, 3))
    t = torch.from_numpy(a).permute(2, 0, 1)[None]
    for m in range(8):
        ref = np.rot90(a, m // 2)
        if m % 2:
            ref = np.flipud(ref)
        np.testing.assert_array_equal(dihedral(t, m)[0].permute(1, 2, 0).numpy(), ref)
        np.testing.assert_array_equal(dihedral(a, m, dims=(0, 1)), ref)  # the same function on HxWxC arrays


@pytest.mark.parametrize("bad", [-1, 8, 1.5, True, "0"])
def test_bad_mode_raises(bad):
    with pytest.raises(ValueError, match="mode"):
        dihedral(torch.zeros(1, 1, 2, 2), bad)


def test_median_reduce_even_count_is_numpy_median():
    vals = [5.0, 1.0, 4.0, 2.0, 8.0, 7.0, 3.0, 6.0]
    stack = torch.tensor(vals).reshape(8, 1)
    # sorted: 1..8 -> middle pair (4, 5): numpy's median 4.5, torch.median's lower value 4
    assert float(median_reduce(stack)) == 4.5
    assert float(median_reduce(stack, lower=True)) == 4.0
    assert float(median_reduce(stack[:7])) == 4.0  # odd: 5,1,4,2,8,7,3 -> sorted 1,2,3,4,5,7,8 -> 4


def test_median_reduce_matches_numpy_and_torch(rng):
    a = rng.random((8, 2, 3, 4, 5))
    t = torch.from_numpy(a)
    np.testing.assert_allclose(median_reduce(t).numpy(), np.median(a, axis=0), rtol=0, atol=1e-15)
    assert torch.equal(median_reduce(t, lower=True), torch.median(t, dim=0).values)


@pytest.mark.parametrize("reduce", ["median", "median_lower", "mean"])
def test_self_ensemble_of_equivariant_functions_is_the_function(rng, reduce):
    x = torch.from_numpy(rng.random((1, 3, 6, 9))).float()
    assert torch.allclose(geometric_self_ensemble(lambda t: t, x, reduce=reduce), x)
    fn = lambda t: t * t + 0.25  # per-pixel, hence commutes with every rotation/flip
    assert torch.allclose(geometric_self_ensemble(fn, x, reduce=reduce), fn(x), atol=1e-7)
    assert torch.allclose(SelfEnsemble(torch.nn.Identity(), reduce=reduce)(x), x)


def test_self_ensemble_of_a_column_ramp_by_hand():
    # fn adds the column index j. Undoing the 8 transforms turns the ramp into j, n-1-j, i and
    # n-1-i, each twice. Mean and (numpy) median both give (n-1)/2 everywhere; the lower median
    # is the second smallest of the four, max(min(j, n-1-j), min(i, n-1-i)).
    n = 5
    x = torch.zeros(1, 1, n, n)
    ramp = torch.arange(n, dtype=torch.float32).expand(n, n)
    fn = lambda t: t + ramp[: t.shape[-2], : t.shape[-1]]
    half = torch.full((1, 1, n, n), (n - 1) / 2)
    assert torch.allclose(geometric_self_ensemble(fn, x, reduce="mean"), half)
    assert torch.allclose(geometric_self_ensemble(fn, x, reduce="median"), half)
    i, j = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    lower = torch.maximum(torch.minimum(j, n - 1 - j), torch.minimum(i, n - 1 - i)).float()
    assert torch.equal(geometric_self_ensemble(fn, x, reduce="median_lower")[0, 0], lower)
    # identity mode only: the function itself
    assert torch.equal(geometric_self_ensemble(fn, x, modes=[0]), fn(x))


def test_self_ensemble_post_is_applied_to_each_output():
    calls = []
    x = torch.zeros(1, 1, 3, 3)

    def post(y):
        calls.append(tuple(y.shape))
        return y + 1

    out = geometric_self_ensemble(lambda t: t, x, post=post)
    assert len(calls) == 8 and torch.equal(out, x + 1)


def test_self_ensemble_rejects_unknown_reduce_and_mismatched_shapes():
    x = torch.zeros(1, 1, 2, 3)
    with pytest.raises(ValueError, match="reduce"):
        geometric_self_ensemble(lambda t: t, x, reduce="max")
    # a function that breaks rotation equivariance of the shape (fixed output size)
    with pytest.raises(ValueError, match="AXIS_PRESERVING_MODES"):
        geometric_self_ensemble(lambda t: t[..., :2, :2] if t.shape[-1] == 3 else t[..., :2, :1], x)


def test_random_crop_bounds_and_determinism():
    x = torch.arange(10 * 12, dtype=torch.float32).reshape(1, 1, 10, 12)
    crop, (top, left, h, w) = random_crop(x, 4, np.random.default_rng(3))
    assert (h, w) == (4, 4) and 0 <= top <= 6 and 0 <= left <= 8
    assert torch.equal(crop, x[..., top : top + 4, left : left + 4])
    again, box = random_crop(x, 4, np.random.default_rng(3))
    assert box == (top, left, h, w) and torch.equal(again, crop)
    # larger than the image: clipped to it
    assert random_crop_box(3, 20, (8, 5), np.random.default_rng(0))[2:] == (3, 5)
    whole, box = random_crop(x, 64, np.random.default_rng(0))
    assert box == (0, 0, 10, 12) and torch.equal(whole, x)
    # every position is reachable (uniform over 0..6 for rows)
    tops = {random_crop_box(10, 12, 4, np.random.default_rng(s))[0] for s in range(200)}
    assert tops == set(range(7))
    with pytest.raises(ValueError, match="crop size"):
        random_crop_box(10, 10, 0)


def test_only_identity_and_transpose_commute_with_direct_subsampling(rng):
    """Issue #20: 6 of the 8 modes do not commute with direct subsampling, so augmentation and the
    self-ensemble on that grid may only use GRID_SAFE_DIRECT_MODES; symmetric grids use all 8."""
    from metasr_adapter.ops.augment import GRID_SAFE_DIRECT_MODES, ensemble_modes
    from metasr_adapter.ops.degrade import degrade

    x = torch.from_numpy(rng.random((1, 3, 12, 12)))
    delta = np.ones((1, 1))
    assert torch.equal(degrade(x, delta, 2, ds_method="direct"), x[..., ::2, ::2])  # direct = pixel (0, 0)
    commuting = [m for m in range(8) if torch.equal(degrade(dihedral(x, m), delta, 2, ds_method="direct"),
                                                    dihedral(x[..., ::2, ::2], m))]
    assert tuple(commuting) == GRID_SAFE_DIRECT_MODES == (0, 3)
    assert ensemble_modes("direct") == (0, 3) and ensemble_modes("bicubic") == tuple(range(8))
    assert ensemble_modes("centred", isotropic=False) == (0, 1, 4, 5)
