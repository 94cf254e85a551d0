"""SMD+ (Bogun et al., SMD paper): the SMD regulariser added to the DVERGE objective.

L = Σ_i Σ_{j≠i} CE(f_i(x'_j), y) + λ·log Σ_{i<j} exp(cos(s_i, s_j)),
the saliency maps s_i taken on the clean batch (see ``smd.py`` and ``dverge.py``).
"""

from __future__ import annotations

from .base import parts_dict
from .diversity import log_sum_exp_cos
from .dverge import DVERGE
from .registry import register_defense
from .smd import SMD, saliency_maps


@register_defense("smd_plus")
class SMDPlus(DVERGE):
    name = "smd_plus"
    defaults = {**DVERGE.defaults, "lam": 1.0}
    domains = {**DVERGE.domains, **SMD.domains}

    def loss(self, ensemble, x, y):
        ce = self.dverge_ce(ensemble, x, y)
        _, sal = saliency_maps(ensemble, x, y)
        smd = log_sum_exp_cos(sal).mean()
        total = ce + self.hparams["lam"] * smd
        return total, parts_dict(ce, total, smd=smd)
