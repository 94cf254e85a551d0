"""TRS (Yang, Zhang, Xu, Kailkhura, Li, Zhang, Li, NeurIPS 2021, "TRS: Transferability Reduced Ensemble via
Promoting Gradient Diversity and Model Smoothness"), the strongest baseline of the CLDL paper's tables.

L = Σ_i CE_i + λ_a · L_sim + λ_b · L_smooth

g_i = ∂CE_i/∂x, the gradient of member i's batch-mean cross-entropy w.r.t. the input (``[B, D]``);
L_sim = the mean over member pairs i < j of the batch mean of |cos(g_i, g_j)| (gradient diversity);
L_smooth = the mean over members of the batch mean of 2·‖g_i(x̃)‖² (model smoothness), where x̃ keeps
the first half of the batch and replaces the second half by a PGD example that *maximises* the same
smoothness term: ``smooth_steps`` signed steps of ε/3 from a uniform start in the ε ball, with ε
growing linearly over training from ``init_eps`` to ``adv_eps``.

The TRS paper is not in our papers folder; the defaults are its authors' reference code's
(github.com/AI-secure/Transferability-Reduced-Smooth-Ensemble, ``train_trs.py`` and ``trainer.py``):
coefficients ``scale · coeff`` = 5 · 2 = 10 for λ_a and ``scale · lamda`` = 5 · 2 = 10 for λ_b, ``plus_adv``
on, ε from 0.1 to 0.2 (images in [0, 1]), 6 steps. Those are the code's defaults, not a per-dataset
choice of the paper; they stay searchable (search_spaces/trs.yaml). A one-member ensemble has no pairs:
L_sim is 0.
"""

from __future__ import annotations

import torch

from ..domains import LINF_EPS, NON_NEGATIVE, Int
from .base import Defense, member_ce, parts_dict
from .diversity import pairwise_cosines, per_member_input_grads
from .registry import register_defense


def loss_grads(ensemble, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Member logits ``[M, B, C]`` and g_i = ∂CE_i/∂x ``[M, B, D]`` of each member's batch-mean CE
    (differentiable: double backprop)."""
    xs = ensemble.member_copies(x)
    logits = ensemble.member_logits(xs)
    return logits, per_member_input_grads(member_ce(logits, y), xs)


def smoothness(g: torch.Tensor) -> torch.Tensor:
    """``[M, B, D]`` -> the mean over members of the batch mean of 2·‖g_i‖² (the reference's Magnitude)."""
    return (2 * (g * g).sum(-1)).mean()


def smooth_example(ensemble, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int) -> torch.Tensor:
    """x within ε (L∞) of ``x`` that maximises the smoothness term, by ``steps`` signed steps of ε/3 from a
    uniform random start; detached."""
    x = x.detach()
    x_adv = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1)
    for _ in range(steps):
        xs = ensemble.member_copies(x_adv)  # every member's copy of x_adv: its gradient is the sum over them
        g = per_member_input_grads(member_ce(ensemble.member_logits(xs), y), xs)
        (grad,) = torch.autograd.grad(smoothness(g), xs, allow_unused=True)
        if grad is None:  # a model whose input gradient does not depend on its input: nothing to climb
            break
        grad = grad.sum(0)
        with torch.no_grad():
            x_adv = torch.min(torch.max(x_adv + eps / 3 * grad.sign(), x - eps), x + eps).clamp(0, 1)
    return x_adv.detach()


@register_defense("trs")
class TRS(Defense):
    name = "trs"
    defaults = {"lambda_a": 10.0, "lambda_b": 10.0, "init_eps": 0.1, "adv_eps": 0.2, "smooth_steps": 6}
    domains = {
        "lambda_a": NON_NEGATIVE,
        "lambda_b": NON_NEGATIVE,
        "init_eps": LINF_EPS,
        "adv_eps": LINF_EPS,
        "smooth_steps": Int(min=0),
    }

    def __init__(self, **hparams):
        super().__init__(**hparams)
        self.epochs = 1
        self.eps = self.hparams["init_eps"]

    def prepare(self, ensemble) -> None:
        self.epochs = int((getattr(ensemble, "train_config", None) or {}).get("epochs") or 1)

    def start_epoch(self, epoch: int, ensemble) -> None:
        """ε of the smoothness example for this epoch (1-based): init_eps, growing linearly towards adv_eps."""
        h = self.hparams
        self.eps = h["init_eps"] + (h["adv_eps"] - h["init_eps"]) * (epoch - 1) / self.epochs

    def loss(self, ensemble, x, y):
        h = self.hparams
        logits, g = loss_grads(ensemble, x, y)
        ce = member_ce(logits, y).sum()
        sim = pairwise_cosines(g).abs().mean() if g.shape[0] > 1 else g.new_zeros(())
        half = x.shape[0] // 2
        g_smooth = g  # without the smoothness example the term is taken at x, whose gradients are g
        if h["smooth_steps"] > 0 and half < x.shape[0]:
            x_smooth = torch.cat([x[:half], smooth_example(ensemble, x[half:], y[half:], self.eps, h["smooth_steps"])])
            _, g_smooth = loss_grads(ensemble, x_smooth, y)
        smooth = smoothness(g_smooth)
        total = ce + h["lambda_a"] * sim + h["lambda_b"] * smooth
        return total, parts_dict(ce, total, sim=sim, smooth=smooth)
