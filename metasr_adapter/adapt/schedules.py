"""Adaptation learning-rate schedules: a step index (0-based) -> learning rate.

The named presets are the hand-tuned per-model schedules of the official MZSR test code
(SPEC §5). A constant schedule is ``constant(lr)``.
"""
from __future__ import annotations

from typing import Callable, Sequence

__all__ = ["Schedule", "SCHEDULES", "get_schedule", "constant", "piecewise"]

Schedule = Callable[[int], float]


def piecewise(values: Sequence[float], boundaries: Sequence[int]) -> Schedule:
    """``values[i]`` for steps in ``[boundaries[i-1], boundaries[i])``; the last value afterwards."""
    if len(values) != len(boundaries) + 1:
        raise ValueError(f"piecewise needs len(values) == len(boundaries) + 1, got {len(values)} and {len(boundaries)}")
    vals, bounds = tuple(float(v) for v in values), tuple(int(b) for b in boundaries)

    def schedule(step: int) -> float:
        for value, bound in zip(vals, bounds):
            if step < bound:
                return value
        return vals[-1]

    return schedule


def constant(lr: float) -> Schedule:
    """The same learning rate at every step."""
    if not lr > 0:
        raise ValueError(f"learning rate must be > 0, got {lr}")
    return piecewise([lr], [])


SCHEDULES: dict[str, Schedule] = {
    # model 0, Directx2: 2e-2 at step 0, 1e-2 for steps 1-3, 5e-3 from step 4 on
    "mzsr_direct": piecewise([2e-2, 1e-2, 5e-3], [1, 4]),
    # model 1, Multi-scale: 1e-2 for steps 0-2, then 5e-3
    "mzsr_multiscale": piecewise([1e-2, 5e-3], [3]),
    # model 2, Bicubicx2: 1e-2 for steps 0-2, then 1e-3
    "mzsr_bicubic": piecewise([1e-2, 1e-3], [3]),
    # model 3, Directx4: 1e-2 at step 0, 5e-3 for steps 1-4, then 1e-3
    "mzsr_x4": piecewise([1e-2, 5e-3, 1e-3], [1, 5]),
}


def get_schedule(schedule: str | float | Schedule) -> Schedule:
    """A named preset, a constant learning rate, or a callable returned unchanged."""
    if callable(schedule):
        return schedule
    if isinstance(schedule, (int, float)) and not isinstance(schedule, bool):
        return constant(float(schedule))
    if isinstance(schedule, str):
        key = schedule.lower()
        if key in SCHEDULES:
            return SCHEDULES[key]
        try:
            return constant(float(key))
        except ValueError:
            pass
        raise ValueError(f"unknown schedule {schedule!r}; use one of {sorted(SCHEDULES)} or a number such as 0.01")
    raise TypeError(f"schedule must be a name, a number or a callable, got {type(schedule).__name__}")
