"""Compatibility names (docs/design.md, "Contracts"): the training code lives in :mod:`tune_div.train`."""

from .train import TrainConfig, Trainer

__all__ = ["TrainConfig", "Trainer"]
