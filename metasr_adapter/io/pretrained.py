"""Building a network with its weights: ``load_model(arch, weights)`` (and ``load_basicsr_model`` for a BasicSR
options file), and the project's own weights. A ready :class:`~metasr_adapter.MetaSR` with bundled weights is
:func:`~metasr_adapter.adapt.metasr.load_pretrained`, next to MetaSR.

Bundled weights live in ``metasr_adapter/weights/``: ``NAME.pth`` (written by
:func:`~metasr_adapter.io.weights.save_weights`), ``NAME.json`` (a :class:`WeightsInfo`: architecture,
scale, degradation, schedule, lineage and measured scores, in the spirit of torchvision's weights
enums) and ``NAME.md`` (the model card). Every bundled file was trained here from random
initialisation by the project's own recipes (see each model card).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
import os
from typing import Any, Mapping

from torch import nn

from ..adapters import get_model
from ..errors import UnknownNameError

__all__ = ["WeightsInfo", "BUNDLED_WEIGHTS", "WEIGHTS_DIR", "default_weights", "get_weights", "list_weights",
           "load_model", "load_basicsr_model"]

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"  # metasr_adapter/weights/ (data files)
#: metadata of a weights file that MetaSR uses as its defaults (explicit arguments win)
WEIGHTS_DEFAULT_KEYS = ("scale", "schedule", "loss", "adapt_params", "ds_method", "degradation", "adapt_steps", "blind",
                        "back_projection")


@dataclass(frozen=True)
class WeightsInfo:
    """Metadata of a bundled weights file (its ``NAME.json`` sidecar)."""

    name: str
    arch: str
    filename: str
    scale: float
    ds_method: str
    schedule: Any  # a preset name, or learned rates {"per_parameter": {tensor: [α per step]}}
    description: str
    loss: str = "l1"
    sha256: str | None = None
    lineage: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    #: the degradation family the weights were trained on (e.g. ``{"family": "photo", ...}``; None: the
    #: kernel family of ``ds_method``)
    degradation: dict[str, Any] | None = None
    #: the adaptation steps the weights were meta-trained to be used with: the command line's default --steps
    #: (None: 1). Weights with learned rates can score lower after 0-1 steps than after 10.
    adapt_steps: int | None = None
    #: the default among bundled weights of the same architecture, scale and subsampling
    preferred: bool = False
    #: fit for blind mode: the gaussian kernel estimate scores each candidate kernel by a few adaptation steps
    #: of this network, which needs a network that is good before adaptation (False for weights meta-trained
    #: for 10 steps with learned rates: their 0-step output is far from the image)
    blind: bool = True
    #: back-projection iterations (SPEC §7) that finish these weights' SR with a given kernel (None: none);
    #: ``MetaSR`` takes it as its default, like the step count
    back_projection: int | None = None

    @property
    def path(self) -> Path:
        return WEIGHTS_DIR / self.filename

    @property
    def model_card(self) -> Path:
        return WEIGHTS_DIR / f"{self.name}.md"

    def verify(self) -> None:
        """Raise ValueError when the file's sha256 differs from the sidecar's (a damaged install)."""
        if self.sha256 is None:
            return
        digest = hashlib.sha256(self.path.read_bytes()).hexdigest()
        if digest != self.sha256:
            raise ValueError(f"bundled weights {self.path} have sha256 {digest[:12]}…, expected {self.sha256[:12]}…: "
                             "the file is damaged; reinstall metasr_adapter")


BUNDLED_WEIGHTS: dict[str, WeightsInfo] = {}


def _register_bundled() -> None:
    """Register the weights files that ship with the package (each has a JSON sidecar)."""
    if not WEIGHTS_DIR.is_dir():
        return
    for meta in sorted(WEIGHTS_DIR.glob("*.json")):
        w = WeightsInfo(**json.loads(meta.read_text(encoding="utf-8")))
        if w.path.is_file():
            BUNDLED_WEIGHTS[w.name] = w


_register_bundled()


def list_weights(arch: str | None = None) -> list[str]:
    """Names of the bundled weights (for ``arch`` only, when given)."""
    return [n for n, w in BUNDLED_WEIGHTS.items() if arch is None or w.arch == arch]


def get_weights(name: str) -> WeightsInfo:
    """The :class:`WeightsInfo` of bundled weights ``name``; KeyError naming the choices otherwise."""
    if name not in BUNDLED_WEIGHTS:
        have = ", ".join(BUNDLED_WEIGHTS) or "none (this install ships no weights)"
        raise UnknownNameError(f"no bundled weights named {name!r}; bundled: {have}")
    return BUNDLED_WEIGHTS[name]


def default_weights(arch: str = "mzsr", *, scale: float | None = None, ds_method: str | None = None,
                    blind: bool = False) -> WeightsInfo | None:
    """The bundled weights for ``arch`` that fit ``scale`` (None = any, x2 first) and ``ds_method`` (None = any), or None.

    Weights trained for the requested subsampling are preferred (among them, the one whose sidecar says
    ``preferred``); with no match for it, the first weights of the right architecture and scale are returned.
    ``blind=True`` (the kernel is to be estimated) considers only weights fit for blind mode (``blind`` in
    their sidecar).
    """
    fits = [w for w in BUNDLED_WEIGHTS.values() if w.arch == arch and (scale is None or float(w.scale) == float(scale))
            and (w.blind or not blind)]
    # stable: x2 first when no scale is asked (the package's default factor), then the preferred, then by name
    fits.sort(key=lambda w: (scale is None and float(w.scale) != 2.0, not w.preferred))
    for w in fits:
        if ds_method is None or w.ds_method == ds_method:
            return w
    return fits[0] if fits else None


def load_model(
    arch: str | None = None,
    weights: str | Path | None = None,
    *,
    param_key: str = "auto",
    strict: bool = True,
    arch_defaults: Mapping[str, Any] | None = None,
    **arch_kwargs: Any,
) -> nn.Module:
    """Build ``arch`` and load ``weights``: a path, a bundled weights name (``'mzsr_x2_direct'``), a
    :class:`~metasr_adapter.io.weights.WeightsFile` already read, or None for the bundled default of ``arch``.

    ``arch=None`` takes the architecture saved with the weights (files written by this package and
    the bundled ones carry it), else ``'mzsr'``. An explicit ``arch`` that contradicts the saved one
    raises ValueError naming both.

    The network's constructor arguments are, by priority: ``arch_kwargs``; the ``arch_kwargs``
    metadata of ``.pth`` files written by ``save_weights(model, path, arch_kwargs={...})``;
    ``arch_defaults`` (e.g. ``{'scale': 4}`` from a command line). With no weights given and none
    bundled for ``arch``, ValueError says how to give some; ``weights='random'`` asks for the
    random initialisation explicitly.
    """
    from .weights import WeightsFile, load_weights, read_metadata

    if isinstance(weights, WeightsFile):  # read once by the caller: its metadata comes with it
        metadata, where = weights.metadata, weights.source
    else:
        metadata = where = None
    if arch is not None and arch.lower() == "spandrel":  # the checkpoint describes its own architecture
        from ..integrations.spandrel import load_spandrel_model

        if weights is None or arch_kwargs:
            raise ValueError("arch='spandrel' builds the network from the checkpoint alone: give weights=PATH and "
                             "no architecture arguments")
        return load_spandrel_model(weights)
    if isinstance(weights, str) and weights == "random":
        return get_model(arch or "mzsr", **{**dict(arch_defaults or {}), **arch_kwargs})
    if weights is None:
        info = default_weights(arch or "mzsr")
        if info is None:
            raise ValueError(f"no weights given and none bundled for {arch or 'mzsr'!r}: pass weights=PATH "
                             "(--weights PATH), or weights='random' for an untrained network")
        weights = info.name
    bundled = None
    if isinstance(weights, str) and weights in BUNDLED_WEIGHTS:
        bundled = BUNDLED_WEIGHTS[weights]
        bundled.verify()
        weights = bundled.path
    if metadata is None:
        metadata, where = read_metadata(weights), weights
    if bundled is not None:  # what only the sidecar says (blind-mode fitness, back-projection) travels too
        metadata = {**metadata, "blind": bundled.blind}
        if bundled.back_projection is not None:
            metadata["back_projection"] = bundled.back_projection
    saved_arch = metadata.get("arch")
    if arch is not None and saved_arch is not None and str(saved_arch).lower() != arch.lower():
        raise ValueError(f"{where} holds {saved_arch!r} weights but arch={arch!r} was asked for; "
                         f"use arch={saved_arch!r} (--arch {saved_arch}) or leave it out")
    arch = arch or saved_arch or "mzsr"
    saved = dict(metadata.get("arch_kwargs") or {})
    model = get_model(arch, **{**dict(arch_defaults or {}), **saved, **arch_kwargs})
    load_weights(model, weights, param_key=param_key, strict=strict)
    # what the weights were trained for (scale, schedule, loss, adapted parameters, degradation): MetaSR
    # takes its defaults from it, so MetaSR(load_model(weights=...)) adapts as the weights expect
    model.metasr_weights_metadata = {k: metadata[k] for k in WEIGHTS_DEFAULT_KEYS if k in metadata}
    return model


def load_basicsr_model(
    options: Mapping[str, Any] | str | os.PathLike,
    weights: str | os.PathLike,
    *,
    param_key: str = "params_ema",
    strict: bool = True,
) -> nn.Module:
    """Build the network of a BasicSR options file (or ``network_g`` dict) and load ``weights``
    (``param_key`` ``'params_ema'`` or ``'params'``, as BasicSR's ``path.param_key_g``); needs ``basicsr``
    (see :mod:`metasr_adapter.integrations.basicsr`)."""
    from ..integrations.basicsr import build_basicsr_network
    from .weights import load_weights

    net = build_basicsr_network(options)
    return load_weights(net, weights, param_key=param_key, strict=strict)
