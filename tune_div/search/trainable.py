"""The Ray Tune function trainable shared by every defense.

``val_clean_acc`` is the clean accuracy on the whole validation split (``base.val_subset`` if set);
``val_robust_acc`` the objective's attack on its own fixed subset (``objective.n`` points, whose clean
accuracy is ``proxy_clean_acc``).

``config`` (what the search builds; the searcher fills ``hparams`` and ``train``):

```python
{"defense": "smd", "hparams": {"lam": 0.7}, "train": {"lr": 1e-3},           # sampled
 "base": {TrainConfig fields: dataset, arch, n_members, epochs, subset, ...},  # fixed for the search
 "objective": {"attack": "pgd", "eps": 0.1, "steps": 10, "n": 500, "seed": 0},
 "sanity_n": 100, "test_n": 1000, "inject_nan_if": None,
 "blackbox": None | {"config": surrogate TrainConfig dict, "root": surrogate cache folder}}
```

Every epoch it reports (``ray.tune.report``) the validation metrics: ``val_clean_acc``, the proxy
``val_robust_acc`` (PGD on a fixed, seeded validation subset), the loss parts, member accuracies,
``epoch_time_s``, the sanity ``flags`` (comma-joined names, "" if none) and ``flagged`` (0/1), with a
checkpoint; it resumes from ``ray.tune.get_checkpoint()``. With ``blackbox`` set it also reports
``val_blackbox_acc``: the same attack transferred from the search's surrogate (trained by the driver
before any trial starts; its adversarial examples are crafted once and cached). After the last epoch it measures the test
split (``test_clean_acc``, ``test_robust_acc``) for reporting only: the objectives are validation numbers.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from .. import attacks, data
from ..eval import Surrogate, accuracy, craft, eval_subset, sanity_checks, sanity_flags
from ..train import TrainConfig, Trainer
from . import space as search_space
from .settings import OBJECTIVE_DEFAULTS

CHECKPOINT_FILE = "state.pt"


def train_config(config: dict[str, Any]) -> TrainConfig:
    base = dict(config.get("base") or {})
    base.update(search_space.apply(config))
    return TrainConfig.from_dict({**base, "defense": config["defense"], "hparams": dict(config.get("hparams") or {})})


class ProxyObjective:
    """Robust accuracy of the search objective on a fixed, seeded subset of a split."""

    def __init__(self, cfg: TrainConfig, spec: dict[str, Any], split: str = "val", n: int | None = None):
        spec = {**OBJECTIVE_DEFAULTS, "eps": data.info(cfg.dataset).objective_eps, **spec}
        self.attack, self.eps = spec["attack"], float(spec["eps"])
        self.options = attacks.ATTACKS.get(self.attack).with_steps(spec.get("steps"))
        n = spec["n"] if n is None else n
        self.x, self.y = eval_subset(cfg.dataset, split, n, seed=int(spec["seed"]), root=cfg.data_dir)

    def __call__(self, model) -> tuple[float, float]:
        torch.manual_seed(0)  # the PGD random start: same proxy draw for every trial and epoch
        x_adv = craft(self.attack, model, self.x, self.y, self.eps, self.options)
        return accuracy(model, self.x, self.y), accuracy(model, x_adv, self.y)


class TransferObjective:
    """Accuracy on examples transferred from the search's cached surrogate (crafted once, then cached)."""

    def __init__(self, spec: dict[str, Any], proxy: "ProxyObjective", subset_key: str):
        self.surrogate = Surrogate(TrainConfig.from_dict(spec["config"]), root=Path(spec["root"]))
        self.proxy, self.key = proxy, subset_key

    def __call__(self, model) -> float:
        p = self.proxy
        x_adv, _ = self.surrogate.adversarial(p.attack, p.eps, p.options, self.key, p.x, p.y)
        return accuracy(model, x_adv, p.y)


def objective_metrics(trainer: Trainer, objective: dict) -> dict[str, float]:
    """The search's objective on the same fixed subsets as the trial (validation, then test)."""
    model = trainer.ensemble.eval()
    out = {}
    _, out["val_robust_acc"] = ProxyObjective(trainer.cfg, objective)(model)
    test = ProxyObjective(trainer.cfg, objective, split="test", n=objective.get("test_n"))
    out["test_clean_acc"], out["test_robust_acc"] = test(model)
    return out


def run_trial(config: dict[str, Any], report, checkpoint_dir: str | None = None) -> dict[str, Any]:
    """The trial loop with an injectable ``report(metrics, state_path)``; the Ray trainable wraps it."""
    cfg = train_config(config)
    trainer = Trainer(cfg)
    if checkpoint_dir and (Path(checkpoint_dir) / CHECKPOINT_FILE).is_file():
        trainer.load_checkpoint(Path(checkpoint_dir) / CHECKPOINT_FILE)
    objective = ProxyObjective(cfg, config.get("objective") or {})
    transfer = None
    if config.get("blackbox"):
        spec = {**OBJECTIVE_DEFAULTS, **(config.get("objective") or {})}
        transfer = TransferObjective(config["blackbox"], objective,
                                     f"{cfg.dataset}/val/n={spec['n']}/seed={spec['seed']}/val_size={cfg.val_size}")
    sanity_n = int(config.get("sanity_n", 100))
    inject = config.get("inject_nan_if")  # fault injection for tests: [param, threshold]
    if inject and float(cfg.hparams.get(inject[0], float("-inf"))) > float(inject[1]):
        real_loss = trainer.defense.loss

        def poisoned(ens, x, y):
            total, parts = real_loss(ens, x, y)
            return total * float("nan"), parts

        trainer.defense.loss = poisoned
    last: dict[str, Any] = {}
    while trainer.epoch < cfg.epochs:
        metrics = trainer.train_epoch()  # DivergenceError fails this trial with its reason
        model = trainer.ensemble.eval()
        t0 = time.perf_counter()
        metrics["proxy_clean_acc"], metrics["val_robust_acc"] = objective(model)
        white = {objective.attack: {str(objective.eps): metrics["val_robust_acc"]}}
        black = None
        if transfer is not None:
            metrics["val_blackbox_acc"] = transfer(model)
            black = {objective.attack: {str(objective.eps): metrics["val_blackbox_acc"]}}
        flags = []
        if sanity_n > 0:
            checks = sanity_checks(model, objective.x[:sanity_n], objective.y[:sanity_n], objective.eps)
            flags = sanity_flags(checks, white, black)
        metrics["flags"] = ",".join(sorted({f["name"] for f in flags}))
        metrics["flagged"] = int(bool(flags))
        metrics["eval_time_s"] = time.perf_counter() - t0
        if trainer.epoch == cfg.epochs:
            test = ProxyObjective(cfg, config.get("objective") or {}, split="test", n=config.get("test_n", 1000))
            metrics["test_clean_acc"], metrics["test_robust_acc"] = test(model)
        metrics["done"] = trainer.epoch == cfg.epochs
        report(metrics, trainer)
        last = metrics
    return last


def trainable(config: dict[str, Any]) -> None:
    """Ray Tune entry point (function API)."""
    from ray import tune

    def report(metrics, trainer):
        with tempfile.TemporaryDirectory() as d:
            trainer.save_checkpoint(Path(d) / CHECKPOINT_FILE)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))

    ckpt = tune.get_checkpoint()
    if ckpt is None:
        run_trial(config, report)
    else:
        with ckpt.as_directory() as d:
            run_trial(config, report, d)
