"""APGD-CE, APGD-DLR and APGD-T (targeted, DLR loss) of Croce & Hein 2020, via torchattacks.

Defaults follow the issue's budget convention (10 iterations); AutoAttack's own preset uses 100
(see ``autoattack``). ``n_classes`` is read from the model's output. :class:`APGD` is the untargeted
attack for any torchattacks loss and either view of an ensemble (its output, or its mean member logits:
``apgd_ce_logits`` in ``logits.py``).
"""

from __future__ import annotations

from typing import ClassVar

import torch

from ..compat import import_torchattacks
from ..domains import COUNT, SEED
from .base import Attack, MeanLogits
from .registry import register_attack


def n_classes_of(model, x) -> int:
    with torch.no_grad():
        return int(model(x[:1]).shape[1])


class APGD(Attack):
    """Untargeted APGD on ``loss`` (torchattacks: ``ce`` or ``dlr``), through the mean member logits if
    ``through_logits``; always judged on the model's own prediction."""

    source = "torchattacks"
    iterative = True
    step_option = "steps"
    defaults = {"steps": 10, "n_restarts": 1, "seed": 0}
    domains = {"steps": COUNT, "n_restarts": COUNT, "seed": SEED}
    loss: ClassVar[str] = "ce"
    through_logits: ClassVar[bool] = False

    def perturb(self, model, x, y, eps, steps, n_restarts, seed):
        ta = import_torchattacks()
        target = MeanLogits(model) if self.through_logits else model
        return ta.APGD(
            target, norm="Linf", eps=eps, steps=int(steps), n_restarts=int(n_restarts), seed=seed, loss=self.loss
        )(x, y)


@register_attack("apgd_ce")
class APGDCE(APGD):
    name = "apgd_ce"
    single_step = "fgsm"


@register_attack("apgd_dlr")
class APGDDLR(APGD):
    """On the difference-of-logits-ratio loss: scale- and shift-invariant, so a saturated or rescaled
    output does not blunt it."""

    name = "apgd_dlr"
    loss = "dlr"


@register_attack("apgd_t")
class APGDT(Attack):
    name = "apgd_t"
    iterative = True
    step_option = "steps"
    source = "torchattacks"
    defaults = {"steps": 10, "n_restarts": 1, "seed": 0}
    domains = APGD.domains

    def perturb(self, model, x, y, eps, steps, n_restarts, seed):
        ta = import_torchattacks()
        return ta.APGDT(
            model,
            norm="Linf",
            eps=eps,
            steps=int(steps),
            n_restarts=int(n_restarts),
            seed=seed,
            n_classes=n_classes_of(model, x),
        )(x, y)
