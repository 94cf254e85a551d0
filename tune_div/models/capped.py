"""Capped ReLU, min(max(0, z), m), and the head that puts a dense layer of them before the output.

Sooksatra et al., "Dynamic-max-value ReLU": S-ReLU has a fixed cap m; D-ReLU learns one cap m_k per
unit (initialised high, 100 in the paper) while the loss CE + λ·Σ_k m_k² pushes the caps down. The paper
places the capped layer as an extra dense layer right before the output layer; ``capped_relu_head``
does that for any registered architecture (``build_ensemble(..., head={"type": "capped_relu", ...})``).
"""

from __future__ import annotations

import torch
from torch import nn

from .ensemble import HEADS
from .fused import STACKED, Act, fused_op, to_stacked


class CappedReLU(nn.Module):
    """``[B, width]`` -> ``min(max(0, z), m)`` with one cap per unit (learnable, or a fixed buffer).

    Where z > m_k the output is m_k: the gradient goes to m_k and none to z (the capped unit is flat).
    """

    activation_tap = True  # its input is a DVERGE layer (models.base.is_activation)

    def __init__(self, width: int, init_max: float = 100.0, learnable: bool = True):
        super().__init__()
        caps = torch.full((width,), float(init_max))
        if learnable:
            self.max_value = nn.Parameter(caps)
        else:
            self.register_buffer("max_value", caps)
        self.learnable = learnable

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return capped_relu(z, self.max_value)

    def extra_repr(self) -> str:
        return f"width={self.max_value.numel()}, learnable={self.learnable}"


def capped_relu(z: torch.Tensor, caps: torch.Tensor) -> torch.Tensor:
    """min(max(0, z), m), the caps broadcast over z's last axis."""
    return torch.minimum(torch.relu(z), caps)


@fused_op(CappedReLU)
def _fused_capped(mods, h, ctx):
    """Every member's caps at once: ``[M, B, width]`` against the stacked caps ``[M, 1, width]``."""
    ctx.activation(h)
    caps = torch.stack([m.max_value for m in mods])
    z = to_stacked(h, ctx)
    return Act(capped_relu(z, caps.view(ctx.m, *([1] * (z.dim() - 2)), -1)), STACKED)


@HEADS.register("capped_relu")
def capped_relu_head(
    feature_dim: int, num_classes: int, width: int = 256, init_max: float = 100.0, learnable: bool = True
) -> nn.Module:
    """features ``[B, feature_dim]`` -> Linear(width) -> CappedReLU -> Linear(num_classes) logits."""
    return nn.Sequential(
        nn.Linear(feature_dim, int(width)),
        CappedReLU(int(width), init_max, learnable),
        nn.Linear(int(width), num_classes),
    )


def caps(module: nn.Module) -> list[torch.Tensor]:
    """Every learnable cap tensor inside ``module`` (e.g. an ensemble)."""
    return [m.max_value for m in module.modules() if isinstance(m, CappedReLU) and m.learnable]
