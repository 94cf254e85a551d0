"""CLDL: conditional label dependency learning (Wang & Liu, "Adversarial ensemble training by jointly
learning label dependencies and member models"), eqs. 6-12.

Label-confusion model (LCM, adapted from Guo et al. 2020), shared by the members:
    Vec = f_L(labels)                      label encoder: embedding of all C labels -> dense + tanh, [C, F]
    c_i = softmax((v_i Vecᵀ) W + b)         similarity of member i's instance representation v_i
                                           (its penultimate features, [B, F]) with every label, [B, C]
    s_i = softmax(γ·onehot(y) + c_i)        the soft label (simulated label distribution)
Loss (eq. 12) = mean_i KL(s_i ‖ p_i) − α·ℓ_ld + β·ℓ_gd, with
    ℓ_ld = log( 2/(M(M−1)) Σ_{i<j} exp(JSD(s_i^{\\y} ‖ s_j^{\\y})) )        (eq. 9)
    ℓ_gd = 2/(M(M−1)) Σ_{i<j} |cos(∇ₓ KL_i, ∇ₓ KL_j)|                     (eq. 10)
s^{\\y} drops the true-class entry (the maximal one, since γ ≥ 1 > c); following the paper's eq. 8 the
remaining C−1 entries are used as they are, not renormalised (some re-implementations renormalise).
The soft labels are not detached: as in the paper, the LCM and the members both minimise the KL.
Paper settings (γ, α, β): CIFAR-10 (4, 2, 4), MNIST (3, 4, 4), Fashion-MNIST (3, 2, 4).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..domains import COUNT, NON_NEGATIVE, POSITIVE
from .base import Defense, parts_dict
from .diversity import pairwise_cosines, per_member_input_grads
from .registry import register_defense

LOG_EPS = 1e-12  # guards the logs of the KL / JSD terms


class LabelConfusionModel(nn.Module):
    """Instance representations ``[..., B, F]`` -> label-confusion vectors c ``[..., B, C]`` (rows sum to 1)."""

    def __init__(self, num_classes: int, feature_dim: int, embed_dim: int = 64):
        super().__init__()
        self.embedding = nn.Embedding(num_classes, embed_dim)
        self.label_encoder = nn.Sequential(nn.Linear(embed_dim, feature_dim), nn.Tanh())
        self.similarity = nn.Linear(num_classes, num_classes)  # W, b of eq. 6

    def label_representations(self) -> torch.Tensor:
        return self.label_encoder(self.embedding.weight)  # [C, F]

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.similarity(v @ self.label_representations().T), dim=-1)


def soft_labels(c: torch.Tensor, y: torch.Tensor, gamma: float) -> torch.Tensor:
    """s = softmax(γ·onehot(y) + c), ``[..., B, C]``."""
    return torch.softmax(gamma * F.one_hot(y, c.shape[-1]).to(c.dtype) + c, dim=-1)


def kl(p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p ‖ q) over the last axis, with q given as log-probabilities."""
    return (p * (torch.log(p + LOG_EPS) - log_q)).sum(-1)


def jsd(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """½ (KL(a, m) + KL(b, m)), m = (a + b)/2, over the last axis (eq. 8; inputs need not sum to 1)."""
    m = torch.log((a + b) / 2 + LOG_EPS)
    return 0.5 * (kl(a, m) + kl(b, m))


def drop_true_class(s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``[M, B, C]`` -> ``[M, B, C-1]`` without the entry of class y."""
    m, b, c = s.shape
    keep = torch.ones(b, c, dtype=torch.bool, device=s.device)
    keep[torch.arange(b, device=s.device), y] = False
    return s[:, keep].view(m, b, c - 1)


@register_defense("cldl")
class CLDL(Defense):
    name = "cldl"
    defaults = {"gamma": 4.0, "alpha": 2.0, "beta": 4.0, "embed_dim": 64}
    domains = {"gamma": POSITIVE, "alpha": NON_NEGATIVE, "beta": NON_NEGATIVE, "embed_dim": COUNT}
    dataset_defaults = {
        "cifar10": {"gamma": 4.0, "alpha": 2.0, "beta": 4.0},
        "cifar100": {"gamma": 4.0, "alpha": 2.0, "beta": 4.0},
        "mnist": {"gamma": 3.0, "alpha": 4.0, "beta": 4.0},
        "fashion_mnist": {"gamma": 3.0, "alpha": 2.0, "beta": 4.0},
    }

    def __init__(self, **hparams):
        super().__init__(**hparams)
        self.lcm: LabelConfusionModel | None = None

    def prepare(self, ensemble):
        member = ensemble.members[0]
        device = next(ensemble.parameters()).device
        self.lcm = LabelConfusionModel(member.num_classes, member.feature_dim, int(self.hparams["embed_dim"])).to(
            device
        )

    def loss(self, ensemble, x, y):
        if self.lcm is None:  # called without prepare(): build the LCM now (it is then not optimised)
            self.prepare(ensemble)
        gamma, alpha, beta = self.hparams["gamma"], self.hparams["alpha"], self.hparams["beta"]
        xs = ensemble.member_copies(x)
        logits, feats = ensemble.member_logits(xs, with_features=True)  # [M, B, C], [M, B, F]
        log_p = torch.log_softmax(logits, -1)
        s = soft_labels(self.lcm(feats), y, gamma)  # [M, B, C]
        member_kl = kl(s, log_p)  # [M, B]
        ce = member_kl.mean()  # mean_i of the batch-mean KL_i
        n = len(ensemble.members)
        if n < 2:
            return ce, parts_dict(ce, ce, ld=0.0, gd=0.0)
        i, j = torch.triu_indices(n, n, offset=1)
        s_rest = drop_true_class(s, y)
        ld = torch.log(torch.exp(jsd(s_rest[i], s_rest[j])).mean(0)).mean()
        grads = per_member_input_grads(member_kl.sum(1), xs)  # ∇ₓ KL_i per sample
        gd = pairwise_cosines(grads).abs().mean(0).mean()
        total = ce - alpha * ld + beta * gd
        return total, parts_dict(ce, total, ld=ld, gd=gd)
