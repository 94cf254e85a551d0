"""Carlini-Wagner attacks via advertorch: ``cw_l2`` (the L2 optimisation attack) and ``pgd_cw``
(L∞ PGD on the CW hinge loss, as in the CLDL paper's black-box evaluation).

The CW loss is computed on what the model outputs; for an ensemble that is log(mean softmax), valid
logits of the ensemble's prediction.
"""

from __future__ import annotations

import torch

from ..compat import import_advertorch
from ..domains import COUNT, NON_NEGATIVE, POSITIVE, Bool, Maybe
from .base import Attack, scale_into_ball
from .losses import CW_CONFIDENCE, CWHingeLoss
from .registry import register_attack


@register_attack("pgd_cw")
class PGDCW(Attack):
    name = "pgd_cw"
    iterative = True
    step_option = "steps"
    single_step = "fgsm"
    source = "advertorch"
    defaults = {"steps": 10, "step": None, "confidence": CW_CONFIDENCE, "rand_init": True}
    domains = {"steps": COUNT, "step": Maybe(POSITIVE), "confidence": NON_NEGATIVE, "rand_init": Bool()}

    def perturb(self, model, x, y, eps, steps, step, confidence, rand_init):
        at = import_advertorch()
        return at.LinfPGDAttack(
            model,
            loss_fn=CWHingeLoss(confidence),
            eps=eps,
            nb_iter=int(steps),
            eps_iter=eps / 5 if step is None else step,
            rand_init=rand_init,
            clip_min=0.0,
            clip_max=1.0,
        ).perturb(x, y)


@register_attack("cw_l2")
class CWL2(Attack):
    """L2 attack: ``eps`` bounds the L2 norm of the result (points beyond it are scaled back to the ball).

    Defaults: 5 binary-search steps of 100 Adam iterations of step 0.1 from c = 1, affordable on CPU.
    The step matters most: at advertorch's 0.01, 100 iterations cannot leave an L∞-adversarially-trained
    model's neighbourhood in tanh space, and the attack fails on points that a long run breaks well
    inside the bound (tests/test_attacks.py). advertorch's own (9 steps of 10,000 iterations from
    c = 1e-3) are the setting for a final report. advertorch runs per-sample Python loops here, so it
    is by far the slowest attack on a CPU.
    """

    name = "cw_l2"
    defaults_version = 1  # 1: step 0.1 from c 1 (0: step 0.01 from c 0.1)
    iterative = True
    step_option = "max_iterations"
    norm = "l2"
    source = "advertorch"
    defaults = {
        "confidence": 0.0,
        "learning_rate": 0.1,
        "binary_search_steps": 5,
        "max_iterations": 100,
        "initial_const": 1.0,
    }
    domains = {
        "confidence": NON_NEGATIVE,
        "learning_rate": POSITIVE,
        "binary_search_steps": COUNT,
        "max_iterations": COUNT,
        "initial_const": POSITIVE,
    }

    def perturb(self, model, x, y, eps, confidence, learning_rate, binary_search_steps, max_iterations, initial_const):
        at = import_advertorch()
        with torch.no_grad():
            num_classes = model(x[:1]).shape[1]
        x_adv = at.CarliniWagnerL2Attack(
            model,
            num_classes,
            confidence=confidence,
            learning_rate=learning_rate,
            binary_search_steps=int(binary_search_steps),
            max_iterations=int(max_iterations),
            initial_const=initial_const,
            clip_min=0.0,
            clip_max=1.0,
        ).perturb(x, y)
        return scale_into_ball(x, x_adv, eps, p=2)
