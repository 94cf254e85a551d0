"""FGSM (Goodfellow et al. 2015): one signed-gradient step of size ε, via advertorch."""

from __future__ import annotations

from torch import nn

from ..compat import import_advertorch
from .base import Attack
from .registry import register_attack


@register_attack("fgsm")
class FGSM(Attack):
    name = "fgsm"
    adversarial_training = True
    source = "advertorch"
    defaults = {}

    def perturb(self, model, x, y, eps, **opts):
        at = import_advertorch()
        attack = at.GradientSignAttack(model, loss_fn=nn.NLLLoss(reduction="sum"), eps=eps, clip_min=0.0, clip_max=1.0)
        return attack.perturb(x, y)
