"""The Jacobian-based saliency map attack, JSMA (Papernot et al., "The limitations of deep learning in
adversarial settings", 2016), via advertorch, as ADP (Pang et al. 2019, Table 2) evaluates it.

An L0 attack, and a targeted one: every point is pushed towards a target class other than its label,
drawn from a generator seeded with ``seed`` (the same targets for every model). ``eps`` is the largest
fraction of the input's features it may change (advertorch's ``gamma``); each step raises a pair of
features by ``theta``.
"""

from __future__ import annotations

import torch

from ..compat import import_advertorch
from ..domains import Float, Int
from .base import Attack
from .registry import register_attack


def targets(y: torch.Tensor, num_classes: int, seed: int) -> torch.Tensor:
    """``[B]`` target classes, each different from its label ``y``, drawn uniformly from the others."""
    g = torch.Generator().manual_seed(seed)
    offset = torch.randint(1, num_classes, y.shape, generator=g).to(y.device)
    return (y + offset) % num_classes


@register_attack("jsma")
class JSMA(Attack):
    name = "jsma"
    norm = "l0"
    source = "advertorch"
    defaults = {"theta": 1.0, "seed": 0}
    domains = {"theta": Float(low=0.0, open_low=True, high=1.0), "seed": Int(min=0)}

    def perturb(self, model, x, y, eps, theta, seed):
        at = import_advertorch()
        with torch.no_grad():
            num_classes = model(x[:1]).shape[1]
        attack = at.JacobianSaliencyMapAttack(model, num_classes, clip_min=0.0, clip_max=1.0, theta=theta, gamma=eps)
        return attack.perturb(x, targets(y, num_classes, int(seed)))
