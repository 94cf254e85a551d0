"""Per-device defaults that were measured, in one place: which architectures run fused, the
``--gpus-per-trial`` default and the training precision.

The CPU entry was measured on the development machine (``benchmarks/step_time.py``: fused LeNet-5 is
faster there, the other architectures are not). A GPU's entry is written by
``python benchmarks/device_check.py --apply <result.json>`` into ``device_defaults.json`` beside this
file, from a real run of the check on that GPU; until then a GPU runs looped, in float32, one trial per
GPU. Reading it has no side effects.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

DEFAULTS_FILE = Path(__file__).with_name("device_defaults.json")
BUILT_IN: dict[str, dict[str, Any]] = {
    "cpu": {"fused": ["lenet5"], "precision": "fp32", "source": "benchmarks/step_time.py, 2-core x86-64 CPU"},
    "cuda": {"fused": [], "precision": "fp32", "gpus_per_trial": 1.0, "source": "not measured"},
}


@lru_cache(maxsize=1)
def table() -> dict[str, dict[str, Any]]:
    """The built-in entries, with the measured file's entries over them."""
    out = {k: dict(v) for k, v in BUILT_IN.items()}
    if DEFAULTS_FILE.is_file():
        for device, entry in json.loads(DEFAULTS_FILE.read_text()).items():
            out.setdefault(device, {}).update(entry)
    return out


def fused_faster() -> dict[str, tuple[str, ...]]:
    """Device type -> the architectures measured faster fused than looped there."""
    return {device: tuple(entry.get("fused", ())) for device, entry in table().items()}


def precision(device_type: str) -> str:
    return str(table().get(device_type, {}).get("precision", "fp32"))


def gpus_per_trial() -> float:
    return float(table()["cuda"].get("gpus_per_trial", 1.0))


def write_defaults(defaults: dict[str, Any], source: str, path: Path = DEFAULTS_FILE) -> Path:
    """Record a device check's :func:`decide` result as that device's entry (other entries are kept)."""
    current = json.loads(path.read_text()) if path.is_file() else {}
    entry = {"fused": list(defaults["fused"]), "precision": defaults["precision"], "source": source}
    if defaults["device"] == "cuda":
        entry["gpus_per_trial"] = float(defaults["gpus_per_trial"])
    current[defaults["device"]] = entry
    path.write_text(json.dumps(current, indent=2) + "\n")
    table.cache_clear()
    return path
