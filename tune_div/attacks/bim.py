"""BIM (Kurakin et al. 2017): iterative FGSM without random start, via advertorch. 10 steps of ε/5."""

from __future__ import annotations

from ..compat import import_advertorch
from ..domains import COUNT, POSITIVE, Maybe
from .base import Attack
from .losses import LOSS, loss_fn
from .registry import register_attack


@register_attack("bim")
class BIM(Attack):
    name = "bim"
    iterative = True
    step_option = "steps"
    single_step = "fgsm"
    source = "advertorch"
    defaults = {"steps": 10, "step": None, "loss": "ce"}
    domains = {"steps": COUNT, "step": Maybe(POSITIVE), "loss": LOSS}

    def perturb(self, model, x, y, eps, steps, step, loss):
        at = import_advertorch()
        return at.LinfBasicIterativeAttack(
            model,
            loss_fn=loss_fn(loss),
            eps=eps,
            nb_iter=int(steps),
            eps_iter=eps / 5 if step is None else step,
            clip_min=0.0,
            clip_max=1.0,
        ).perturb(x, y)
