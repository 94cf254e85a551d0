"""PGD (Madry et al. 2018): L∞ projected gradient descent with a random start, via advertorch.

Defaults as in the SMD and CLDL papers: 10 iterations of step ε/5 (``step=None`` means ε/5).
"""

from __future__ import annotations

from ..compat import import_advertorch
from ..domains import COUNT, POSITIVE, Bool, Maybe
from .base import Attack
from .losses import LOSS, loss_fn
from .registry import register_attack


@register_attack("pgd")
class PGD(Attack):
    name = "pgd"
    iterative = True
    step_option = "steps"
    single_step = "fgsm"
    adversarial_training = True
    source = "advertorch"
    defaults = {"steps": 10, "step": None, "rand_init": True, "loss": "ce"}
    domains = {"steps": COUNT, "step": Maybe(POSITIVE), "rand_init": Bool(), "loss": LOSS}

    def perturb(self, model, x, y, eps, steps, step, rand_init, loss):
        at = import_advertorch()
        attack = at.LinfPGDAttack(
            model,
            loss_fn=loss_fn(loss),
            eps=eps,
            nb_iter=int(steps),
            eps_iter=eps / 5 if step is None else step,
            rand_init=rand_init,
            clip_min=0.0,
            clip_max=1.0,
        )
        return attack.perturb(x, y)
