"""ZSSR's linear-fit learning-rate policy on synthetic error curves worked out by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest

from metasr_adapter.zssr.lr_policy import LinearFitLRPolicy, linear_fit


def test_linear_fit_by_hand():
    # y = 0,1,0,1,0 over x = 0..4: x̄ = 2, ȳ = 0.4, Σ(x-x̄)(y-ȳ) = 0.8-0.6+0+0.6-0.8 = 0 -> slope 0,
    # SSR = 3·0.4² + 2·0.6² = 1.2, Sxx = 10: std = sqrt(1.2/(5-4)/10) with the old polyfit scaling
    slope, intercept, std = linear_fit([0, 1, 2, 3, 4], [0, 1, 0, 1, 0])
    assert slope == pytest.approx(0.0, abs=1e-15)
    assert intercept == pytest.approx(0.4)
    assert std == pytest.approx(math.sqrt(0.12))
    assert linear_fit([0, 1, 2, 3, 4], [0, 1, 0, 1, 0], ddof=2)[2] == pytest.approx(0.2)
    # an exact line has zero spread
    assert linear_fit([0, 50, 100], [1, 2, 3], ddof=0) == pytest.approx((0.02, 1.0, 0.0))


def test_linear_fit_ddof2_matches_current_numpy_polyfit(rng):
    x = np.arange(10.0) * 50
    y = 1.0 - 0.001 * x + 0.05 * rng.standard_normal(10)
    (p_slope, _), cov = np.polyfit(x, y, 1, cov=True)
    slope, _, std = linear_fit(x, y, ddof=2)
    assert slope == pytest.approx(p_slope)
    assert std == pytest.approx(math.sqrt(cov[0, 0]))


def test_linear_fit_rejects_too_few_points():
    with pytest.raises(ValueError, match="points"):
        linear_fit([0, 1, 2, 3], [1, 2, 3, 4], ddof=4)
    with pytest.raises(ValueError, match="equal"):
        linear_fit([1, 1, 1, 1, 1], [1, 2, 3, 4, 5])


def test_flat_curve_decays_every_allowed_check_and_stops():
    # check when (it+1) % 10 == 0 and it - last_change > 20: changes at 29, 59, 89;
    # 1e-3 -> 1e-4 -> 1e-5 -> 1e-6 < 9e-6 = done after the step at iteration 89
    p = LinearFitLRPolicy(1e-3, min_lr=9e-6, check_every=10, fit_range=50, min_iters=20)
    lrs = []
    while not p.done:
        lrs.append(p.step(0.5))
        assert p.iteration < 1000
    assert p.iteration == 90
    assert p.changes == [0, 29, 59, 89]
    assert lrs[28] == 1e-3 and lrs[29] == pytest.approx(1e-4) and lrs[59] == pytest.approx(1e-5)
    assert p.lr == pytest.approx(1e-6)


def test_steep_decline_never_decays():
    p = LinearFitLRPolicy(1e-3, check_every=10, fit_range=50, min_iters=20)
    for it in range(300):
        # strongly falling with a small zig-zag: slope -1, std far below 1.5
        assert p.step(1000.0 - it + 0.01 * (-1) ** it) == 1e-3
    assert p.changes == [0] and not p.done
    assert len(p.fits) > 0 and all(not reduced for *_, reduced in p.fits)


def test_rising_curve_decays():
    p = LinearFitLRPolicy(1e-3, check_every=10, fit_range=50, min_iters=20)
    for it in range(30):
        p.step(float(it))
    assert p.changes == [0, 29]


@pytest.mark.parametrize("s, reduced", [(0.2, True), (0.25, False)])
def test_decision_threshold_by_hand(s, reduced):
    # y = -s·x + (0,1,0,1,0) at x = 0..4: the zig-zag is uncorrelated with x, so slope = -s and
    # std = sqrt(0.12) = 0.3464 (as above). Reduce iff 1.5·s <= 0.3464, i.e. s <= 0.2309.
    p = LinearFitLRPolicy(1.0, min_lr=0.0, check_every=5, fit_range=5, min_iters=0)
    for it, z in enumerate([0, 1, 0, 1, 0]):
        p.step(-s * it + z)
    (it, slope, std, did), = p.fits
    assert it == 4 and slope == pytest.approx(-s) and std == pytest.approx(math.sqrt(0.12))
    assert did is reduced
    assert p.lr == (0.1 if reduced else 1.0)


def test_zssr_schedule_with_sparse_measurements():
    # ZSSR: error measured every 50 iterations, checks every 60, fit over 256, >256 between changes.
    # First check with it > 256 and (it+1) % 60 == 0 is 299 (points 50..250); then 599 and 899.
    p = LinearFitLRPolicy()
    for it in range(3000):
        if it % 50 == 0:
            p.observe(0.01 + 1e-6 * (-1) ** (it // 50), it)
        p.step()
        if p.done:
            break
    assert p.changes == [0, 299, 599, 899]
    assert p.iteration == 900 and p.done
    first_fit = p.fits[0]
    assert first_fit[0] == 299


def test_no_measurements_no_change_and_validation():
    p = LinearFitLRPolicy(check_every=1, min_iters=0)
    for _ in range(50):
        p.step()
    assert p.lr == 1e-3
    with pytest.raises(ValueError, match="finite"):
        p.observe(float("nan"))
    with pytest.raises(ValueError, match="factor"):
        LinearFitLRPolicy(factor=1.0)
    with pytest.raises(ValueError, match="initial_lr"):
        LinearFitLRPolicy(initial_lr=0)
