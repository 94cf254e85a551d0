"""TRADES (Zhang, Yu, Jiao, Xing, El Ghaoui, Jordan, ICML 2019, "Theoretically principled trade-off
between robustness and accuracy"), a baseline of the D-ReLU paper's Table 1.

L = CE(f(x), y) + β · KL(f(x) ‖ f(x')),   x' = argmax_{‖x' − x‖∞ ≤ ε} KL(f(x) ‖ f(x'))

f is the ensemble's prediction, the mean of its members' probabilities (a single model is a one-member
ensemble); the KL is summed over classes and averaged over the batch. x' is found by ``steps`` signed
gradient steps of size ``step`` from x + 0.001·N(0, I), projected on the ε ball and [0, 1], with the
model in evaluation mode, as the authors' reference code does. β trades clean accuracy (small) for
robustness (large). The paper's values: MNIST ε 0.3, step 0.01, 40 steps, β 1 (its MNIST experiments);
CIFAR-10 ε 0.031, step 0.007, 10 steps, β 6 (1/λ = 6, its headline setting). The D-ReLU paper evaluates
TRADES with β 1 and 6 at ε 0.1 and does not say which ε it trained with.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..domains import LINF_EPS, NON_NEGATIVE, POSITIVE, Int
from .base import Defense, parts_dict
from .registry import register_defense

START_NOISE = 0.001  # the reference's Gaussian start around x


def kl_to_clean(log_p_clean: torch.Tensor, log_p_adv: torch.Tensor) -> torch.Tensor:
    """KL(p_clean ‖ p_adv), summed over classes, ``[B]`` (both ``[B, C]`` log-probabilities)."""
    return (log_p_clean.exp() * (log_p_clean - log_p_adv)).sum(-1)


def trades_example(model, x: torch.Tensor, eps: float, step: float, steps: int) -> torch.Tensor:
    """x' maximising KL(f(x) ‖ f(x')) in the ε ball (detached); ``model`` returns log-probabilities."""
    was = model.training
    model.eval()
    with torch.no_grad():
        target = model(x)
    x_adv = (x.detach() + START_NOISE * torch.randn_like(x)).clamp(0, 1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        (grad,) = torch.autograd.grad(kl_to_clean(target, model(x_adv)).sum(), x_adv, allow_unused=True)
        if grad is None:  # a model that ignores its input: nothing to climb
            break
        with torch.no_grad():
            x_adv = torch.min(torch.max(x_adv + step * grad.sign(), x - eps), x + eps).clamp(0, 1)
    model.train(was)
    return x_adv.detach()


@register_defense("trades")
class TRADES(Defense):
    name = "trades"
    defaults = {"beta": 1.0, "eps": 0.3, "step": 0.01, "steps": 40}
    dataset_defaults = {
        "cifar10": {"beta": 6.0, "eps": 0.031, "step": 0.007, "steps": 10},
        "cifar100": {"beta": 6.0, "eps": 0.031, "step": 0.007, "steps": 10},
    }
    domains = {"beta": NON_NEGATIVE, "eps": LINF_EPS, "step": POSITIVE, "steps": Int(min=0)}

    def loss(self, ensemble, x, y):
        h = self.hparams
        x_adv = trades_example(ensemble, x, h["eps"], h["step"], h["steps"])
        log_p = ensemble(x)
        ce = F.nll_loss(log_p, y)
        kl = kl_to_clean(log_p, ensemble(x_adv)).mean()
        total = ce + h["beta"] * kl
        return total, parts_dict(ce, total, kl=kl)
