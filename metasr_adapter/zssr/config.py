"""ZSSR's settings: :class:`ZSSRConfig`, the official example configurations as :data:`PRESETS`, and
:func:`scale_pair`, the one reading of a scale factor (a number or ``(vertical, horizontal)``)."""
from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from ..ops.augment import REDUCTIONS
from ..precision import PRECISIONS

__all__ = ["ZSSRConfig", "PRESETS", "scale_pair", "default_preset"]


@dataclass
class ZSSRConfig:
    """Settings of one ZSSR run; defaults are the official 'ideal x2' configuration.

    Scale factors are cumulative, relative to the LR input, and either a number or a pair
    ``(vertical, horizontal)``. ``scale_factors=None`` means one jump to the ``scale`` given to
    :meth:`ZSSR.run`; otherwise the last entry must equal that scale.
    """

    # gradual SR
    scale_factors: list[Any] | None = None
    back_projection_iters: int | list[int] = 10  # per stage (an int applies to every stage)
    init_net_for_each_sf: bool = False
    # network
    width: int = 64
    depth: int = 8
    init_variance: float = 0.1
    train_bias: bool = False
    # optimisation and the learning-rate policy
    max_iters: int = 3000
    learning_rate: float = 1e-3
    min_learning_rate: float = 9e-6
    lr_check_every: int = 60
    lr_fit_range: int = 256
    lr_min_iters: int = 256
    lr_change_ratio: float = 1.5
    lr_factor: float = 10.0
    test_every: int = 50
    # training examples
    crop_size: int = 128
    father_min_scale: float = 0.5
    father_levels: int = 6
    allow_rotation: bool = True
    noise_std: float = 0.0
    kernel_shift: bool = True
    # output
    self_ensemble: bool = True
    ensemble_reduce: str = "median"
    # runtime
    precision: str = "fp32"
    seed: int | None = 0
    device: str | None = None

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "ZSSRConfig":
        """A named configuration (see :data:`PRESETS`), with keyword overrides."""
        key = str(name).strip().lower().replace("-", "_")
        if key not in PRESETS:
            raise ValueError(f"unknown ZSSR preset {name!r}; choose one of {', '.join(PRESETS)}")
        cfg = replace(cls(), **copy.deepcopy(PRESETS[key]))
        return replace(cfg, **overrides) if overrides else cfg

    def replace(self, **changes: Any) -> "ZSSRConfig":
        """A copy with some fields changed."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def validate(self) -> "ZSSRConfig":
        """Raise ValueError naming the first bad setting; returns self."""
        ints = {"max_iters": 1, "crop_size": 4, "father_levels": 1, "width": 1, "depth": 2,
                "lr_check_every": 1, "lr_fit_range": 1, "lr_min_iters": 0, "test_every": 1}
        for name, low in ints.items():
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
                raise ValueError(f"ZSSRConfig.{name}={v!r} must be an integer >= {low}")
        if not (0 < self.father_min_scale <= 1):
            raise ValueError(f"ZSSRConfig.father_min_scale={self.father_min_scale!r} must be in (0, 1]")
        if not (self.learning_rate > 0 and self.min_learning_rate >= 0):
            raise ValueError("ZSSRConfig.learning_rate must be > 0 and min_learning_rate >= 0")
        if not self.noise_std >= 0:
            raise ValueError(f"ZSSRConfig.noise_std={self.noise_std!r} must be >= 0 (e.g. 0.0125 for real images)")
        if not self.init_variance > 0:
            raise ValueError(f"ZSSRConfig.init_variance={self.init_variance!r} must be > 0")
        if self.precision not in PRECISIONS:
            raise ValueError(f"ZSSRConfig.precision={self.precision!r}; use one of {PRECISIONS}")
        if self.ensemble_reduce not in REDUCTIONS:
            raise ValueError(f"ZSSRConfig.ensemble_reduce={self.ensemble_reduce!r}; use one of {REDUCTIONS}")
        bp = self.back_projection_iters
        bps = bp if isinstance(bp, (list, tuple)) else [bp]
        if any(isinstance(b, bool) or not isinstance(b, (int, np.integer)) or b < 0 for b in bps):
            raise ValueError(f"ZSSRConfig.back_projection_iters={bp!r} must be non-negative ints")
        if self.scale_factors is not None:
            if not self.scale_factors:
                raise ValueError("ZSSRConfig.scale_factors is empty; use None for one jump to the requested scale")
            for sf in self.scale_factors:
                scale_pair(sf, "scale factor")
            if isinstance(bp, (list, tuple)) and len(bp) != len(self.scale_factors):
                raise ValueError(
                    f"back_projection_iters has {len(bp)} entries but there are {len(self.scale_factors)} "
                    "scale factors; give one per stage or a single int"
                )
        return self


#: Named settings, following the official example configurations.
PRESETS: dict[str, dict[str, Any]] = {
    # one jump, bicubic kernel: ZSSR's X2_ONE_JUMP_IDEAL_CONF (the defaults)
    "ideal_x2": {},
    # six gradual jumps, anisotropic ones included: X2_GRADUAL_IDEAL_CONF
    "gradual_x2": {
        "scale_factors": [(1.0, 1.5), (1.5, 1.0), (1.5, 1.5), (1.5, 2.0), (2.0, 1.5), (2.0, 2.0)],
        "back_projection_iters": [6, 6, 8, 10, 10, 12],
    },
    # a given (possibly non-symmetric) kernel: X2_GIVEN_KERNEL_CONF
    "kernel": {"self_ensemble": False, "allow_rotation": False, "back_projection_iters": 2},
    # real images, kernel + mild unknown noise: X2_REAL_CONF
    "real": {
        "self_ensemble": False, "allow_rotation": False, "back_projection_iters": 0,
        "noise_std": 0.0125, "father_min_scale": 0.75,
    },
    # a few seconds on a CPU: for tests and smoke runs, not for quality
    "fast": {
        "max_iters": 40, "crop_size": 48, "test_every": 10, "lr_check_every": 10, "lr_fit_range": 40,
        "lr_min_iters": 20, "back_projection_iters": 2, "father_levels": 3,
    },
}


def scale_pair(sf: Any, what: str = "scale") -> tuple[float, float]:
    """A scale factor as ``(vertical, horizontal)``, each a finite number >= 1; ValueError naming ``what``
    otherwise."""
    if isinstance(sf, (int, float, np.integer, np.floating)) and not isinstance(sf, bool):
        pair = (float(sf), float(sf))
    elif isinstance(sf, (list, tuple)) and len(sf) == 2:
        pair = (float(sf[0]), float(sf[1]))
    else:
        raise ValueError(f"{what} {sf!r} must be a number or a pair (vertical, horizontal)")
    if not all(math.isfinite(v) and v >= 1 for v in pair):
        raise ValueError(f"{what} {sf!r} must be >= 1 (an upscaling factor, relative to the LR input)")
    return pair


def default_preset(kernel: Any) -> str:
    """The preset ZSSR uses for ``kernel``: 'kernel' for a blur kernel, 'ideal_x2' for None/bicubic."""
    if kernel is None:
        return "ideal_x2"
    if isinstance(kernel, str) and kernel.strip().lower() in ("bicubic", "cubic"):
        return "ideal_x2"
    spec_kernel = getattr(kernel, "kernel", kernel)
    return "ideal_x2" if spec_kernel is None else "kernel"
