"""The attack base class: one call shape, model mode, projection and input checks (torchattacks style).

``attack(model, x, y, eps, **options) -> x_adv``: ``model`` maps [0, 1] images to log-probabilities
(for an :class:`~tune_div.models.Ensemble`, its log-mean-softmax output, i.e. exactly what predicts);
``x`` ``[B, C, H, W]`` in [0, 1]; ``y`` int64 ``[B]``; ``eps`` the L∞ radius (L2 for ``norm = "l2"``).
The result is detached, inside [0, 1] and, for L∞ attacks, inside the ε-ball (enforced here, so a
library attack that overshoots by rounding can never report a perturbation larger than asked).

Every attack class declares the facts other code needs about it: ``iterative`` (more steps should
never make it weaker), ``step_option`` (the option that sets its number of iterations or queries, which
a search objective's ``steps`` sets), ``single_step`` (the one-step attack an iterative one must beat:
the sanity flag ``iterative_weaker_than_single_step``) and ``adversarial_training`` (usable to craft
training examples with ``--adv-train``).
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import torch
from torch import nn

from ..domains import Domain, Float, check, check_all
from ..errors import UserError

# 0 returns the input unchanged; for L0 ``eps`` is the largest fraction of the features changed
EPS_DOMAIN = {"linf": Float(0.0, 1.0), "l2": Float(low=0.0), "l1": Float(low=0.0), "l0": Float(0.0, 1.0)}


class Attack(abc.ABC):
    name: ClassVar[str] = ""
    norm: ClassVar[str] = "linf"
    defaults: ClassVar[dict[str, Any]] = {}
    domains: ClassVar[dict[str, Domain]] = {}  # the valid values of each option (tune_div.domains)
    source: ClassVar[str] = ""  # the library the attack comes from (advertorch, torchattacks, tune_div)
    iterative: ClassVar[bool] = False
    step_option: ClassVar[str | None] = None
    single_step: ClassVar[str | None] = None
    adversarial_training: ClassVar[bool] = False
    # Bumped whenever ``defaults`` change: a cached result of the attack is keyed on it (when above 0),
    # so a result the old defaults produced is never read as the new ones' (tests/test_attacks.py pins it).
    defaults_version: ClassVar[int] = 0

    @classmethod
    def with_steps(cls, steps: int | None) -> dict[str, Any]:
        """``{step_option: steps}`` for an attack that has a step option (and ``steps`` is given), else ``{}``."""
        return {cls.step_option: int(steps)} if cls.step_option and steps is not None else {}

    def options(self, eps: float, **options: Any) -> dict[str, Any]:
        """Defaults overridden by ``options``, each checked against its domain; subclasses resolve
        eps-relative values here."""
        unknown = sorted(set(options) - set(self.defaults))
        if unknown:
            valid = ", ".join(sorted(self.defaults)) or "none"
            raise UserError(f"unknown option(s) {unknown} for attack '{self.name}'; valid: {valid}")
        return {**self.defaults, **check_all(f"attack '{self.name}'", options, self.domains)}

    @abc.abstractmethod
    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, **opts: Any) -> torch.Tensor:
        """Adversarial examples ``[N, C, H, W]`` of ``x`` with the resolved options ``opts``."""

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, **options: Any) -> torch.Tensor:
        check(f"attack '{self.name}'", "eps", eps, EPS_DOMAIN[self.norm])
        opts = self.options(eps, **options)
        x = x.detach().float().contiguous()
        if eps == 0:
            return x.clone()
        was_training = model.training
        model.eval()  # attack the deployed model: batch-norm statistics frozen, no dropout
        try:
            with torch.enable_grad():
                x_adv = self.perturb(model, x, y, eps, **opts).detach()
        finally:
            model.train(was_training)
        if self.norm == "linf":
            x_adv = torch.max(torch.min(x_adv, x + eps), x - eps)
        return x_adv.clamp_(0.0, 1.0)


def scale_into_ball(x: torch.Tensor, x_adv: torch.Tensor, eps: float, p: int) -> torch.Tensor:
    """``x_adv`` with each perturbation longer than ``eps`` in the L``p`` norm scaled back onto the ball
    (the L∞ ball is enforced by :class:`Attack` itself)."""
    delta = x_adv - x
    norms = delta.flatten(1).norm(p=p, dim=1).clamp_min(1e-12).view(-1, *[1] * (x.dim() - 1))
    return x + delta * torch.clamp(eps / norms, max=1.0)


class MeanLogits(nn.Module):
    """An ensemble seen through its mean member logits ``[B, C]`` (a model without ``member_logits``: its
    own output). Attacking this view instead of the log-mean-softmax output avoids the saturation of a
    confident ensemble's averaged softmax, whose cross-entropy gradients vanish; the result is still
    judged on what the ensemble predicts."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.train(model.training)  # a library attack restores the mode it found, here the model's

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        member_logits = getattr(self.model, "member_logits", None)
        return member_logits(x).mean(0) if member_logits is not None else self.model(x)


@torch.no_grad()
def correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``[B]`` bool: the model's prediction is the label (how every attack is judged)."""
    return model(x).argmax(1) == y


def nll_sum(log_probs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Summed negative log-likelihood of log-probabilities (cross-entropy of the ensemble prediction)."""
    return nn.functional.nll_loss(log_probs, y, reduction="sum")
