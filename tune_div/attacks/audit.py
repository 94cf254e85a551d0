"""The audit: a strong adaptive evaluation of an ensemble, worst case per point (docs/audit.md).

A robust accuracy tune_div reports as audited is the accuracy under this suite. Its components are
registered attacks, run in this order, each on the points that no earlier one broke (AutoAttack's
cascade, Croce & Hein 2020), every one judged on what the ensemble predicts:

1. ``pgd_cw_logits`` -- PGD on the CW margin of the mean member logits, with restarts;
2. ``apgd_ce``       -- APGD-CE on the ensemble output (log-mean-softmax);
3. ``apgd_dlr``      -- APGD-DLR on the ensemble output (scale-invariant loss);
4. ``apgd_ce_logits``-- APGD-CE on the mean member logits;
5. ``square``        -- Square, score-based and gradient-free: it cannot be fooled by masked gradients.

A point counts as robust only if every component failed on it. Presets are fixed (``fast`` for
searches, ``standard`` for final reports); any component setting can be overridden
(``apgd_steps``, ``cw_steps``, ``cw_restarts``, ``square_queries``), and the result then says so.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ..domains import COUNT, SEED, Maybe, OneOf
from .base import Attack, correct
from .registry import ATTACKS, register_attack

DOC = "docs/audit.md"
PRESETS: dict[str, dict[str, int]] = {
    "fast": {"cw_steps": 10, "cw_restarts": 1, "apgd_steps": 20, "square_queries": 200},
    "standard": {"cw_steps": 100, "cw_restarts": 5, "apgd_steps": 100, "square_queries": 5000},
}
COMPONENTS = ("pgd_cw_logits", "apgd_ce", "apgd_dlr", "apgd_ce_logits", "square")


def component_options(opts: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The options each component runs with, from resolved audit options."""
    seed = int(opts["seed"])
    apgd = {"steps": int(opts["apgd_steps"]), "seed": seed}
    return {
        "pgd_cw_logits": {"steps": int(opts["cw_steps"]), "restarts": int(opts["cw_restarts"])},
        "apgd_ce": apgd,
        "apgd_dlr": apgd,
        "apgd_ce_logits": apgd,
        "square": {"n_queries": int(opts["square_queries"]), "seed": seed},
    }


@dataclass
class AuditReport:
    """What the audit found on ``n`` points: ``x_adv`` ``[N, C, H, W]`` (for a broken point the example
    that broke it, else the input), ``robust`` ``[N]`` bool (correct under every component),
    ``broken_by`` (per point the component that broke it, ``"clean"`` if misclassified already, None if
    robust) and ``per_attack`` (robust accuracy after each component, cumulative, in run order)."""

    x_adv: torch.Tensor
    robust: torch.Tensor
    broken_by: list[str | None]
    options: dict[str, Any]
    per_attack: dict[str, float] = field(default_factory=dict)

    @property
    def robust_acc(self) -> float:
        return float(self.robust.float().mean()) if len(self.robust) else 0.0

    @classmethod
    def merge(cls, reports: list[AuditReport]) -> AuditReport:
        """One report from the reports of consecutive batches of the same points."""
        n = sum(len(r.robust) for r in reports)
        per_attack = {
            k: sum(r.per_attack[k] * len(r.robust) for r in reports) / max(n, 1) for k in reports[0].per_attack
        }
        return cls(
            torch.cat([r.x_adv for r in reports]),
            torch.cat([r.robust for r in reports]),
            [b for r in reports for b in r.broken_by],
            reports[0].options,
            per_attack,
        )


@register_attack("audit")
class Audit(Attack):
    name = "audit"
    source = "tune_div (advertorch + torchattacks components)"
    iterative = True
    defaults = {
        "preset": "fast",
        "cw_steps": None,
        "cw_restarts": None,
        "apgd_steps": None,
        "square_queries": None,
        "seed": 0,
    }
    domains = {
        "preset": OneOf(tuple(PRESETS)),
        "cw_steps": Maybe(COUNT),
        "cw_restarts": Maybe(COUNT),
        "apgd_steps": Maybe(COUNT),
        "square_queries": Maybe(COUNT),
        "seed": SEED,
    }

    def options(self, eps, **options):
        opts = super().options(eps, **options)
        preset = PRESETS[opts["preset"]]
        changed = sorted(k for k in preset if opts[k] is not None and opts[k] != preset[k])
        if changed:
            warnings.warn(
                f"audit preset '{opts['preset']}' run with changed settings {changed}: the result is not "
                f"comparable with the preset's (see {DOC})",
                stacklevel=3,
            )
        return {**opts, **{k: v if opts[k] is None else opts[k] for k, v in preset.items()}, "changed": changed}

    def perturb(self, model, x, y, eps, **opts):
        return self.run(model, x, y, eps, opts).x_adv

    def report(
        self,
        model,
        x: torch.Tensor,
        y: torch.Tensor,
        eps: float,
        progress: Callable[[str, int], None] | None = None,
        **options: Any,
    ) -> AuditReport:
        """The audit of ``model`` on ``(x, y)`` at ``eps`` with its per-point and per-component detail;
        ``progress(component, points_done)`` is called as each component finishes."""
        opts = self.options(eps, **options)
        x = x.detach().float().contiguous()
        was_training = model.training
        model.eval()
        try:
            return self.run(model, x, y, eps, opts, progress)
        finally:
            model.train(was_training)

    def run(self, model, x, y, eps, opts, progress=None) -> AuditReport:
        x_adv = x.clone()
        robust = correct(model, x, y)
        broken_by: list[str | None] = [None if r else "clean" for r in robust.tolist()]
        per_attack: dict[str, float] = {}
        for name, component in component_options(opts).items():
            idx = robust.nonzero().squeeze(1)
            if idx.numel() and eps > 0:
                x_c = ATTACKS.get(name)()(model, x[idx], y[idx], eps, **component)
                fooled = ~correct(model, x_c, y[idx])
                x_adv[idx[fooled]] = x_c[fooled]
                robust[idx[fooled]] = False
                for i in idx[fooled].tolist():
                    broken_by[i] = name
            per_attack[name] = float(robust.float().mean())
            if progress:
                progress(name, len(x))
        return AuditReport(x_adv, robust, broken_by, opts, per_attack)
