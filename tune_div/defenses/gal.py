"""GAL: gradient alignment loss (Kariyappa & Qureshi 2019, "Improving adversarial robustness of
ensembles with diversity training").

L = mean_i CE_i + λ·log Σ_{i<j} exp(cos(∇ₓCE_i, ∇ₓCE_j))

The cosine is taken per sample between the members' input gradients of their own loss, the log-sum-exp
over pairs, then the batch mean. Paper: λ = 0.5 and LeakyReLU members (ReLU zeroes much of ∇ₓ).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..domains import NON_NEGATIVE
from .base import Defense, parts_dict
from .diversity import log_sum_exp_cos, per_member_input_grads
from .registry import register_defense


@register_defense("gal")
class GAL(Defense):
    name = "gal"
    defaults = {"lam": 0.5}
    domains = {"lam": NON_NEGATIVE}
    model_options = {"activation": "leaky_relu"}

    def loss(self, ensemble, x, y):
        xs = [x.detach().clone().requires_grad_(True) for _ in ensemble.members]
        ces = torch.stack([F.cross_entropy(m(xi), y) for m, xi in zip(ensemble.members, xs)])  # [M]
        # Summed (not averaged) per-sample losses: cosines are scale-free, and each sample's gradient
        # is then its own loss's gradient.
        grads = per_member_input_grads(ces * x.shape[0], xs)
        gal = log_sum_exp_cos(grads).mean()
        ce = ces.mean()
        total = ce + self.hparams["lam"] * gal
        return total, parts_dict(ce, total, gal=gal)
