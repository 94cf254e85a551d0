"""Evaluation: fixed evaluation points, threat models, the cached surrogate, gradient-masking flags.

``points.py`` (``eval_subset``, ``accuracy``, ``craft``) -> ``threat_models.py`` (white-box, black-box,
transferability, ε curves: ``EvalSpec`` + ``evaluate``) using ``surrogate.py`` (the cached naive
surrogate) and ``sanity.py`` (the flags of docs/flags.md). The attacks themselves, and the audit suite,
live in :mod:`tune_div.attacks`.
"""

from .points import ATTACK_BATCH, DEFAULT_N, accuracy, audit, craft, eval_subset, predict
from .sanity import FLAGS_DOC, proxy_inflation_flags, sanity_checks, sanity_flags
from .surrogate import Surrogate, config_key, surrogate_cache_dir, surrogate_config
from .threat_models import EvalSpec, MemberModel, evaluate, transfer_matrix

__all__ = [
    "ATTACK_BATCH",
    "DEFAULT_N",
    "EvalSpec",
    "FLAGS_DOC",
    "MemberModel",
    "Surrogate",
    "accuracy",
    "audit",
    "config_key",
    "craft",
    "eval_subset",
    "evaluate",
    "predict",
    "proxy_inflation_flags",
    "sanity_checks",
    "sanity_flags",
    "surrogate_cache_dir",
    "surrogate_config",
    "transfer_matrix",
]
