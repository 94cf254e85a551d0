"""The member base class: normalisation inside the model, a body of stages, a replaceable head."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

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

    mean: torch.Tensor  # buffers [1, C, 1, 1]
    std: torch.Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class Tapped(Exception):
    """Carries a tapped value (a tensor, or the fused path's activation) out of a forward pass that need
    not go further."""

    def __init__(self, value: Any):
        super().__init__()
        self.value = value


def is_activation(module: nn.Module) -> bool:
    """A non-linearity whose input is a "layer" in DVERGE's sense (``activation_tap`` marks custom ones)."""
    return isinstance(module, (nn.ReLU, nn.LeakyReLU)) or bool(getattr(module, "activation_tap", False))


class Member(nn.Module):
    """One ensemble member: ``[B, C, H, W]`` images in [0, 1] -> ``[B, num_classes]`` logits.

    ``stages`` is the body split into the blocks a defense may tap (DVERGE distils features at a random
    stage); the last stage ends in the penultimate features ``[B, feature_dim]``. ``head`` maps those
    features to logits and may be replaced (D-ReLU inserts a capped dense layer before it).
    """

    def __init__(
        self,
        stages: Sequence[nn.Module],
        feature_dim: int,
        num_classes: int,
        mean: Sequence[float],
        std: Sequence[float],
    ):
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

    def count_layers(self, x: torch.Tensor) -> int:
        """Number of DVERGE layers for inputs shaped like ``x``: every activation call, plus the logits."""
        calls = [0]

        def hook(module, inputs):
            calls[0] += 1

        handles = [m.register_forward_pre_hook(hook) for m in self.modules() if is_activation(m)]
        was_training = self.training
        try:
            self.eval()
            with torch.no_grad():
                self(x[:1])
        finally:
            self.train(was_training)
            for h in handles:
                h.remove()
        return calls[0] + 1

    def layer_features(self, x: torch.Tensor, layer: int) -> torch.Tensor:
        """Pre-activation features of layer ``layer`` (1-based, in forward order; the last layer is the logits).

        As in the DVERGE reference code (Yang et al. 2020), a layer is the input of an activation: a
        convolution or dense layer's output after its batch norm (and, in a residual block, after the
        shortcut is added), before the non-linearity. ``[B, ...]`` in, the layer's ``[B, ...]`` out; the
        forward pass stops there.
        """
        if layer < 1:
            raise ValueError(f"layer must be >= 1, got {layer}")
        seen = [0]

        def hook(module, inputs):
            seen[0] += 1
            if seen[0] == layer:
                raise Tapped(inputs[0])

        handles = [m.register_forward_pre_hook(hook) for m in self.modules() if is_activation(m)]
        try:
            logits = self(x)
        except Tapped as tapped:
            return tapped.value
        finally:
            for h in handles:
                h.remove()
        if layer != seen[0] + 1:
            raise ValueError(f"layer must be in 1..{seen[0] + 1}, got {layer}")
        return logits

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
