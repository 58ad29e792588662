"""Building a network with its weights: ``load_model(arch, weights)``, and the project's own weights.

Bundled weights live in ``metasr_adapter/weights/`` and are described by :class:`WeightsInfo`
(architecture, scale, how they were trained, what they score), in the spirit of
torchvision's weights enums.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from torch import nn

from .adapters import get_model

__all__ = ["WeightsInfo", "BUNDLED_WEIGHTS", "default_weights", "load_model"]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


@dataclass(frozen=True)
class WeightsInfo:
    """Metadata of a bundled weights file."""

    name: str
    arch: str
    filename: str
    scale: float
    ds_method: str
    schedule: str
    description: str
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return WEIGHTS_DIR / self.filename


BUNDLED_WEIGHTS: dict[str, WeightsInfo] = {}


def _register_bundled() -> None:
    """Register the weights files that ship with the package (each has a JSON sidecar)."""
    import json

    if not WEIGHTS_DIR.is_dir():
        return
    for meta in sorted(WEIGHTS_DIR.glob("*.json")):
        info = json.loads(meta.read_text())
        w = WeightsInfo(**info)
        if w.path.is_file():
            BUNDLED_WEIGHTS[w.name] = w


_register_bundled()


def default_weights(arch: str = "mzsr") -> WeightsInfo | None:
    """The first bundled weights for ``arch``, or None when the project ships none for it."""
    for w in BUNDLED_WEIGHTS.values():
        if w.arch == arch:
            return w
    return None


def load_model(
    arch: str = "mzsr",
    weights: str | Path | None = None,
    *,
    param_key: str = "auto",
    strict: bool = True,
    arch_defaults: Mapping[str, Any] | None = None,
    **arch_kwargs: Any,
) -> nn.Module:
    """Build ``arch`` and load ``weights`` (a path, a bundled weights name, or None for the default).

    The network's constructor arguments are, by priority: ``arch_kwargs``; the ``arch_kwargs``
    metadata of ``.pth`` files written by ``save_weights(model, path, arch_kwargs={...})``;
    ``arch_defaults`` (e.g. ``{'scale': 4}`` from a command line). With no weights given and none
    bundled for ``arch``, the network keeps its random initialisation and a warning says so.
    """
    from .weights import load_weights, read_metadata

    if isinstance(weights, str) and weights in BUNDLED_WEIGHTS:
        weights = BUNDLED_WEIGHTS[weights].path
    saved = dict(read_metadata(weights).get("arch_kwargs") or {}) if weights is not None else {}
    arch_kwargs = {**dict(arch_defaults or {}), **saved, **arch_kwargs}
    model = get_model(arch, **arch_kwargs)
    if weights is None:
        info = default_weights(arch)
        if info is None:
            warnings.warn(
                f"no weights given and none bundled for {arch!r}: the network is randomly initialised; "
                "pass --weights / weights=PATH for meaningful results",
                UserWarning,
                stacklevel=2,
            )
            return model
        weights = info.path
        model = get_model(arch, **dict(read_metadata(weights).get("arch_kwargs") or {}))
    load_weights(model, weights, param_key=param_key, strict=strict)
    return model
