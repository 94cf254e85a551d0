"""Square attack (Andriushchenko et al. 2020): score-based, no gradients, via torchattacks.

Gradient-free, so it is the cross-check for gradient masking. Default 1000 queries (AutoAttack: 5000).
"""

from __future__ import annotations

from ..compat import import_torchattacks
from ..domains import COUNT, SEED, Float
from .base import Attack
from .registry import register_attack


@register_attack("square")
class Square(Attack):
    name = "square"
    iterative = True
    step_option = "n_queries"
    source = "torchattacks"
    defaults = {"n_queries": 1000, "p_init": 0.8, "seed": 0}
    domains = {"n_queries": COUNT, "p_init": Float(0.0, 1.0, open_low=True), "seed": SEED}

    def perturb(self, model, x, y, eps, n_queries, p_init, seed):
        ta = import_torchattacks()
        return ta.Square(model, norm="Linf", eps=eps, n_queries=int(n_queries), p_init=p_init, seed=seed)(x, y)
