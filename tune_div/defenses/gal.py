"""GAL: gradient alignment loss (Kariyappa & Qureshi 2019, "Improving adversarial robustness of
ensembles with diversity training").

L = mean_i CE_i + λ·log Σ_{i<j} exp(cos(∇ₓCE_i, ∇ₓCE_j))

The cosine is taken per sample between the members' input gradients of their own loss, the log-sum-exp
over pairs, then the batch mean. Paper: λ = 0.5 and LeakyReLU members (ReLU zeroes much of ∇ₓ).

Gaussian-noise augmentation (GAL paper, Sec. 4): the paper trains on the union of the data and a noisy
copy, x + δ with δ drawn from a truncated normal. ``noise_std`` = σ > 0 does that: every batch is
doubled with its noisy copy (δ from N(0, σ²) truncated at ±2σ, TensorFlow's ``truncated_normal``,
clipped to [0, 1]). The paper's σ per dataset is lost in our text copy of the paper, so the default is
0 (off), which is also the SMD protocol (the SMD paper does not use it); set σ to use it.
"""

from __future__ import annotations

import torch

from ..domains import NON_NEGATIVE
from .base import Defense, member_ce, parts_dict
from .diversity import log_sum_exp_cos, per_member_input_grads
from .registry import register_defense


@register_defense("gal")
class GAL(Defense):
    name = "gal"
    defaults = {"lam": 0.5, "noise_std": 0.0}
    domains = {"lam": NON_NEGATIVE, "noise_std": NON_NEGATIVE}
    model_options = {"activation": "leaky_relu"}

    def loss(self, ensemble, x, y):
        if self.hparams["noise_std"] > 0:
            x, y = with_noisy_copy(x, y, self.hparams["noise_std"])
        xs = ensemble.member_copies(x)
        ces = member_ce(ensemble.member_logits(xs), y)  # [M]
        # Summed (not averaged) per-sample losses: cosines are scale-free, and each sample's gradient
        # is then its own loss's gradient.
        grads = per_member_input_grads(ces * x.shape[0], xs)
        gal = log_sum_exp_cos(grads).mean()
        ce = ces.mean()
        total = ce + self.hparams["lam"] * gal
        return total, parts_dict(ce, total, gal=gal)


def with_noisy_copy(x: torch.Tensor, y: torch.Tensor, std: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``[B, ...]`` -> ``[2B, ...]``: the batch followed by x + δ, δ ~ N(0, std²) truncated at ±2·std, in [0, 1]."""
    delta = torch.nn.init.trunc_normal_(torch.empty_like(x), 0.0, std, -2 * std, 2 * std)
    return torch.cat([x, (x + delta).clamp(0, 1)]), torch.cat([y, y])  # empty_like keeps channels-last
