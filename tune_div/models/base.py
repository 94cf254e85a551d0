"""The member base class: normalisation inside the model, a body of stages, a replaceable head."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..errors import UserError

ACTIVATIONS = ("relu", "leaky_relu")
LEAKY_SLOPE = 0.1  # GAL (Kariyappa & Qureshi 2019) needs LeakyReLU: ReLU zeroes much of the input gradient


def activation(name: str) -> nn.Module:
    if name == "relu":
        return nn.ReLU()
    if name == "leaky_relu":
        return nn.LeakyReLU(LEAKY_SLOPE)
    raise UserError(f"unknown activation '{name}'; choose one of: {', '.join(ACTIVATIONS)}")


class Normalize(nn.Module):
    """(x - mean) / std per channel, for inputs in [0, 1]; lives in the member so attacks see pixels."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class Member(nn.Module):
    """One ensemble member: ``[B, C, H, W]`` images in [0, 1] -> ``[B, num_classes]`` logits.

    ``stages`` is the body split into the blocks a defense may tap (DVERGE distils features at a random
    stage); the last stage ends in the penultimate features ``[B, feature_dim]``. ``head`` maps those
    features to logits and may be replaced (D-ReLU inserts a capped dense layer before it).
    """

    def __init__(self, stages: Sequence[nn.Module], feature_dim: int, num_classes: int,
                 mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.stages = nn.ModuleList(stages)
        self.feature_dim = feature_dim
        self.num_classes = num_classes
        self.head: nn.Module = nn.Linear(feature_dim, num_classes)

    @property
    def num_stages(self) -> int:
        return len(self.stages)

    def intermediate(self, x: torch.Tensor, stage: int) -> torch.Tensor:
        """Output of stage ``stage`` (0-based; ``num_stages - 1`` gives the penultimate features)."""
        if not 0 <= stage < self.num_stages:
            raise ValueError(f"stage must be in 0..{self.num_stages - 1}, got {stage}")
        h = self.normalize(x)
        for block in self.stages[: stage + 1]:
            h = block(h)
        return h

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features ``[B, feature_dim]``."""
        return self.intermediate(x, self.num_stages - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def flat_size(stages: Sequence[nn.Module], in_channels: int, image_size: int) -> int:
    """Number of features a stack of stages produces for one image (a dry run on zeros)."""
    with torch.no_grad():
        h = torch.zeros(1, in_channels, image_size, image_size)
        for s in stages:
            h = s(h)
    return h.flatten(1).shape[1]
