"""D-ReLU and S-ReLU (Sooksatra et al., "Dynamic-max-value ReLU functions for adversarially robust
machine learning models").

Both insert a dense layer of capped ReLUs min(max(0, z), m) before the output layer of each member.
- ``drelu``: one learnable cap m_k per unit, initialised to ``init_max`` (paper: 100);
  L = Σ_i CE_i + λ·Σ_k m_k² over every cap of the ensemble (λ is the paper's "balancer", eq. 1).
- ``srelu``: a fixed cap ``max_value`` for every unit; L = Σ_i CE_i.

The paper tunes λ per model and gives no single value, nor the width of the dense layer: the defaults
``lam`` = 0.01 and ``width`` = 256 are ours, meant to be searched. With one member this is exactly the
paper's single-model setting.

Training routine (paper, Sec. 5): Adam 1e-3, ReduceLROnPlateau (factor 0.5, patience 5) and early
stopping (patience 10) on the validation loss, at most 2000 epochs: ``DReLU.paper_training``. The paper
trains with Keras, whose validation loss includes λ·Σ m², so the routine watches the loss with the
penalty (``monitor="loss"``). Adam moves each cap by at most about the learning rate per step, so from
100 the caps need some 10⁵ steps (a few hundred MNIST epochs) to come down: with a fixed budget of tens
of epochs they barely move, and the model is close to an undefended one.
"""

from __future__ import annotations

import torch

from ..domains import COUNT, NON_NEGATIVE, POSITIVE
from ..models.capped import caps
from .base import Defense, member_ce, parts_dict
from .registry import register_defense


def capped_head(width, cap: float, learnable: bool) -> dict:
    """The ``head`` model option that puts the capped dense layer before each member's output."""
    return {"head": {"type": "capped_relu", "width": int(width), "init_max": float(cap), "learnable": learnable}}


@register_defense("drelu")
class DReLU(Defense):
    name = "drelu"
    defaults = {"lam": 0.01, "init_max": 100.0, "width": 256}
    domains = {"lam": NON_NEGATIVE, "init_max": NON_NEGATIVE, "width": COUNT}
    paper_training = {
        "schedule": "plateau",
        "plateau_factor": 0.5,
        "plateau_patience": 5,
        "early_stop_patience": 10,
        "monitor": "loss",  # Keras' val_loss holds λ·Σ m²: the caps keep shrinking until they settle
        "epochs": 2000,
    }

    @property
    def model_options(self):
        return capped_head(self.hparams["width"], self.hparams["init_max"], learnable=True)

    def cap_sq_sum(self, ensemble) -> torch.Tensor:
        """Σ m_k² over every cap of the ensemble."""
        cap_tensors = caps(ensemble)
        if not cap_tensors:
            raise ValueError("drelu needs an ensemble built with its model_options (a capped_relu head)")
        return torch.stack([(m * m).sum() for m in cap_tensors]).sum()

    def penalty(self, ensemble):
        return self.hparams["lam"] * self.cap_sq_sum(ensemble)

    def loss(self, ensemble, x, y):
        ce = member_ce(ensemble.member_logits(x), y).sum()
        cap_sq_sum = self.cap_sq_sum(ensemble)
        total = ce + self.hparams["lam"] * cap_sq_sum
        return total, parts_dict(ce, total, cap_sq_sum=cap_sq_sum)


@register_defense("srelu")
class SReLU(Defense):
    name = "srelu"
    defaults = {"max_value": 1.0, "width": 256}
    domains = {"max_value": POSITIVE, "width": COUNT}

    @property
    def model_options(self):
        return capped_head(self.hparams["width"], self.hparams["max_value"], learnable=False)

    def loss(self, ensemble, x, y):
        ce = member_ce(ensemble.member_logits(x), y).sum()
        return ce, parts_dict(ce, ce)
