"""The naive baseline of every front: an undefended ensemble of the same architecture, trained with the
search's budget and seed, measured exactly as the trials are (same subsets, same proxy, same audit).

The first question asked of a defense is whether it beats the undefended ensemble under a strong
attack; every front trial gets ``audit_lift_over_naive`` (its robust accuracy minus the baseline's).
The baseline is a trial config with ``defense: naive`` run through the same ``run_trial``, as a Ray task
beside the trials; its final metrics are cached under ``$TUNE_DIV_CACHE/baselines/<key>.json`` (the key
covers everything but where the data lives), so searches with the same budget measure it once.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from .. import attacks
from ..eval.intervals import SUFFIXES, paired_lift, points_mask
from ..eval.surrogate import without_new_fields
from ..files import atomic_write_text, cache_root
from ..tracking.tracker import FINAL_METRICS
from .states import TrialState
from .trial_config import TrialConfig

BASELINE_ID = "naive-baseline"


POINTS = ("val_robust_points", "test_robust_points")  # per-point robustness, for the paired tests


def baseline_config(param_space: TrialConfig) -> TrialConfig:
    """The trial config of the baseline: the search's fixed part, ``naive``, nothing sampled."""
    # A single model: its test split is audited in the same run (the trials' is, for the front, afterwards).
    return param_space.replace(defense="naive", hparams={}, train={}, inject_nan_if=None, test_report=True)


def cache_path(config: TrialConfig) -> Path:
    key_doc = config.to_dict()
    key_doc["base"].pop("data_dir", None)  # where the data lives does not change the measurement
    if "blackbox" in key_doc:
        key_doc["blackbox"]["config"] = without_new_fields(key_doc["blackbox"]["config"])
    if versions := attacks.defaults_versions(config.objective.attack_names()):
        key_doc["attack_defaults"] = versions  # absent while every default is the first: old keys hold
    key = hashlib.sha256(json.dumps(key_doc, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return cache_root() / "baselines" / f"{key}.json"


def measure(config: TrialConfig) -> dict[str, Any]:
    """The baseline's final metrics and flags (from the cache when measured before with this config)."""
    from .trainable import run_trial

    path = cache_path(config)
    if path.is_file():
        try:
            cached = json.loads(path.read_text())
            if all(k in cached for k in POINTS):  # an entry from before the paired test is measured again
                return cached
        except ValueError:
            pass  # a damaged cache entry is measured again
    last = run_trial(config, lambda metrics, trainer: None)
    keys = (*FINAL_METRICS, *(f"{m}{s}" for m in FINAL_METRICS for s in SUFFIXES), *POINTS, "flags")
    out = {k: last[k] for k in keys if k in last}
    atomic_write_text(path, json.dumps(out, indent=2))
    return out


def lift(rows: list[dict[str, Any]], baseline: dict[str, Any] | None, objective: str) -> None:
    """Set ``audit_lift_over_naive`` on every finished row: its audited robust accuracy minus the
    baseline's (None when the search is not audited or the baseline is missing). Where the row and the
    baseline carry their per-point robustness on the same points, the paired test of that lift too:
    ``audit_lift_ci_low``, ``audit_lift_ci_high`` (95%) and ``audit_lift_p`` (exact McNemar), and the same
    for the test split as ``test_audit_lift_*`` (front members, which have a test split)."""
    base = baseline or {}
    ref = base.get(objective) if base.get("val_audit_acc") is not None else None
    for r in rows:
        ok = ref is not None and r.get("status") == TrialState.TERMINATED and r.get(objective) is not None
        r["audit_lift_over_naive"] = r[objective] - ref if ok else None
        for split, prefix in (("val", "audit_lift"), ("test", "test_audit_lift")):
            key = f"{split}_robust_points"
            paired = None
            if ok and r.get(key) and base.get(key) and len(r[key]) == len(base[key]):
                paired = paired_lift(points_mask(r[key]), points_mask(base[key]))
            if split == "test":
                r["test_audit_lift_over_naive"] = paired.lift if paired else None
            r[f"{prefix}_ci_low"] = paired.low if paired else None
            r[f"{prefix}_ci_high"] = paired.high if paired else None
            r[f"{prefix}_p"] = paired.p_value if paired else None


def significant_lift(row: dict[str, Any]) -> bool:
    """Whether a row beats the baseline significantly at 0.05 (a positive lift, exact McNemar)."""
    p, lift_ = row.get("audit_lift_p"), row.get("audit_lift_over_naive")
    return p is not None and lift_ is not None and p < 0.05 and lift_ > 0
