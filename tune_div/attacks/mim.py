"""MIM (Dong et al. 2018): momentum iterative FGSM, decay 1.0, via advertorch. 10 steps of ε/5."""

from __future__ import annotations

from ..compat import import_advertorch
from ..domains import COUNT, NON_NEGATIVE, POSITIVE, Maybe
from .base import Attack
from .losses import LOSS, loss_fn
from .registry import register_attack


@register_attack("mim")
class MIM(Attack):
    name = "mim"
    iterative = True
    step_option = "steps"
    single_step = "fgsm"
    source = "advertorch"
    defaults = {"steps": 10, "step": None, "decay": 1.0, "loss": "ce"}
    domains = {"steps": COUNT, "step": Maybe(POSITIVE), "decay": NON_NEGATIVE, "loss": LOSS}

    def perturb(self, model, x, y, eps, steps, step, decay, loss):
        at = import_advertorch()
        return at.LinfMomentumIterativeAttack(
            model,
            loss_fn=loss_fn(loss),
            eps=eps,
            nb_iter=int(steps),
            decay_factor=decay,
            eps_iter=eps / 5 if step is None else step,
            clip_min=0.0,
            clip_max=1.0,
        ).perturb(x, y)
