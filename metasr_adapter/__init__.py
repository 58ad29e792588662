"""metasr_adapter: meta-learned test-time adaptation for PyTorch super-resolution networks."""
from __future__ import annotations

__version__ = "0.1.0"

from .adapters import get_model, list_models, register_model
from .adapters.mzsr import MZSRNet

__all__ = ["__version__", "get_model", "list_models", "register_model", "MZSRNet"]
