"""The exported config YAML (README, "From search to retrained model") <-> :class:`TrainConfig`.

```yaml
defense: smd
dataset: mnist
arch: lenet5
n_members: 3
hparams: {lam: 0.7}
train: {epochs: 50, batch_size: 128, lr: 0.001, weight_decay: 0.0001, seed: 0}
objective: {attack: pgd, eps: 0.1, steps: 10}      # read by evaluation, ignored by training
metrics: {...}                                        # what the source run measured
source: {experiment: ..., parent_run_id: ..., run_id: ...}
```
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import UserError
from ..files import read_yaml
from .config import TrainConfig

TOP_KEYS = {"defense", "dataset", "arch", "n_members", "hparams", "train", "objective", "metrics", "source"}
SOURCE_KEYS = ("experiment", "parent_run_id", "run_id", "trial_id", "tracking_uri")
SHAPES = {
    "defense": str,
    "dataset": str,
    "arch": str,
    "n_members": int,
    "hparams": dict,
    "train": dict,
    "objective": dict,
    "metrics": dict,
    "source": dict,
}
KIND_NAMES = {str: "a name", int: "an integer", dict: "a mapping"}


def read(path: str | Path) -> dict[str, Any]:
    doc = read_yaml(path, "config file", "pass a YAML written by tune-div export")
    if not isinstance(doc, dict) or "defense" not in doc:
        raise UserError(f"{path}: expected a mapping with at least 'defense' (see tune-div export)")
    unknown = sorted(set(doc) - TOP_KEYS)
    if unknown:
        raise UserError(f"{path}: unknown key(s) {unknown}; valid: {sorted(TOP_KEYS)}")
    for key, kind in SHAPES.items():
        if doc.get(key) is not None and not isinstance(doc[key], kind):
            raise UserError(f"{path}: '{key}' must be {KIND_NAMES[kind]}, got {doc[key]!r}")
    try:
        to_train_config(doc)  # every training option against its domain, now, before anything runs
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None
    return doc


def to_train_config(doc: dict[str, Any], **overrides: Any) -> TrainConfig:
    d: dict[str, Any] = {"defense": doc["defense"], "hparams": dict(doc.get("hparams") or {})}
    for key in ("dataset", "arch", "n_members"):
        if doc.get(key) is not None:
            d[key] = doc[key]
    d.update(doc.get("train") or {})
    seed = overrides.get("seed")
    if seed is not None and d.get("split_seed") is None and seed != d.get("seed", 0):
        # another training seed keeps the config's data: its training images, and the validation points
        # its objective is measured on (none of which the retrained model may train on)
        d["split_seed"] = d.get("seed", 0)
    d.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig.from_dict(d)


def document(
    cfg: TrainConfig,
    objective: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    source: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The exported-config document of ``cfg``: what ``tune-div train --config`` retrains.

    ``objective`` is how the robust metric was measured (read by the retrain, ignored by training),
    ``metrics`` what the source run measured, ``source`` its provenance (:func:`provenance`).
    """
    doc: dict[str, Any] = {
        "defense": cfg.defense,
        "dataset": cfg.dataset,
        "arch": cfg.arch,
        "n_members": cfg.n_members,
        "hparams": dict(cfg.hparams),
        "train": {
            "epochs": cfg.epochs,
            "batch_size": cfg.batch_size,
            "lr": cfg.lr,
            "weight_decay": cfg.weight_decay,
            "seed": cfg.seed,
        },
    }
    optional = ("split_seed", "subset", "val_subset", "val_size", "activation", "adv_train", "num_threads")
    for key in (*optional, "memory_format"):
        if getattr(cfg, key) is not None:
            doc["train"][key] = getattr(cfg, key)
    for key in ("execution", "precision"):
        if getattr(cfg, key) != "auto":
            doc["train"][key] = getattr(cfg, key)
    if cfg.milestones:
        doc["train"]["milestones"] = list(cfg.milestones)
    if cfg.schedule != "multistep" or cfg.early_stop_patience is not None:
        for key in ("schedule", "plateau_factor", "plateau_patience", "early_stop_patience"):
            doc["train"][key] = getattr(cfg, key)
    if cfg.monitor != "nll":
        doc["train"]["monitor"] = cfg.monitor
    for key, value in (("objective", objective), ("metrics", metrics), ("source", source)):
        if value is not None:
            doc[key] = value
    return doc


def provenance(
    experiment: str, parent_run_id: str | None, run_id: str | None, trial_id: str | None, tracking_uri: str
) -> dict[str, Any]:
    """The ``source`` block: where a config came from (MLflow experiment, search and trial runs, store)."""
    return dict(zip(SOURCE_KEYS, (experiment, parent_run_id, run_id, trial_id, tracking_uri)))
