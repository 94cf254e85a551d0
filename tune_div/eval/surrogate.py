"""The black-box surrogate: a naive ensemble of the target's architecture, trained once and cached.

The SMD paper trains its surrogate "on the same dataset with the same training routine" as the model
attacked: the surrogate copies the target's routine (``TrainConfig`` fields in ``train.config.ROUTINE``:
epochs, schedule, optimiser settings, subset) when the model file records it. A surrogate trained for
fewer epochs transfers worse and overstates black-box robustness.

The surrogate (same architecture and member count, another seed) is cached on disk under a key of its
full training config, and its adversarial examples per (attack, ε, options, subset): a later black-box
evaluation of any model costs inference only. Cache root: ``$TUNE_DIV_CACHE/surrogates``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .. import attacks, models
from ..files import atomic_torch_save, atomic_write_text, cache_root
from ..train import TrainConfig, Trainer
from ..train.config import ROUTINE
from .points import craft


def surrogate_config(
    target_config: dict[str, Any],
    dataset: str,
    epochs: int | None,
    seed: int,
    subset: int | None = None,
    data_dir: str | None = None,
    routine: dict[str, Any] | None = None,
) -> TrainConfig:
    """A naive ensemble with the target's architecture and member count, trained with another seed.

    ``routine``: the target's TrainConfig dict, whose training routine the surrogate copies; ``epochs``
    and ``subset``, when given, override it. Without either the dataset's paper epochs apply.
    """
    routine = routine or {}
    same = {k: routine[k] for k in ROUTINE if k in routine}
    if epochs is not None:
        same["epochs"] = epochs
    if subset is not None:
        same["subset"] = subset
    return TrainConfig(
        **{
            **same,
            "defense": "naive",
            "dataset": dataset,
            "arch": target_config["arch"],
            "n_members": int(target_config["n_members"]),
            "seed": seed,
            "activation": target_config.get("activation"),
            "data_dir": data_dir,
        }
    )


# TrainConfig fields added after whole TrainConfig dicts went into cache keys (a surrogate's config in an
# evaluation's key, a search's black-box surrogate in its baseline's), with the default that is the
# behaviour from before each existed. At that default a field is left out of such a dict's key.
NEW_FIELDS = {"monitor": "nll"}


def without_new_fields(d: dict[str, Any]) -> dict[str, Any]:
    """A TrainConfig dict less the :data:`NEW_FIELDS` that hold their default."""
    return {k: v for k, v in d.items() if not (k in NEW_FIELDS and v == NEW_FIELDS[k])}


def stable_config_doc(d: dict[str, Any]) -> dict[str, Any]:
    """A TrainConfig dict less the fields whose default is the behaviour from before they existed, so a
    key made of it stays that of models and evaluations cached before."""
    d = without_new_fields(d)
    if d.get("precision") == "auto":
        d.pop("precision")
    if d.get("split_seed") is None:  # the data's seed is the training seed
        d.pop("split_seed", None)
    return d


def config_key(cfg: TrainConfig) -> str:
    d = cfg.to_dict()
    d.pop("data_dir")  # where the files are does not change the model
    d.pop("device")
    return hashlib.sha256(json.dumps(stable_config_doc(d), sort_keys=True).encode()).hexdigest()[:16]


def surrogate_cache_dir() -> Path:
    return cache_root() / "surrogates"


@dataclass
class Surrogate:
    """A cached naive surrogate ensemble and its cached adversarial examples."""

    cfg: TrainConfig
    root: Path = field(default_factory=surrogate_cache_dir)
    trained_now: bool = False
    _model: models.Ensemble | None = field(default=None, repr=False)

    @property
    def folder(self) -> Path:
        return self.root / config_key(self.cfg)

    def model(self, log: Callable[[str], None] = lambda s: None) -> models.Ensemble:
        if self._model is None:
            self._model = self._load_or_train(log).eval()
        return self._model

    def _load_or_train(self, log: Callable[[str], None]) -> models.Ensemble:
        path = self.folder / "model.pt"
        if path.is_file():
            return models.load_ensemble(path)
        log(
            f"training the black-box surrogate once ({self.cfg.n_members} x {self.cfg.arch}, naive, seed "
            f"{self.cfg.seed}, {self.cfg.epochs} epochs); cached in {self.folder}"
        )
        trainer = Trainer(self.cfg)
        trainer.fit()
        models.save_ensemble(
            trainer.ensemble.cpu(), path, self.cfg.to_dict()
        )  # atomic: a crash never leaves half a model
        atomic_write_text(self.folder / "config.json", json.dumps(self.cfg.to_dict(), indent=2))
        self.trained_now = True
        return models.load_ensemble(path)

    def adversarial(
        self, attack: str, eps: float, options: dict, subset_key: str, x: torch.Tensor, y: torch.Tensor, progress=None
    ) -> tuple[torch.Tensor, bool]:
        """Examples crafted on the surrogate, from the cache when present; returns (x_adv, from_cache)."""
        keyed: list = [attack, eps, options, subset_key]
        keyed += [v] if (v := attacks.defaults_versions([attack])) else []
        key = hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:16]
        path = self.folder / "adv" / f"{attack}_{key}.pt"
        if path.is_file():
            blob = torch.load(path, weights_only=True)
            if torch.equal(blob["y"], y) and blob["x_adv"].shape == x.shape:
                return blob["x_adv"], True
        x_adv = craft(attack, self.model(), x, y, eps, options, progress=progress)
        atomic_torch_save({"x_adv": x_adv, "y": y}, path)
        return x_adv, False
