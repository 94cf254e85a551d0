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

from ..files import atomic_write_text, cache_root
from ..tracking.tracker import FINAL_METRICS
from .states import TrialState
from .trial_config import TrialConfig

BASELINE_ID = "naive-baseline"


def baseline_config(param_space: TrialConfig) -> TrialConfig:
    """The trial config of the baseline: the search's fixed part, ``naive``, nothing sampled."""
    # A single model: its test split is audited in the same run (the trials' is, for the front, afterwards).
    return param_space.replace(defense="naive", hparams={}, train={}, inject_nan_if=None, test_report=True)


def cache_path(config: TrialConfig) -> Path:
    key_doc = config.to_dict()
    key_doc["base"].pop("data_dir", None)  # where the data lives does not change the measurement
    key = hashlib.sha256(json.dumps(key_doc, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return cache_root() / "baselines" / f"{key}.json"


def measure(config: TrialConfig) -> dict[str, Any]:
    """The baseline's final metrics and flags (from the cache when measured before with this config)."""
    from .trainable import run_trial

    path = cache_path(config)
    if path.is_file():
        try:
            return json.loads(path.read_text())
        except ValueError:
            pass  # a damaged cache entry is measured again
    last = run_trial(config, lambda metrics, trainer: None)
    out = {k: last[k] for k in (*FINAL_METRICS, "flags") if k in last}
    atomic_write_text(path, json.dumps(out, indent=2))
    return out


def lift(rows: list[dict[str, Any]], baseline: dict[str, Any] | None, objective: str) -> None:
    """Set ``audit_lift_over_naive`` on every finished row: its audited robust accuracy minus the
    baseline's (None when the search is not audited or the baseline is missing)."""
    ref = (baseline or {}).get(objective) if (baseline or {}).get("val_audit_acc") is not None else None
    for r in rows:
        ok = ref is not None and r.get("status") == TrialState.TERMINATED and r.get(objective) is not None
        r["audit_lift_over_naive"] = r[objective] - ref if ok else None
