"""Training: the configuration, the one trainer every defense uses, checkpoints, the exported config.

``TrainConfig`` (``config.py``) -> ``Trainer(cfg)`` (``trainer.py``: ``train_epoch() -> metrics``,
``fit()``, checkpoint save/resume through ``checkpoint.py``). ``config_file.py`` reads and writes the
exported-config YAML that ``tune-div train --config`` retrains. ``python -m tune_div.train`` is the
train command (``tune_div.cli.train``).
"""

from .config import TrainConfig, resolve_device, resolve_memory_format, validate_adv_train
from .trainer import EVAL_BATCH, Trainer, ensemble_and_member_accuracy, ensemble_eval, epoch_seed

__all__ = [
    "EVAL_BATCH",
    "TrainConfig",
    "Trainer",
    "ensemble_and_member_accuracy",
    "ensemble_eval",
    "epoch_seed",
    "resolve_device",
    "resolve_memory_format",
    "validate_adv_train",
]
