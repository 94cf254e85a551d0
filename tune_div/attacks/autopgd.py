"""APGD-CE and APGD-T (targeted, DLR loss) of Croce & Hein 2020, via torchattacks.

Defaults follow the issue's budget convention (10 iterations); AutoAttack's own preset uses 100
(see ``autoattack``). ``n_classes`` is read from the model's output.
"""

from __future__ import annotations

import torch

from ..compat import import_torchattacks
from .base import Attack
from .registry import register_attack


def n_classes_of(model, x) -> int:
    with torch.no_grad():
        return int(model(x[:1]).shape[1])


@register_attack("apgd_ce")
class APGDCE(Attack):
    name = "apgd_ce"
    iterative = True
    step_option = "steps"
    single_step = "fgsm"
    source = "torchattacks"
    defaults = {"steps": 10, "n_restarts": 1, "seed": 0}

    def perturb(self, model, x, y, eps, steps, n_restarts, seed):
        ta = import_torchattacks()
        return ta.APGD(model, norm="Linf", eps=eps, steps=int(steps), n_restarts=int(n_restarts), seed=seed,
                       loss="ce")(x, y)


@register_attack("apgd_t")
class APGDT(Attack):
    name = "apgd_t"
    iterative = True
    step_option = "steps"
    source = "torchattacks"
    defaults = {"steps": 10, "n_restarts": 1, "seed": 0}

    def perturb(self, model, x, y, eps, steps, n_restarts, seed):
        ta = import_torchattacks()
        return ta.APGDT(model, norm="Linf", eps=eps, steps=int(steps), n_restarts=int(n_restarts), seed=seed,
                        n_classes=n_classes_of(model, x))(x, y)

