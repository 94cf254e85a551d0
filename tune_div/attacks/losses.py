"""The losses the gradient attacks maximise: cross-entropy of the model's log-probabilities (``ce``) or
the Carlini-Wagner hinge on them (``cw``, Carlini & Wagner 2017). The CLDL paper crafts its black-box
examples with both (its Section 4.4, following DVERGE), hence the ``loss`` option of FGSM, BIM, MIM and PGD.
"""

from __future__ import annotations

import torch
from torch import nn

from ..domains import OneOf

LOSS = OneOf(("ce", "cw"))
CW_CONFIDENCE = 50.0  # κ: large, so the attack keeps pushing past the decision boundary


class CWHingeLoss(nn.Module):
    """Σ_b min(max_{j≠y} z_j − z_y, κ): PGD maximises it until the wrong class leads by κ."""

    def __init__(self, confidence: float = 0.0):
        super().__init__()
        self.confidence = confidence

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        true = z.gather(1, y[:, None]).squeeze(1)
        other = z.masked_fill(nn.functional.one_hot(y, z.shape[1]).bool(), float("-inf")).amax(1)
        return torch.clamp(other - true, max=self.confidence).sum()


def loss_fn(loss: str) -> nn.Module:
    """The summed loss an advertorch attack maximises on a batch of log-probabilities ``[B, C]``."""
    return nn.NLLLoss(reduction="sum") if loss == "ce" else CWHingeLoss(CW_CONFIDENCE)
