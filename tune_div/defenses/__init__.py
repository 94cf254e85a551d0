"""Defenses (a registry): ``build(name, **hparams) -> Defense`` and ``names()``.

Adding a defense is one new file here that subclasses :class:`Defense` and registers it with
``@register_defense("name")``, imported below, plus ``search_spaces/<name>.yaml``.
"""

from . import adp, cldl, drelu, dverge, gal, naive, smd, smd_plus, trades, trs  # noqa: F401  (registers the defenses)
from .base import Defense
from .registry import DEFENSES, register_defense


def names(pattern: str | None = None) -> list[str]:
    return DEFENSES.names(pattern)


def build(name: str, **hparams) -> Defense:
    """The defense ``name`` with the paper's hyperparameters overridden by ``hparams``.

    Unknown name or hyperparameter: ``ValueError`` naming the valid choices.
    """
    return DEFENSES.get(name)(**hparams)


def defaults(name: str, dataset: str | None = None) -> dict:
    """The paper's hyperparameters of ``name`` (for ``dataset`` where the paper sets them per dataset)."""
    cls = DEFENSES.get(name)
    return {**cls.defaults, **cls.dataset_defaults.get(dataset or "", {})}


__all__ = ["DEFENSES", "Defense", "build", "defaults", "names", "register_defense"]
