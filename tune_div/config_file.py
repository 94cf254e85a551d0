"""The exported config YAML (DESIGN.md, "Exported config") <-> :class:`TrainConfig`.

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

from .errors import UserError, read_yaml
from .training import TrainConfig

TOP_KEYS = {"defense", "dataset", "arch", "n_members", "hparams", "train", "objective", "metrics", "source"}


def read(path: str | Path) -> dict[str, Any]:
    doc = read_yaml(path, "config file", "pass a YAML written by tune_div.export")
    if not isinstance(doc, dict) or "defense" not in doc:
        raise UserError(f"{path}: expected a mapping with at least 'defense' (see DESIGN.md, Exported config)")
    unknown = sorted(set(doc) - TOP_KEYS)
    if unknown:
        raise UserError(f"{path}: unknown key(s) {unknown}; valid: {sorted(TOP_KEYS)}")
    return doc


def to_train_config(doc: dict[str, Any], **overrides: Any) -> TrainConfig:
    d: dict[str, Any] = {"defense": doc["defense"], "hparams": dict(doc.get("hparams") or {})}
    for key in ("dataset", "arch", "n_members"):
        if doc.get(key) is not None:
            d[key] = doc[key]
    d.update(doc.get("train") or {})
    d.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig.from_dict(d)


def from_train_config(cfg: TrainConfig, **extra: Any) -> dict[str, Any]:
    doc = {"defense": cfg.defense, "dataset": cfg.dataset, "arch": cfg.arch, "n_members": cfg.n_members,
           "hparams": dict(cfg.hparams),
           "train": {"epochs": cfg.epochs, "batch_size": cfg.batch_size, "lr": cfg.lr,
                     "weight_decay": cfg.weight_decay, "seed": cfg.seed}}
    for key in ("subset", "val_subset", "val_size", "activation", "adv_train", "num_threads", "memory_format"):
        if getattr(cfg, key) is not None:
            doc["train"][key] = getattr(cfg, key)
    if cfg.milestones:
        doc["train"]["milestones"] = list(cfg.milestones)
    doc.update(extra)
    return doc
