"""SMD: saliency map diversity (Bogun et al., "Saliency Diversified Deep Ensemble for Robustness to
Adversaries", eqs. 1-3).

s_i = ∂z_{i,y}/∂x (the member's true-class logit, per sample);
L = Σ_i CE_i + λ·log Σ_{i<j} exp(cos(s_i, s_j)), the measure averaged over the batch.

λ is the paper's Lagrangian parameter. The paper reports a range of λ that works and then fixes one value
for all its experiments (Sec. 4.2); both numbers are lost in our text copy of the paper, so the default
1.0 is ours, not the paper's: it stays searchable, and docs/reproduction.md says which λ a reproduction
used. With batch norm in training mode a sample's saliency also depends (weakly)
on the rest of its batch, as in the reference implementations.
"""

from __future__ import annotations

import torch

from ..domains import NON_NEGATIVE
from .base import Defense, member_ce, parts_dict
from .diversity import log_sum_exp_cos, per_member_input_grads
from .registry import register_defense


def saliency_maps(ensemble, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Member logits ``[M, B, C]`` and saliency maps ``[M, B, D]`` (differentiable, double backprop)."""
    xs = ensemble.member_copies(x)
    logits = ensemble.member_logits(xs)
    true_logit = logits.gather(2, y.view(1, -1, 1).expand(logits.shape[0], -1, 1)).squeeze(2)  # [M, B]
    return logits, per_member_input_grads(true_logit.sum(1), xs)


@register_defense("smd")
class SMD(Defense):
    name = "smd"
    defaults = {"lam": 1.0}
    domains = {"lam": NON_NEGATIVE}

    def loss(self, ensemble, x, y):
        logits, sal = saliency_maps(ensemble, x, y)
        ce = member_ce(logits, y).sum()
        smd = log_sum_exp_cos(sal).mean()
        total = ce + self.hparams["lam"] * smd
        return total, parts_dict(ce, total, smd=smd)
