"""metasr_adapter: meta-learned test-time adaptation for PyTorch super-resolution networks.

The public API is gathered here and imported lazily (PEP 562), so ``import metasr_adapter``
is cheap and an optional integration that fails to import never breaks the others.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> submodule that defines it
_EXPORTS: dict[str, str] = {
    # wrapping and adapting
    "MetaSR": "metasr", "Adaptation": "metasr", "AdaptInfo": "metasr", "AdaptStep": "metasr",
    # networks and weights
    "get_model": "adapters", "list_models": "adapters", "register_model": "adapters",
    "MZSRNet": "adapters.mzsr", "RCAN": "adapters.rcan", "IDN": "adapters.idn", "load_model": "pretrained", "WeightsInfo": "pretrained",
    "BUNDLED_WEIGHTS": "pretrained", "read_weights": "weights", "load_weights": "weights",
    "save_weights": "weights", "read_tf_checkpoint": "tf_checkpoint",
    # degradations and kernels
    "imresize": "degrade", "blur": "degrade", "subsample_direct": "degrade",
    "KernelSpec": "kernels", "named_kernel": "kernels", "resolve_kernel": "kernels", "load_kernel": "kernels",
    "anisotropic_gaussian": "kernels", "random_kernel": "kernels",
    # metrics, schedules, evaluation
    "psnr": "metrics", "ssim": "metrics", "get_schedule": "schedules", "back_project": "backprojection",
    "evaluate_folder": "evaluate", "read_image": "imageio", "write_image": "imageio",
    # meta-training
    "MetaLearner": "meta", "MAMLConfig": "meta", "TaskBatch": "meta", "TaskSampler": "tasks",
    "MLSRTaskSampler": "tasks", "PatchPool": "tasks", "get_loss": "meta",
    # zero-shot SR
    "ZSSR": "zssr", "ZSSRConfig": "zssr",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'metasr_adapter' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
