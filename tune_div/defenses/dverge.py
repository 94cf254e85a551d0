"""DVERGE (Yang et al., NeurIPS 2020, "DVERGE: diversifying vulnerabilities for enhanced robust
generation of ensembles"), the baseline of the SMD and CLDL papers.

Each epoch picks a random layer l. For every member j, feature distillation crafts
    x'_j = argmin_{‖z − x‖∞ ≤ ε} ‖f_j^l(z) − f_j^l(x_t)‖²
an image that looks like the source x (label y) but carries, at member j's layer l, the features of a
target image x_t (here: another image of the same batch, a seeded permutation). Member i is then trained
with cross-entropy on the examples distilled from the *other* members, with the source labels:
    L = Σ_i Σ_{j≠i} CE(f_i(x'_j), y)
Distillation: ε = 0.07, step 0.007, 10 signed-gradient steps (the paper's MNIST/CIFAR settings), no
random start, members in eval mode while distilling. A one-member "ensemble" has no other members; it
falls back to plain cross-entropy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..domains import LINF_EPS, POSITIVE, Bool, Int
from .base import Defense, parts_dict
from .registry import register_defense


def feature_distill(member, source: torch.Tensor, target: torch.Tensor, stage: int, eps: float, step: float,
                    steps: int, rand_start: bool = False) -> torch.Tensor:
    """Images within ε (L∞) of ``source`` whose features at ``stage`` approach those of ``target``."""
    with torch.no_grad():
        target_feat = member.intermediate(target, stage)
    z = source.detach().clone()
    if rand_start:
        z = (z + torch.empty_like(z).uniform_(-eps, eps)).clamp(0, 1)
    for _ in range(int(steps)):
        z.requires_grad_(True)
        with torch.enable_grad():
            dist = ((member.intermediate(z, stage) - target_feat) ** 2).sum()
            (g,) = torch.autograd.grad(dist, z)
        z = z.detach() - step * g.sign()
        z = torch.min(torch.max(z, source - eps), source + eps).clamp(0, 1)
    return z.detach()


@register_defense("dverge")
class DVERGE(Defense):
    name = "dverge"
    defaults = {"distill_eps": 0.07, "distill_step": 0.007, "distill_steps": 10, "distill_rand_start": False}
    domains = {"distill_eps": LINF_EPS, "distill_step": POSITIVE, "distill_steps": Int(min=0), "distill_rand_start": Bool()}

    def __init__(self, **hparams):
        super().__init__(**hparams)
        self.stage: int | None = None

    def start_epoch(self, epoch, ensemble):
        self.stage = int(torch.randint(0, ensemble.members[0].num_stages, (1,)))

    def distilled(self, ensemble, x):
        """One distilled batch per member ``[M][B, C, H, W]`` (features of a permuted batch)."""
        if self.stage is None:
            self.start_epoch(0, ensemble)
        target = x[torch.randperm(x.shape[0]).to(x.device)]
        was_training = ensemble.training
        ensemble.eval()
        try:
            out = [feature_distill(m, x, target, self.stage, self.hparams["distill_eps"], self.hparams["distill_step"],
                                   self.hparams["distill_steps"], bool(self.hparams["distill_rand_start"]))
                   for m in ensemble.members]
        finally:
            ensemble.train(was_training)
        return out

    def dverge_ce(self, ensemble, x, y) -> torch.Tensor:
        members = ensemble.members
        if len(members) < 2:
            return F.cross_entropy(members[0](x), y)
        distilled = self.distilled(ensemble, x)
        terms = [F.cross_entropy(mi(distilled[j]), y)
                 for i, mi in enumerate(members) for j in range(len(members)) if j != i]
        return torch.stack(terms).sum()

    def loss(self, ensemble, x, y):
        ce = self.dverge_ce(ensemble, x, y)
        return ce, parts_dict(ce, ce)
