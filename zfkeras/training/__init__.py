"""Training with the paper's recipe (Sec. 3): the config, strategies, the loop, its callbacks and
the run directory's layout (:class:`RunDir`)."""

from zfkeras.training.config import PAPER_CHECKPOINT_EPOCHS, TrainConfig
from zfkeras.training.loop import annealed_lr, split_source, train
from zfkeras.training.rundir import RunDir
from zfkeras.training.strategy import STRATEGY_FORMS, make_strategy, worker_role

__all__ = [
    "PAPER_CHECKPOINT_EPOCHS",
    "STRATEGY_FORMS",
    "RunDir",
    "TrainConfig",
    "annealed_lr",
    "make_strategy",
    "split_source",
    "train",
    "worker_role",
]
