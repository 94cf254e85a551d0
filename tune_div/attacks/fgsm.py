"""FGSM (Goodfellow et al. 2015): one signed-gradient step of size ε, via advertorch."""

from __future__ import annotations

from ..compat import import_advertorch
from .base import Attack
from .losses import LOSS, loss_fn
from .registry import register_attack


@register_attack("fgsm")
class FGSM(Attack):
    name = "fgsm"
    adversarial_training = True
    source = "advertorch"
    defaults = {"loss": "ce"}
    domains = {"loss": LOSS}

    def perturb(self, model, x, y, eps, loss):
        at = import_advertorch()
        attack = at.GradientSignAttack(model, loss_fn=loss_fn(loss), eps=eps, clip_min=0.0, clip_max=1.0)
        return attack.perturb(x, y)
