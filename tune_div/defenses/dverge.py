"""DVERGE (Yang et al., NeurIPS 2020, "DVERGE: diversifying vulnerabilities for enhanced robust
generation of ensembles"), the baseline of the SMD and CLDL papers.

Each epoch picks a random layer l. For every member j, feature distillation crafts
    x'_j = argmin_{‖z − x‖∞ ≤ ε} ‖f_j^l(z) − f_j^l(x_t)‖²
an image that looks like the source x (label y) but carries, at member j's layer l, the features of a
target image x_t. Member i is then trained with cross-entropy on the examples distilled from the
*other* members, with the source labels:
    L = Σ_i Σ_{j≠i} CE(f_i(x'_j), y)
A one-member "ensemble" has no other members; it falls back to plain cross-entropy.

What the paper and its reference code (github.com/zjysteven/DVERGE, ``distillation.py`` and
``train/train_dverge.py``) do, and the defaults here:
- the layer is drawn uniformly each epoch from *every* layer: each activation's input (after batch norm,
  before the ReLU; in a residual block after the shortcut is added) plus the logits, 20 layers for
  ResNet-20 and 5 for LeNet-5 (``Member.layer_features``);
- the distillation step is the momentum sign step: g ← μ·g + ∇/‖∇‖₁ (per sample, μ = 1), z ← z − α·sign(g),
  projected on the ε ball and [0, 1]; ε = 0.07, α = 0.007, 10 steps, no random start (the paper's
  CIFAR-10 values; the DVERGE paper has no MNIST experiment, and the SMD paper keeps these values for
  its MNIST/F-MNIST runs);
- the members stay in training mode while distilling (batch norm uses the batch's statistics and
  updates its running averages, as in the reference).

All M distillations run as one batch, ``[M, B, C, H, W]`` (their distances are summed; each member's
copy only moves by its own), through the ensemble's fused path where it runs fused; the cross-entropy
terms run as M - 1 shifted per-member batches. Both give the per-member results (tests/test_dverge.py).

Options that keep the earlier behaviour of this package: ``distill_layers="stages"`` (the members'
coarse post-activation stages), ``distill_momentum=False`` (plain signed gradient),
``distill_train_mode=False`` (eval mode while distilling). Remaining deviation: the target images are a
seeded permutation of the same batch, where the reference draws a second, independently shuffled
batch of the training set; both pair each source with a random training image (here an image is paired
with itself with probability 1/B). The reference also starts DVERGE from a pretrained naive ensemble;
the SMD protocol, which trains every method for the same 50 epochs from scratch, does not (docs/reproduction.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..domains import LINF_EPS, POSITIVE, Bool, Int, OneOf
from ..models import Ensemble
from .base import Defense, member_ce, parts_dict
from .registry import register_defense

LAYER_SETS = ("all", "stages")


def layer_features(model, x: torch.Tensor, layer: int, layer_set: str) -> torch.Tensor:
    """Features at ``layer`` (1-based): every pre-activation layer (``all``) or the coarse stages.

    ``model`` is a member (``[B, ...]`` -> ``[B, ...]``) or an ensemble (``[B, ...]`` or ``[M, B, ...]`` ->
    every member's ``[M, B, ...]``, fused where the ensemble runs fused).
    """
    if isinstance(model, Ensemble):
        if layer_set == "stages":
            return model.member_intermediate(x, layer - 1)
        return model.member_layer_features(x, layer)
    if layer_set == "stages":
        return model.intermediate(x, layer - 1)
    return model.layer_features(x, layer)


def count_layers(member, x: torch.Tensor, layer_set: str) -> int:
    return member.num_stages if layer_set == "stages" else member.count_layers(x)


def feature_distill(
    model,
    source: torch.Tensor,
    target: torch.Tensor,
    layer: int,
    eps: float,
    step: float,
    steps: int,
    rand_start: bool = False,
    momentum: float | None = 1.0,
    layer_set: str = "all",
) -> torch.Tensor:
    """Images within ε (L∞) of ``source`` ``[B, C, H, W]`` whose features at ``layer`` approach those of
    ``target`` (same shape).

    ``model`` a member: one distilled batch ``[B, C, H, W]``. ``model`` an ensemble: one per member,
    ``[M, B, C, H, W]``, all M distillations run as one batch (their distances are summed, and each
    member's copy only moves its own distance). ``momentum`` μ: the reference's L1-normalised momentum
    sign step; ``None``: the plain signed gradient. The train/eval mode is the caller's.
    """
    if isinstance(model, Ensemble):
        z = model.member_copies(source, requires_grad=False)
        # The target goes through the same per-member computation as z: on the fused path a shared batch
        # takes another kernel, whose rounding would give a source paired with itself (probability 1/B) a
        # nonzero gradient, and the sign step would then move it by a whole step.
        target = model.member_copies(target, requires_grad=False)
    else:
        z = source.detach().clone()
    with torch.no_grad():
        target_feat = layer_features(model, target, layer, layer_set)
    if rand_start:
        z = (z + torch.empty_like(z).uniform_(-eps, eps)).clamp(0, 1)
    g = torch.zeros_like(z)
    for _ in range(int(steps)):
        z.requires_grad_(True)
        with torch.enable_grad():
            dist = ((layer_features(model, z, layer, layer_set) - target_feat) ** 2).sum()
            (grad,) = torch.autograd.grad(dist, z)
        if momentum is not None:  # per sample: the image's C, H, W
            l1 = grad.flatten(grad.dim() - 3).abs().sum(-1).clamp_min(1e-12).view(*grad.shape[:-3], 1, 1, 1)
            g = momentum * g + grad / l1
            grad = g
        z = z.detach() - step * grad.sign()
        z = torch.min(torch.max(z, source - eps), source + eps).clamp(0, 1)
    return z.detach()


@register_defense("dverge")
class DVERGE(Defense):
    name = "dverge"
    defaults = {
        "distill_eps": 0.07,
        "distill_step": 0.007,
        "distill_steps": 10,
        "distill_rand_start": False,
        "distill_layers": "all",
        "distill_momentum": True,
        "distill_train_mode": True,
    }
    domains = {
        "distill_eps": LINF_EPS,
        "distill_step": POSITIVE,
        "distill_steps": Int(min=0),
        "distill_rand_start": Bool(),
        "distill_layers": OneOf(LAYER_SETS),
        "distill_momentum": Bool(),
        "distill_train_mode": Bool(),
    }

    def __init__(self, **hparams):
        super().__init__(**hparams)
        self.layer: int | None = None  # 1-based, drawn each epoch
        self.n_layers: int | None = None

    def layers(self, ensemble, x: torch.Tensor | None = None) -> int | None:
        """How many layers the distillation draws from, counted once: on a probe of the architecture's
        input shape, else on the first batch ``x`` (None while neither is known)."""
        if self.n_layers is None:
            cfg = ensemble.config
            if x is None and "in_channels" in cfg and "image_size" in cfg:
                size = cfg["image_size"]
                x = torch.zeros(1, cfg["in_channels"], size, size, device=next(ensemble.parameters()).device)
            if x is not None:
                self.n_layers = count_layers(ensemble.members[0], x[:1], self.hparams["distill_layers"])
        return self.n_layers

    def prepare(self, ensemble):
        self.layers(ensemble)

    def start_epoch(self, epoch, ensemble):
        n = self.layers(ensemble)
        self.layer = None if n is None else int(torch.randint(1, n + 1, (1,)))

    def distilled(self, ensemble, x):
        """One distilled batch per member ``[M, B, C, H, W]`` (features of a permuted batch)."""
        n = self.layers(ensemble, x)
        assert n is not None
        if self.layer is None:
            self.layer = int(torch.randint(1, n + 1, (1,)))
        target = x[torch.randperm(x.shape[0]).to(x.device)]
        was_training = ensemble.training
        ensemble.train(bool(self.hparams["distill_train_mode"]))
        h = self.hparams
        try:
            out = feature_distill(
                ensemble,
                x,
                target,
                self.layer,
                h["distill_eps"],
                h["distill_step"],
                h["distill_steps"],
                bool(h["distill_rand_start"]),
                1.0 if h["distill_momentum"] else None,
                h["distill_layers"],
            )
        finally:
            ensemble.train(was_training)
        return out

    def dverge_ce(self, ensemble, x, y) -> torch.Tensor:
        members = ensemble.members
        if len(members) < 2:
            return F.cross_entropy(members[0](x), y)
        distilled = self.distilled(ensemble, x)
        m = len(members)
        # Shift k gives member i the batch distilled from member (i + k) mod M: M - 1 shifts cover every
        # pair j != i, each member's batch norm sees batches of B as in the looped form.
        shift = torch.arange(m, device=distilled.device)
        terms = [member_ce(ensemble.member_logits(distilled[(shift + k) % m]), y).sum() for k in range(1, m)]
        return torch.stack(terms).sum()

    def loss(self, ensemble, x, y):
        ce = self.dverge_ce(ensemble, x, y)
        return ce, parts_dict(ce, ce)
