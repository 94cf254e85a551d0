"""The defense base class: hyperparameter validation, the member cross-entropy, the ``parts`` contract."""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..domains import Domain, check_all
from ..errors import UserError
from ..models import Ensemble


class Defense(nn.Module, abc.ABC):
    """A training objective for an ensemble (docs/design.md, "Contracts").

    ``loss(ensemble, x, y) -> (total, parts)``: ``x`` ``[B, C, H, W]`` in [0, 1], ``y`` int64 ``[B]``.
    ``parts`` holds floats: ``ce`` (the data term as the paper defines it), ``reg`` (everything the
    defense adds, so ``total == ce + reg``) and each raw regulariser before its coefficient.

    Subclasses set ``name``, ``defaults`` (hyperparameters named as in the paper, with the paper's
    values) and optionally ``model_options`` (architecture options the paper requires, such as GAL's
    LeakyReLU). A defense with trainable parameters registers them as usual; the training loop
    optimises ``defense.parameters()`` together with the ensemble's.
    """

    name: ClassVar[str] = ""
    defaults: ClassVar[dict[str, Any]] = {}
    domains: ClassVar[dict[str, Domain]] = {}  # the valid values of each hyperparameter (tune_div.domains)
    # The paper's values where they differ per dataset (override ``defaults`` for that dataset).
    dataset_defaults: ClassVar[dict[str, dict[str, Any]]] = {}
    model_options: ClassVar[dict[str, Any]] = {}
    # TrainConfig fields of the defense's own paper where its routine differs from the dataset's
    # (D-ReLU: plateau schedule and early stopping); applied by ``tune-div train --paper-routine``.
    paper_training: ClassVar[dict[str, Any]] = {}

    def __init__(self, **hparams: Any):
        super().__init__()
        unknown = sorted(set(hparams) - set(self.defaults))
        if unknown:
            valid = ", ".join(sorted(self.defaults)) or "none"
            raise UserError(f"unknown hyperparameter(s) {unknown} for defense '{self.name}'; valid: {valid}")
        self.hparams: dict[str, Any] = {**self.defaults, **check_all(f"defense '{self.name}'", hparams, self.domains)}
        for key, value in self.hparams.items():  # 1 for a float hyperparameter means 1.0
            if isinstance(self.defaults[key], float):
                self.hparams[key] = float(value)

    def prepare(self, ensemble: Ensemble) -> None:
        """Called once before training with the ensemble this defense will train (hook; default none).

        A defense that builds parameters from the ensemble's shapes (CLDL) does it here, before the
        optimiser is created.
        """

    def start_epoch(self, epoch: int, ensemble: Ensemble) -> None:
        """Called at the start of every epoch, after the RNGs are seeded (hook; DVERGE picks its layer)."""

    @abc.abstractmethod
    def loss(self, ensemble: Ensemble, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """The total loss and its ``parts`` (the class docstring)."""

    def penalty(self, ensemble: Ensemble) -> torch.Tensor | None:
        """The part of the loss that depends on the parameters only, not on a batch (a scalar), or None
        without one. ``TrainConfig.monitor="loss"`` adds it to the validation loss, as Keras does."""
        return None

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.hparams.items())


def member_ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``[M, B, C]`` logits -> ``[M]`` batch-mean cross-entropy of each member."""
    m, b, c = logits.shape
    return F.cross_entropy(logits.reshape(m * b, c), y.repeat(m), reduction="none").view(m, b).mean(1)


def parts_dict(ce: torch.Tensor, total: torch.Tensor, **raw: torch.Tensor | float) -> dict[str, float]:
    """The ``parts`` dict: ``ce``, ``reg = total - ce`` and the raw terms, as Python floats."""
    out = {"ce": float(ce.detach()), "reg": float((total - ce).detach())}
    out.update({k: float(v.detach()) if isinstance(v, torch.Tensor) else float(v) for k, v in raw.items()})
    return out
