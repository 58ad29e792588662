"""Adaptation learning-rate schedules: a step index (0-based) -> learning rate.

The named presets are the hand-tuned per-model schedules of the official MZSR test code
(SPEC §5). A constant schedule is ``constant(lr)``. Meta-trained weights may carry learned rates, one
per adapted parameter tensor and step (:class:`PerParameterSchedule`, MAML++'s LSLR); every adaptation
step asks :func:`step_size` for the rate of each tensor.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

__all__ = ["Schedule", "SCHEDULES", "get_schedule", "constant", "piecewise", "PerParameterSchedule", "step_size"]

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


class PerParameterSchedule:
    """Learned learning rates: ``rates[name][step]`` for each adapted parameter tensor (MAML++ LSLR).

    Steps past the learned ones keep the last learned rate. Called with a step alone it returns the
    geometric mean over tensors (for logs); :func:`step_size` gives each tensor its own rate. Saved in
    weights metadata as ``{"per_parameter": {name: [α_0, …]}}``.
    """

    def __init__(self, rates: Mapping[str, Sequence[float]]) -> None:
        if not rates:
            raise ValueError("a per-parameter schedule needs at least one parameter name")
        table: dict[str, tuple[float, ...]] = {}
        for name, values in rates.items():
            vals = tuple(float(v) for v in values)
            if not vals or not all(math.isfinite(v) and v > 0 for v in vals):
                raise ValueError(f"learned rates of {name!r} must be finite numbers > 0, got {list(values)!r}")
            table[str(name)] = vals
        self.rates = table

    def param_lr(self, name: str, step: int) -> float:
        if name not in self.rates:
            raise KeyError(f"no learned learning rate for parameter {name!r}; the weights' rates cover "
                           f"{len(self.rates)} tensors (e.g. {sorted(self.rates)[:3]}); adapt only those, or pass "
                           "schedule=/lr= to use one rate for all")
        vals = self.rates[name]
        return vals[min(int(step), len(vals) - 1)]

    def __call__(self, step: int) -> float:
        logs = [math.log(v[min(int(step), len(v) - 1)]) for v in self.rates.values()]
        return math.exp(sum(logs) / len(logs))

    def to_dict(self) -> dict[str, Any]:
        return {"per_parameter": {n: list(v) for n, v in self.rates.items()}}

    def __repr__(self) -> str:
        steps = max(len(v) for v in self.rates.values())
        return f"PerParameterSchedule({len(self.rates)} tensors, {steps} steps, mean α_0 {self(0):.3g})"


def step_size(schedule: Schedule, name: str, step: int) -> float:
    """The learning rate of parameter ``name`` at adaptation step ``step`` under ``schedule``."""
    per_param = getattr(schedule, "param_lr", None)
    return float(per_param(name, step)) if per_param is not None else float(schedule(step))


def get_schedule(schedule: str | float | Schedule | Mapping[str, Any]) -> Schedule:
    """A named preset, a constant learning rate, learned per-parameter rates (``{"per_parameter": {…}}``,
    as weights metadata stores them), or a callable returned unchanged."""
    if callable(schedule):
        return schedule
    if isinstance(schedule, Mapping):
        if set(schedule) != {"per_parameter"} or not isinstance(schedule["per_parameter"], Mapping):
            raise ValueError(f"a schedule dict must be {{'per_parameter': {{name: [rates]}}}}, got keys {sorted(schedule)}")
        return PerParameterSchedule(schedule["per_parameter"])
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
