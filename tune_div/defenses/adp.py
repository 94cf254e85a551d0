"""ADP: adaptive diversity promoting (Pang, Xu, Du, Chen, Zhu, ICML 2019).

L = Σ_i CE_i − α·H(mean_i p_i) − β·log det(M̃ᵀM̃ + δI)

``p_i`` ``[B, C]`` member probabilities; H the ensemble entropy −Σ_c p̄_c log(p̄_c + 1e-20);
M̃ ``[B, C-1, M]`` has as column i the non-true-class predictions of member i scaled to unit L2 norm.
Paper values: α = 2, β = 0.5, δ = 1e-6 (log_det_delta), entropy offset 1e-20.
"""

from __future__ import annotations

import torch

from ..domains import NON_NEGATIVE, POSITIVE
from .base import Defense, member_ce, parts_dict
from .registry import register_defense

ENTROPY_OFFSET = 1e-20
NORM_EPS = 1e-12  # an all-zero non-true prediction (one-hot on the true class) stays a zero column


def ensemble_entropy(probs: torch.Tensor) -> torch.Tensor:
    """``[M, B, C]`` member probabilities -> ``[B]`` entropy of their mean."""
    mean = probs.mean(0)
    return -(mean * torch.log(mean + ENTROPY_OFFSET)).sum(-1)


def non_true_unit(probs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``[M, B, C]`` -> ``[B, C-1, M]``: each member's predictions without the true class, unit L2 norm."""
    m, b, c = probs.shape
    keep = torch.ones(b, c, dtype=torch.bool, device=probs.device)
    keep[torch.arange(b, device=probs.device), y] = False
    rest = probs[:, keep].view(m, b, c - 1)
    norm = torch.sqrt(torch.clamp((rest * rest).sum(-1, keepdim=True), min=NORM_EPS**2))
    return (rest / norm).permute(1, 2, 0)


def log_det(unit: torch.Tensor, delta: float) -> torch.Tensor:
    """``[B, C-1, M]`` -> ``[B]`` log det(M̃ᵀM̃ + δI), the ensemble diversity."""
    gram = unit.transpose(1, 2) @ unit
    eye = torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
    return torch.logdet(gram + delta * eye)


@register_defense("adp")
class ADP(Defense):
    name = "adp"
    defaults = {"alpha": 2.0, "beta": 0.5, "log_det_delta": 1e-6}
    domains = {"alpha": NON_NEGATIVE, "beta": NON_NEGATIVE, "log_det_delta": POSITIVE}

    def loss(self, ensemble, x, y):
        logits = ensemble.member_logits(x)
        ce = member_ce(logits, y).sum()
        probs = torch.softmax(logits, dim=-1)
        entropy = ensemble_entropy(probs).mean()
        ld = log_det(non_true_unit(probs, y), self.hparams["log_det_delta"]).mean()
        total = ce - self.hparams["alpha"] * entropy - self.hparams["beta"] * ld
        return total, parts_dict(ce, total, entropy=entropy, log_det=ld)
