"""BIM (Kurakin et al. 2017): iterative FGSM without random start, via advertorch. 10 steps of ε/5."""

from __future__ import annotations

from torch import nn

from ..compat import import_advertorch
from ..domains import COUNT, POSITIVE, Maybe
from .base import Attack
from .registry import register_attack


@register_attack("bim")
class BIM(Attack):
    name = "bim"
    iterative = True
    step_option = "steps"
    single_step = "fgsm"
    source = "advertorch"
    defaults = {"steps": 10, "step": None}
    domains = {"steps": COUNT, "step": Maybe(POSITIVE)}

    def perturb(self, model, x, y, eps, steps, step):
        at = import_advertorch()
        return at.LinfBasicIterativeAttack(
            model,
            loss_fn=nn.NLLLoss(reduction="sum"),
            eps=eps,
            nb_iter=int(steps),
            eps_iter=eps / 5 if step is None else step,
            clip_min=0.0,
            clip_max=1.0,
        ).perturb(x, y)
