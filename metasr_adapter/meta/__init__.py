"""Meta-training: the MAML learner (:mod:`.learner`), MZSR/MLSR task samplers (:mod:`.tasks`) and the
supervised pretraining that precedes it (:mod:`.pretrain`). The inner steps are the adaptation step of
:mod:`metasr_adapter.adapt.step`, the one test time takes."""
from .learner import MAMLConfig, MetaLearner, TaskBatch, inner_adapt

__all__ = ["MetaLearner", "MAMLConfig", "TaskBatch", "inner_adapt"]
