"""Meta-training: the MAML learner (:mod:`.learner`), MZSR/MLSR task samplers (:mod:`.tasks`) and the
supervised pretraining that precedes it (:mod:`.pretrain`)."""
from .learner import MAMLConfig, MetaLearner, TaskBatch, inner_adapt, select_parameters

__all__ = ["MetaLearner", "MAMLConfig", "TaskBatch", "inner_adapt", "select_parameters"]
