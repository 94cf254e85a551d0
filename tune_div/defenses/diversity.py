"""Shared pieces of the gradient-diversity regularisers (GAL, SMD, and later CLDL's ℓ_gd)."""

from __future__ import annotations

import torch

NORM_EPS = 1e-12  # guards the cosine's denominator: zero gradients give cos = 0, never NaN


def per_member_input_grads(member_outputs: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
    """Gradients of each member's scalar output ``[M]`` w.r.t. its own copy of the input, ``[M, B, D]``.

    ``xs`` ``[M, B, ...]`` is the per-member input (``Ensemble.member_copies``); ``member_outputs[i]`` must
    depend on ``xs[i]`` only, so one backward pass gives all M gradients. ``create_graph=True`` keeps them
    differentiable (double backprop) so the regulariser trains.
    """
    (grads,) = torch.autograd.grad(member_outputs.sum(), xs, create_graph=True)
    return grads.flatten(2)


def safe_norm(v: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """L2 norm with its square clamped at NORM_EPS², so its gradient stays finite at zero."""
    return torch.sqrt(torch.clamp((v * v).sum(dim), min=NORM_EPS**2))


def pairwise_cosines(g: torch.Tensor) -> torch.Tensor:
    """``[M, B, D]`` -> ``[P, B]`` cosine similarity of every member pair i < j, per sample (P = M(M-1)/2)."""
    m = g.shape[0]
    unit = g / safe_norm(g).unsqueeze(-1)
    i, j = torch.triu_indices(m, m, offset=1)
    return (unit[i] * unit[j]).sum(-1)


def log_sum_exp_cos(g: torch.Tensor) -> torch.Tensor:
    """``log Σ_{i<j} exp(cos(g_i, g_j))`` per sample, ``[B]``; the GAL / SMD measure before batch mean.

    Identical members give log(M(M-1)/2) + 1; a one-member ensemble has no pairs and gives 0.
    """
    if g.shape[0] < 2:
        return g.new_zeros(g.shape[1])
    return torch.logsumexp(pairwise_cosines(g), dim=0)
