"""The naive ensemble: members trained independently, Σ_i CE_i (the baseline of every paper)."""

from __future__ import annotations

from .base import Defense, member_ce, parts_dict
from .registry import register_defense


@register_defense("naive")
class Naive(Defense):
    name = "naive"
    defaults = {}

    def loss(self, ensemble, x, y):
        ce = member_ce(ensemble.member_logits(x), y).sum()
        return ce, parts_dict(ce, ce)
