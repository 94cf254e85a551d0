"""AutoAttack-style cascade (Croce & Hein 2020): APGD-CE, APGD-T, FAB-T, Square, worst case per point.

Built from torchattacks' components with ``MultiAttack`` (each attack runs on the points the previous
ones did not break). Presets (``preset``):
- ``standard``: AutoAttack's published settings (100 iterations, 9 target classes, 5000 Square queries);
- ``fast``: 20 iterations, 3 target classes, 500 queries: a cheaper screen for searches, not a
  substitute for ``standard`` in a final report.
Any field can be overridden (``apgd_steps``, ``fab_steps``, ``square_queries``, ``n_target_classes``).
"""

from __future__ import annotations

from ..compat import import_torchattacks
from ..domains import COUNT, SEED, Maybe, OneOf
from .autopgd import n_classes_of
from .base import Attack
from .registry import register_attack

PRESETS = {
    "standard": {"apgd_steps": 100, "fab_steps": 100, "square_queries": 5000, "n_target_classes": 9},
    "fast": {"apgd_steps": 20, "fab_steps": 20, "square_queries": 500, "n_target_classes": 3},
}


@register_attack("autoattack")
class AutoAttack(Attack):
    name = "autoattack"
    iterative = True
    step_option = "apgd_steps"
    source = "torchattacks"
    defaults = {
        "preset": "standard",
        "apgd_steps": None,
        "fab_steps": None,
        "square_queries": None,
        "n_target_classes": None,
        "seed": 0,
    }
    domains = {
        "preset": OneOf(tuple(PRESETS)),
        "apgd_steps": Maybe(COUNT),
        "fab_steps": Maybe(COUNT),
        "square_queries": Maybe(COUNT),
        "n_target_classes": Maybe(COUNT),
        "seed": SEED,
    }

    def options(self, eps, **options):
        opts = super().options(eps, **options)
        return {**opts, **{k: v if opts[k] is None else opts[k] for k, v in PRESETS[opts["preset"]].items()}}

    def perturb(self, model, x, y, eps, preset, apgd_steps, fab_steps, square_queries, n_target_classes, seed):
        ta = import_torchattacks()
        n_classes = n_classes_of(model, x)
        targets = min(int(n_target_classes), n_classes - 1)
        apgd_t = ta.APGDT(model, norm="Linf", eps=eps, steps=int(apgd_steps), seed=seed, n_classes=n_classes)
        apgd_t.n_target_classes = targets
        fab_t = ta.FAB(
            model, norm="Linf", eps=eps, steps=int(fab_steps), seed=seed, multi_targeted=True, n_classes=n_classes
        )
        fab_t.n_target_classes = targets
        cascade = ta.MultiAttack(
            [
                ta.APGD(model, norm="Linf", eps=eps, steps=int(apgd_steps), seed=seed, loss="ce"),
                apgd_t,
                fab_t,
                ta.Square(model, norm="Linf", eps=eps, n_queries=int(square_queries), seed=seed),
            ]
        )
        return cascade(x, y)
