"""Test-time adaptation: :class:`MetaSR`, learning-rate schedules, folder evaluation."""
from .metasr import AdaptInfo, Adaptation, AdaptStep, MetaSR

__all__ = ["MetaSR", "Adaptation", "AdaptInfo", "AdaptStep"]
