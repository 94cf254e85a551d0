"""R-FGSM (Tramèr et al. 2018, "Ensemble adversarial training"): a random sign step of size α, then an
FGSM step of size ε − α from there. Default α = ε/2 (the paper's choice). advertorch has no R-FGSM.
"""

from __future__ import annotations

import torch

from ..domains import NON_NEGATIVE, Maybe
from ..errors import UserError
from .base import Attack, nll_sum
from .registry import register_attack


@register_attack("rfgsm")
class RFGSM(Attack):
    name = "rfgsm"
    source = "tune_div"
    defaults = {"alpha": None}
    domains = {"alpha": Maybe(NON_NEGATIVE)}  # and <= eps, checked when eps is known

    def perturb(self, model, x, y, eps, alpha):
        alpha = eps / 2 if alpha is None else float(alpha)
        if not 0 <= alpha <= eps:
            raise UserError(f"rfgsm alpha must be in [0, eps], got {alpha}")
        x1 = (x + alpha * torch.randn_like(x).sign()).clamp(0, 1).requires_grad_(True)
        (g,) = torch.autograd.grad(nll_sum(model(x1), y), x1)
        return x1.detach() + (eps - alpha) * g.sign()
