"""Attacks (a registry): ``get(name)(model, x, y, eps, **options) -> x_adv``; ``names()``.

Every attack works in pixel space [0, 1] and attacks exactly what the model predicts (an ensemble's
log-mean-softmax). One file per attack; the base class owns model mode, projection and checks.
"""

from . import autoattack, autopgd, bim, cw, fgsm, mim, pgd, rfgsm, square  # noqa: F401  (registers the attacks)
from .base import Attack
from .registry import ATTACKS, register_attack


def names(pattern: str | None = None) -> list[str]:
    return ATTACKS.names(pattern)


def get(name: str) -> Attack:
    return ATTACKS.get(name)()


def run(name: str, model, x, y, eps: float, **options):
    return get(name)(model, x, y, eps, **options)


__all__ = ["ATTACKS", "Attack", "get", "names", "register_attack", "run"]
