"""Attacks (a registry): ``get(name)(model, x, y, eps, **options) -> x_adv``; ``names()``.

Every attack works in pixel space [0, 1] and attacks exactly what the model predicts (an ensemble's
log-mean-softmax), or is judged on it (the ``*_logits`` attacks go through the mean member logits).
One file per attack; the base class owns model mode, projection, option checks, and each attack
declares whether it is iterative, its step option and its single-step counterpart. ``audit`` is the
strong adaptive suite (worst case per point) behind every robust accuracy reported as audited.
"""

from . import (  # noqa: F401  (registers)
    audit,
    autoattack,
    autopgd,
    bim,
    cw,
    ead,
    fgsm,
    jsma,
    logits,
    mim,
    pgd,
    rfgsm,
    square,
)
from .audit import COMPONENTS as AUDIT_COMPONENTS
from .audit import AuditReport
from .base import Attack, MeanLogits
from .registry import ATTACKS, register_attack


def names(pattern: str | None = None, **where) -> list[str]:
    """Registered attacks, optionally filtered by a wildcard and by declared facts,
    e.g. ``names(adversarial_training=True)`` or ``names(iterative=True)``."""
    return [n for n in ATTACKS.names(pattern) if all(getattr(ATTACKS.get(n), k) == v for k, v in where.items())]


def get(name: str) -> Attack:
    return ATTACKS.get(name)()


def run(name: str, model, x, y, eps: float, **options):
    return get(name)(model, x, y, eps, **options)


def defaults_versions(attack_names) -> dict[str, int]:
    """``{name: defaults_version}`` of the attacks whose defaults changed since results were first cached
    (version above 0): the part of a cache key that keeps results of old defaults from being read.
    ``"audit"`` stands for itself and every one of its components."""
    names = set(attack_names)
    if "audit" in names:
        names |= set(AUDIT_COMPONENTS)
    return {n: v for n in sorted(names) if (v := ATTACKS.get(n).defaults_version)}


__all__ = [
    "ATTACKS",
    "Attack",
    "AuditReport",
    "MeanLogits",
    "defaults_versions",
    "get",
    "names",
    "register_attack",
    "run",
]
