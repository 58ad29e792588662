from __future__ import annotations

import pytest

from metasr_adapter.adapt.schedules import SCHEDULES, constant, get_schedule, piecewise


def test_official_presets_match_spec_section_5():
    lrs = lambda name, n: [get_schedule(name)(i) for i in range(n)]
    assert lrs("mzsr_direct", 6) == [2e-2, 1e-2, 1e-2, 1e-2, 5e-3, 5e-3]
    assert lrs("mzsr_multiscale", 5) == [1e-2, 1e-2, 1e-2, 5e-3, 5e-3]
    assert lrs("mzsr_bicubic", 5) == [1e-2, 1e-2, 1e-2, 1e-3, 1e-3]
    assert lrs("mzsr_x4", 7) == [1e-2, 5e-3, 5e-3, 5e-3, 5e-3, 1e-3, 1e-3]
    assert set(SCHEDULES) == {"mzsr_direct", "mzsr_multiscale", "mzsr_bicubic", "mzsr_x4"}


def test_constants_and_callables():
    assert get_schedule(0.05)(100) == 0.05
    assert get_schedule("0.003")(0) == 0.003
    f = lambda i: 1.0 / (i + 1)
    assert get_schedule(f) is f
    assert piecewise([1, 2, 3], [2, 5])(4) == 2


def test_bad_schedules_are_explained():
    with pytest.raises(ValueError, match="mzsr_direct"):
        get_schedule("mzsr_drect")
    with pytest.raises(ValueError, match="> 0"):
        constant(0)
    with pytest.raises(ValueError, match="len"):
        piecewise([1, 2], [1, 2])
    with pytest.raises(TypeError):
        get_schedule([0.1])
