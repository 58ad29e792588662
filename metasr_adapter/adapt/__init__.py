"""Test-time adaptation: :class:`MetaSR` (and :func:`load_pretrained`, a MetaSR with bundled weights), the
adaptation step it shares with meta-training and the kernel search (:mod:`.step`), learning-rate schedules
(:mod:`.schedules`) and batches of images (:mod:`.batch`)."""
from .metasr import MetaSR, load_pretrained
from .session import AdaptInfo, Adaptation, AdaptStep

__all__ = ["MetaSR", "Adaptation", "AdaptInfo", "AdaptStep", "load_pretrained"]
