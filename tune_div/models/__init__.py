"""Architectures (a registry), the :class:`Ensemble` and its one-file save/load.

``build_ensemble(arch, n_members, num_classes, in_channels, **options)``; ``names()`` lists the
architectures (``names('resnet*')`` filters with a wildcard). ``fused.py`` runs the members of an
ensemble as one batched computation (``Ensemble.execution``).
"""

from . import (  # noqa: F401  (registers the architectures)
    capped,  # noqa: F401  (registers the capped_relu head)
    convnets,
    dense,
    lenet,
    resnet,
)
from .base import Member, Normalize
from .capped import CappedReLU
from .ensemble import EXECUTIONS, HEADS, Ensemble, build_ensemble, load_ensemble, log_mean_softmax, save_ensemble
from .registry import MODELS, register_model


def names(pattern: str | None = None) -> list[str]:
    return MODELS.names(pattern)


__all__ = [
    "CappedReLU",
    "EXECUTIONS",
    "Ensemble",
    "HEADS",
    "MODELS",
    "Member",
    "Normalize",
    "build_ensemble",
    "load_ensemble",
    "log_mean_softmax",
    "names",
    "register_model",
    "save_ensemble",
]
