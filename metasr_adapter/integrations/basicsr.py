"""BasicSR integration: build any BasicSR architecture from its ``network_g`` options, ready for
:class:`~metasr_adapter.MetaSR` and meta-training (``get_model("basicsr", ...)``); its checkpoint loads with
:func:`~metasr_adapter.io.pretrained.load_basicsr_model` (options file and weights in one call).

``basicsr`` is optional (``pip install basicsr``; it needs torchvision). Its last release, 1.4.2,
imports ``torchvision.transforms.functional_tensor``, which torchvision 0.17 removed (fixed on
BasicSR's master, never released). When that module is missing, :func:`import_basicsr` registers
``torchvision.transforms.functional`` under the old name before importing BasicSR (the function
BasicSR takes from it, ``rgb_to_grayscale``, lives there now) and says so once.

For RCAN you do not need BasicSR at all: :class:`~metasr_adapter.adapters.rcan.RCAN` uses BasicSR's
parameter names and loads its checkpoints directly.
"""
from __future__ import annotations

import importlib
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping

import yaml
from torch import nn

__all__ = ["import_basicsr", "build_basicsr_network", "BASICSR_HINT"]

BASICSR_HINT = ("pip install basicsr (with torchvision; 1.4.2 is the last release). For RCAN checkpoints "
                "BasicSR is not needed: use arch 'rcan', which loads them directly")

_SHIMMED = False


def import_basicsr() -> Callable[[dict], nn.Module]:
    """Import BasicSR (with the ``functional_tensor`` fix when needed); returns ``build_network``."""
    global _SHIMMED
    try:
        importlib.import_module("torchvision.transforms.functional_tensor")
    except ModuleNotFoundError as exc:
        if exc.name == "torchvision":
            raise ImportError(f"BasicSR needs torchvision, which is not installed: {BASICSR_HINT}") from None
        functional = importlib.import_module("torchvision.transforms.functional")
        sys.modules["torchvision.transforms.functional_tensor"] = functional
        if not _SHIMMED:
            warnings.warn("torchvision has no transforms.functional_tensor (removed in 0.17); mapping it to "
                          "transforms.functional so that basicsr 1.4.2 imports", UserWarning, stacklevel=2)
            _SHIMMED = True
    try:
        archs = importlib.import_module("basicsr.archs")
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] == "basicsr":
            raise ImportError(f"the basicsr package is not installed: {BASICSR_HINT}") from None
        raise ImportError(f"basicsr failed to import: {exc}. Install its dependencies ({exc.name})") from exc
    return archs.build_network


def _network_options(options: Mapping[str, Any] | str | os.PathLike) -> dict[str, Any]:
    if isinstance(options, (str, os.PathLike)):
        path = Path(options)
        if not path.is_file():
            raise ValueError(f"BasicSR options file not found: {path}")
        options = yaml.safe_load(path.read_text()) or {}
    if not isinstance(options, Mapping):
        raise ValueError(f"BasicSR options must be a mapping; got {type(options).__name__}")
    net = dict(options.get("network_g", options))  # a whole options file, or just its network_g
    if "type" not in net:
        raise ValueError(f"BasicSR network options need a 'type' (e.g. type: RCAN); got keys {sorted(net)}")
    return net


def build_basicsr_network(options: Mapping[str, Any] | str | os.PathLike | None = None, **network_g: Any) -> nn.Module:
    """A BasicSR network from ``network_g`` options (a dict, an options YAML, or keywords), e.g.
    ``build_basicsr_network(type="RCAN", num_in_ch=3, num_out_ch=3, upscale=2, num_block=16)``.

    BasicSR's SR networks take the LR image, so the network is marked ``upsample_input = False``.
    """
    net_opts = _network_options({**(_network_options(options) if options is not None else {}), **network_g})
    build_network = import_basicsr()
    net = build_network(dict(net_opts))
    net.upsample_input = False
    return net
