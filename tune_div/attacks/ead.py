"""EAD, the elastic-net attack (Chen et al., "EAD: elastic-net attacks to deep neural networks via
adversarial examples", AAAI 2018), via advertorch, as ADP (Pang et al. 2019, Table 2) evaluates it with
β = 0.01 and a fixed constant c of 5 or 10.

It minimises ``c · CW-loss + β‖δ‖₁ + ‖δ‖₂²``; ``eps`` bounds the L1 norm of the result (an example beyond
it is scaled back onto the L1 ball, as ``cw_l2`` does for L2). ``binary_search_steps`` 1 keeps ``c`` at
``initial_const``, the paper's setting; more steps search ``c`` as the EAD paper does. The defaults (100
iterations) keep it affordable on CPU.
"""

from __future__ import annotations

import torch

from ..compat import import_advertorch
from ..domains import COUNT, NON_NEGATIVE, POSITIVE, OneOf
from .base import Attack, scale_into_ball
from .registry import register_attack


@register_attack("ead")
class EAD(Attack):
    name = "ead"
    iterative = True
    step_option = "max_iterations"
    norm = "l1"
    source = "advertorch"
    defaults = {
        "beta": 0.01,
        "initial_const": 5.0,
        "binary_search_steps": 1,
        "max_iterations": 100,
        "learning_rate": 0.01,
        "confidence": 0.0,
        "decision_rule": "EN",
    }
    domains = {
        "beta": NON_NEGATIVE,
        "initial_const": POSITIVE,
        "binary_search_steps": COUNT,
        "max_iterations": COUNT,
        "learning_rate": POSITIVE,
        "confidence": NON_NEGATIVE,
        "decision_rule": OneOf(("EN", "L1")),
    }

    def perturb(
        self, model, x, y, eps, beta, initial_const, binary_search_steps, max_iterations, learning_rate, confidence,
        decision_rule,
    ):  # fmt: skip
        at = import_advertorch()
        with torch.no_grad():
            num_classes = model(x[:1]).shape[1]
        x_adv = at.ElasticNetL1Attack(
            model,
            num_classes,
            confidence=confidence,
            learning_rate=learning_rate,
            binary_search_steps=int(binary_search_steps),
            max_iterations=int(max_iterations),
            initial_const=initial_const,
            beta=beta,
            decision_rule=decision_rule,
            clip_min=0.0,
            clip_max=1.0,
        ).perturb(x, y)
        return scale_into_ball(x, x_adv, eps, p=1)
