"""ZSSR's learning-rate policy: divide the rate when a linear fit says the error has stopped falling.

Every ``check_every`` iterations (once at least ``min_iters`` iterations have passed since the
last change) a straight line is fitted to the error measurements of the last ``fit_range``
iterations. If the error is not falling faster than its own noise, i.e.
``-ratio * slope <= std(slope)``, the rate is divided by ``factor``. Training is ``done`` when
the rate drops below ``min_lr``. With ZSSR's defaults (1e-3, factor 10, ``min_lr`` 9e-6) the
rates are 1e-3, 1e-4, 1e-5 and the run stops when 1e-6 would be next.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

__all__ = ["linear_fit", "LinearFitLRPolicy"]


def linear_fit(x: Sequence[float], y: Sequence[float], ddof: int = 4) -> tuple[float, float, float]:
    """Least-squares line ``y ≈ slope·x + intercept``; returns ``(slope, intercept, slope_std)``.

    ``slope_std = sqrt(SSR / (n - ddof) / Σ(x - x̄)²)`` is the standard error of the slope. The
    official ZSSR code took it from ``np.polyfit(x, y, 1, cov=True)``, which in the numpy of its
    time scaled by ``n - 4`` (``ddof=4``, the default here); current numpy uses ``n - 2``.
    """
    xs = np.asarray(x, dtype=np.float64)
    ys = np.asarray(y, dtype=np.float64)
    if xs.shape != ys.shape or xs.ndim != 1:
        raise ValueError(f"x and y must be 1-D and the same length; got {xs.shape} and {ys.shape}")
    n = xs.size
    if n < 2 or n <= ddof:
        raise ValueError(f"a line fit with ddof={ddof} needs more than max(1, ddof) points; got {n}")
    xc = xs - xs.mean()
    sxx = float(np.dot(xc, xc))
    if sxx == 0:
        raise ValueError("all x values are equal; a slope is undefined")
    slope = float(np.dot(xc, ys - ys.mean()) / sxx)
    intercept = float(ys.mean() - slope * xs.mean())
    resid = ys - (slope * xs + intercept)
    ssr = float(np.dot(resid, resid))
    return slope, intercept, math.sqrt(ssr / (n - ddof) / sxx)


class LinearFitLRPolicy:
    """ZSSR's "linear fit" learning-rate policy.

    Call :meth:`step` once per training iteration (after the optimiser step), optionally with the
    iteration's error; use the returned rate for the next iteration and stop when :attr:`done`.
    Errors measured less often (ZSSR fits the reconstruction error measured every 50 iterations)
    can be given with :meth:`observe` instead.

    Args:
        initial_lr: the starting rate (ZSSR: 1e-3).
        min_lr: stop once the rate is below this (ZSSR: 9e-6, so the last rate used is 1e-5).
        check_every: consider a change when ``(iteration + 1) % check_every == 0`` (ZSSR: 60).
        fit_range: fit the measurements of the last ``fit_range`` iterations (ZSSR: 256).
        min_iters: at least this many iterations between two changes (ZSSR: 256).
        ratio: reduce when ``-ratio * slope <= slope_std`` (ZSSR: 1.5). The official code used ``<``,
            which never reduces on an exactly flat curve; ``<=`` does.
        factor: divide the rate by this (ZSSR: 10).
        ddof: see :func:`linear_fit` (the fit needs more than ``ddof`` points; fewer: no change).
    """

    def __init__(
        self,
        initial_lr: float = 1e-3,
        min_lr: float = 9e-6,
        check_every: int = 60,
        fit_range: int = 256,
        min_iters: int = 256,
        ratio: float = 1.5,
        factor: float = 10.0,
        ddof: int = 4,
    ) -> None:
        if not (initial_lr > 0 and math.isfinite(initial_lr)):
            raise ValueError(f"initial_lr={initial_lr!r} must be a positive number")
        if not min_lr >= 0:
            raise ValueError(f"min_lr={min_lr!r} must be >= 0")
        if check_every < 1 or fit_range < 1 or min_iters < 0:
            raise ValueError(
                f"check_every={check_every} and fit_range={fit_range} must be >= 1 and min_iters={min_iters} >= 0"
            )
        if not factor > 1:
            raise ValueError(f"factor={factor!r} must be > 1 (the rate is divided by it)")
        if not ratio >= 0:
            raise ValueError(f"ratio={ratio!r} must be >= 0")
        self.initial_lr = float(initial_lr)
        self.min_lr = float(min_lr)
        self.check_every = int(check_every)
        self.fit_range = int(fit_range)
        self.min_iters = int(min_iters)
        self.ratio = float(ratio)
        self.factor = float(factor)
        self.ddof = int(ddof)
        self.lr = self.initial_lr
        #: iterations completed so far (the index of the next :meth:`step`)
        self.iteration = 0
        #: iterations at which the rate changed (starts with 0, like the official code)
        self.changes: list[int] = [0]
        #: (iteration, slope, slope_std, reduced) for every fit made
        self.fits: list[tuple[int, float, float, bool]] = []
        self._its: list[int] = []
        self._values: list[float] = []

    @property
    def done(self) -> bool:
        """True once the rate fell below ``min_lr``: training should stop."""
        return self.lr < self.min_lr

    def observe(self, value: float, iteration: int | None = None) -> None:
        """Record an error measurement made at ``iteration`` (default: the current one)."""
        v = float(value)
        if not math.isfinite(v):
            raise ValueError(f"error measurement {value!r} is not finite; the training diverged")
        self._its.append(self.iteration if iteration is None else int(iteration))
        self._values.append(v)

    def step(self, loss: float | None = None) -> float:
        """Finish one iteration (recording ``loss`` if given); returns the rate for the next one."""
        it = self.iteration
        if loss is not None:
            self.observe(loss, it)
        if (it + 1) % self.check_every == 0 and it - self.changes[-1] > self.min_iters:
            keep = [i for i, s in enumerate(self._its) if it - self.fit_range < s <= it]
            if len(keep) >= 2 and len(keep) > self.ddof:
                xs = [self._its[i] for i in keep]
                if len(set(xs)) > 1:
                    slope, _, std = linear_fit(xs, [self._values[i] for i in keep], self.ddof)
                    reduce = -self.ratio * slope <= std
                    self.fits.append((it, slope, std, reduce))
                    if reduce:
                        self.lr /= self.factor
                        self.changes.append(it)
        self.iteration = it + 1
        if len(self._its) > 4 * self.fit_range:  # forget measurements that no future fit can use
            keep = [i for i, s in enumerate(self._its) if s > it - self.fit_range]
            self._its = [self._its[i] for i in keep]
            self._values = [self._values[i] for i in keep]
        return self.lr

    def __repr__(self) -> str:
        return (
            f"LinearFitLRPolicy(lr={self.lr:g}, iteration={self.iteration}, changes={self.changes[1:]}, "
            f"done={self.done})"
        )
