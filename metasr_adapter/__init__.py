"""metasr_adapter: meta-learned test-time adaptation for PyTorch super-resolution networks.

The public API is gathered here and imported lazily (PEP 562), so ``import metasr_adapter``
is cheap and an optional integration that fails to import never breaks the others.
"""
from __future__ import annotations

import importlib
from typing import Any

from .resolvers import register_kernel_resolver as _register_kernel_resolver

__version__ = "0.1.0"

# public name -> submodule that defines it
_EXPORTS: dict[str, str] = {
    # wrapping and adapting
    "MetaSR": "adapt.metasr", "Adaptation": "adapt.session", "AdaptInfo": "adapt.session", "AdaptStep": "adapt.session",
    "adapt_many": "adapt.batch", "adapt_folder": "adapt.batch",
    # networks and weights
    "get_model": "adapters", "list_models": "adapters", "register_model": "adapters",
    "MZSRNet": "adapters.mzsr", "RCAN": "adapters.rcan", "IDN": "adapters.idn", "load_model": "io.pretrained", "WeightsInfo": "io.pretrained",
    "BUNDLED_WEIGHTS": "io.pretrained", "load_pretrained": "adapt.metasr", "list_weights": "io.pretrained",
    "get_weights": "io.pretrained", "read_weights": "io.weights", "load_weights": "io.weights",
    "save_weights": "io.weights",
    # degradations and kernels
    "degrade": "ops.degrade", "imresize": "ops.degrade", "blur": "ops.degrade", "DegradationSpec": "ops.degradation_spec",
    "KernelSpec": "ops.kernels", "named_kernel": "ops.kernels", "resolve_kernel": "ops.kernels", "load_kernel": "ops.kernels",
    "anisotropic_gaussian": "ops.kernels", "random_kernel": "ops.kernels",
    # metrics, schedules, evaluation
    "psnr": "ops.metrics", "ssim": "ops.metrics", "get_schedule": "adapt.schedules", "back_project": "ops.backprojection",
    "evaluate_folder": "pipelines.evaluate", "read_image": "ops.imageio", "write_image": "ops.imageio",
    # errors
    "UserInputError": "errors",
    # CPU speed: keep freed activations between adaptation steps (the command line does this at start); strided
    # transposed convolutions as convolution + pixel shuffle
    "retain_freed_memory": "allocator", "use_subpixel_transposed_convs": "ops.subpixel",
    "winograd_convolutions": "ops.conv",
    # real photos: estimate, choose the network, adapt, check
    "upscale_photo": "pipelines.photo",
    # meta-training (task samplers, patch pools and task batches stay in metasr_adapter.meta)
    "MetaLearner": "meta.learner", "MAMLConfig": "meta.learner", "get_loss": "ops.losses",
    # zero-shot SR
    "ZSSR": "zssr.core", "ZSSRConfig": "zssr.core",
    # blind mode: kernel estimation
    "estimate_kernel": "estimate.api", "KernelEstimate": "estimate.api",
}

__all__ = ["__version__", *sorted(_EXPORTS)]

# The composition root wires what a lower layer looks up by name: MetaSR's kernel="estimate" is resolved by
# the kernel estimators, a layer above adaptation (they adapt to score kernels); imported at its first use.
_register_kernel_resolver("estimate", "metasr_adapter.estimate.api:estimate_for_metasr", replace=True)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'metasr_adapter' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
