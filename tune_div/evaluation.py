"""Compatibility names (docs/design.md, "Contracts"): the evaluation code lives in :mod:`tune_div.eval`."""

from .eval import accuracy, craft, eval_subset

__all__ = ["accuracy", "craft", "eval_subset"]
