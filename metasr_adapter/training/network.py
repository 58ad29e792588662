"""The recipe's network: its constructor arguments, its initialisation, the degradation its weights learned,
and the starting weights (and learned inner rates) that ``model.weights`` names."""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

__all__ = ["model_kwargs", "trained_on_photos", "trained_ds_method", "build_model", "weights_file",
           "saved_inner_lrs"]


def model_kwargs(recipe: Mapping[str, Any]) -> dict[str, Any]:
    """Constructor arguments of the recipe's network (saved with its weights as ``arch_kwargs``)."""
    from ..adapters import scale_kwargs

    m = recipe["model"]
    kwargs: dict[str, Any] = {"width": m["width"], "depth": m["depth"]} if m["name"].lower() == "mzsr" else {}
    kwargs.update(scale_kwargs(m["name"], m["scale"]))  # networks built for one SR factor (RCAN, IDN)
    kwargs.update(m.get("arch_kwargs") or {})
    return kwargs


def trained_on_photos(recipe: Mapping[str, Any]) -> bool:
    """Whether the recipe's last training stage learns from the photo degradation family (data.photo)."""
    d, p, m = recipe["data"], recipe["pretrain"], recipe["meta"]
    if m["iterations"] > 0:
        return d["kernel"] == "photo"
    return p["iterations"] > 0 and p["degradation"] == "photo"


def trained_ds_method(recipe: Mapping[str, Any]) -> str:
    """How the LR images the recipe's last training stage learns from were subsampled: ``'bicubic'`` for
    bicubic tasks or pairs (MATLAB imresize), else ``data.ds_method`` (after the random blur). Recorded as the
    weights' ``ds_method``, which picks bundled weights for a kernel (e.g. ``--arch idn --kernel bicubic``)."""
    d, p, m = recipe["data"], recipe["pretrain"], recipe["meta"]
    if trained_on_photos(recipe):
        return "centred"  # the photo family mixes grids; photos are resized with centred filters
    if m["iterations"] > 0:
        return "bicubic" if d["kernel"] == "bicubic" else d["ds_method"]
    if p["iterations"] > 0 and p["degradation"] == "bicubic":
        return "bicubic"
    return d["ds_method"]


def build_model(recipe: Mapping[str, Any]) -> nn.Module:
    """The recipe's network with its initialisation drawn from ``seed`` (weights not loaded)."""
    from ..adapters import get_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe["seed"])
        return get_model(recipe["model"]["name"], **model_kwargs(recipe))


def weights_file(spec: str) -> str:
    """``model.weights`` as a file: a bundled weights name (checked against its sha256) or the path itself."""
    from ..io.pretrained import BUNDLED_WEIGHTS

    if spec in BUNDLED_WEIGHTS:
        info = BUNDLED_WEIGHTS[spec]
        info.verify()
        return str(info.path)
    return spec


def saved_inner_lrs(spec: str) -> dict[str, list[float]]:
    """The learned inner rates saved with ``model.weights`` (``meta.inner_lr_start: weights``)."""
    from ..adapt.schedules import PerParameterSchedule, get_schedule
    from ..io.weights import read_metadata

    schedule = read_metadata(weights_file(spec)).get("schedule")
    learned = get_schedule(schedule) if isinstance(schedule, Mapping) else None  # validates the table
    if not isinstance(learned, PerParameterSchedule):
        raise ValueError(f"meta.inner_lr_start='weights' but model.weights={spec!r} carries no learned inner rates "
                         f"(its schedule is {schedule!r}); use weights from an LSLR run (meta.learn_inner_lr) "
                         "or set meta.inner_lr_start=recipe")
    return learned.to_dict()["per_parameter"]
