"""Training checkpoints: written atomically, read back only into the config that wrote them.

A checkpoint holds the epoch, the :class:`~tune_div.train.config.TrainConfig` as a dict, the ensemble,
defense, optimiser and scheduler states and the metric history. Resuming it into a config whose
identity differs (another defense, λ, architecture, seed, ...) is refused with one line: continuing
would silently train something else. ``epochs`` may differ (training longer is a resume).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ..errors import UserError
from ..files import atomic_torch_save
from .config import TrainConfig

FORMAT = "tune_div.checkpoint/1"


def save(state: dict[str, Any], path: str | os.PathLike) -> None:
    atomic_torch_save({"format": FORMAT, **state}, path)


def load(path: str | os.PathLike, cfg: TrainConfig, device: torch.device | str = "cpu") -> dict[str, Any]:
    """The state saved at ``path``, checked to belong to ``cfg``."""
    try:
        state = torch.load(Path(path), map_location=device, weights_only=True)
    except Exception as exc:  # truncated, not a torch file, or not ours
        raise UserError(
            f"checkpoint {path} is damaged or not a tune_div checkpoint ({type(exc).__name__}); delete it to start over"
        ) from None
    if not isinstance(state, dict) or "config" not in state or "epoch" not in state:
        raise UserError(f"checkpoint {path} is not a tune_div checkpoint; delete it or pass another path")
    try:
        saved = TrainConfig.from_dict(state["config"]).identity()
    except (UserError, TypeError):
        raise UserError(f"checkpoint {path} holds a config this version cannot read; delete it to start over") from None
    here = cfg.identity()
    differ = sorted(k for k in set(saved) | set(here) if saved.get(k) != here.get(k))
    if differ:
        what = ", ".join(f"{k}: {saved.get(k)!r} there, {here.get(k)!r} here" for k in differ)
        raise UserError(
            f"checkpoint {path} was written for another config ({what}); use another checkpoint path or the same config"
        )
    return state
