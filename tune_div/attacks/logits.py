"""Attacks through the mean member logits of an ensemble (``MeanLogits``), judged on its real prediction.

A confident ensemble's averaged softmax saturates: the gradient of its cross-entropy vanishes for
points it is sure of, and PGD on the log-mean-softmax then overstates robustness (by 10-20 points on
fully trained MNIST ensembles at ε 0.1-0.2). The mean member logits do not saturate.

- ``pgd_cw_logits``: L∞ PGD with random start on the CW margin min(max_{j≠y} z̄_j − z̄_y, κ) of the mean
  logits z̄ (advertorch's PGD with the CW hinge loss of ``cw.py``), step 2.5·ε/steps (Madry et al.),
  ``restarts`` random starts kept per point until one fools the ensemble. With 10 steps and one start it
  costs what PGD-10 costs: it is the search's per-epoch proxy.
- ``apgd_ce_logits``: APGD-CE (torchattacks) on the mean logits.
"""

from __future__ import annotations

import torch

from ..compat import import_advertorch
from ..domains import COUNT, NON_NEGATIVE, POSITIVE, Maybe
from .autopgd import APGD
from .base import Attack, MeanLogits, correct
from .losses import CWHingeLoss
from .registry import register_attack


@register_attack("pgd_cw_logits")
class PGDCWLogits(Attack):
    name = "pgd_cw_logits"
    source = "advertorch"
    iterative = True
    step_option = "steps"
    single_step = "fgsm"
    defaults = {"steps": 10, "step": None, "restarts": 1, "confidence": 50.0}
    domains = {"steps": COUNT, "step": Maybe(POSITIVE), "restarts": COUNT, "confidence": NON_NEGATIVE}

    def perturb(self, model, x, y, eps, steps, step, restarts, confidence):
        at = import_advertorch()
        attack = at.LinfPGDAttack(
            MeanLogits(model),
            loss_fn=CWHingeLoss(confidence),
            eps=eps,
            nb_iter=int(steps),
            eps_iter=2.5 * eps / int(steps) if step is None else step,
            rand_init=True,
            clip_min=0.0,
            clip_max=1.0,
        )
        best = x.clone()
        todo = torch.ones(len(x), dtype=torch.bool, device=x.device)
        for _ in range(int(restarts)):
            idx = todo.nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            x_r = attack.perturb(x[idx], y[idx])
            best[idx] = x_r
            todo[idx[~correct(model, x_r, y[idx])]] = False
        return best


@register_attack("apgd_ce_logits")
class APGDCELogits(APGD):
    name = "apgd_ce_logits"
    single_step = "fgsm"
    through_logits = True
