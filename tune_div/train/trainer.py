"""One training loop for every defense, with seed control and checkpoints.

The same config and seed give the same metrics on CPU, including across a checkpoint and resume:
every epoch reseeds the RNGs from (seed, epoch).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .. import attacks, data, defenses, models
from ..errors import DivergenceError
from . import checkpoint
from .config import TrainConfig, resolve_device, resolve_memory_format
from .precision import precision_context, resolve_precision

EVAL_BATCH = 1000


def epoch_seed(seed: int, epoch: int) -> int:
    return seed * 100_003 + epoch


def truncated_eps(eps: float, seed: int) -> float:
    """|N(0, (ε/2)²)| redrawn until it is at most ε: the half-normal truncated to [0, ε] (Kurakin et al.
    2016), from its own generator so the training's random stream is untouched."""
    g = torch.Generator().manual_seed(seed)
    while True:
        value = abs(float(torch.randn((), generator=g))) * eps / 2
        if value <= eps:
            return value


@torch.no_grad()
def ensemble_eval(ensemble: models.Ensemble, loader: data.TensorLoader) -> tuple[float, list[float], float]:
    """Clean accuracy of the ensemble and of each member, and the ensemble's mean NLL, on a loader (eval mode)."""
    was_training = ensemble.training
    ensemble.eval()
    correct, member_correct, n, nll = 0, None, 0, 0.0
    for x, y in loader:
        logits = ensemble.member_logits(x)
        log_probs = models.log_mean_softmax(logits)
        correct += int((log_probs.argmax(1) == y).sum())
        nll += float(torch.nn.functional.nll_loss(log_probs, y, reduction="sum"))
        mc = (logits.argmax(2) == y).sum(1)
        member_correct = mc if member_correct is None else member_correct + mc
        n += len(y)
    ensemble.train(was_training)
    per_member = [] if member_correct is None else [int(c) / max(n, 1) for c in member_correct.tolist()]
    return correct / max(n, 1), per_member, nll / max(n, 1)


def ensemble_and_member_accuracy(ensemble: models.Ensemble, loader: data.TensorLoader) -> tuple[float, list[float]]:
    """Clean accuracy of the ensemble and of each member on a loader (eval mode)."""
    acc, member_acc, _ = ensemble_eval(ensemble, loader)
    return acc, member_acc


def adam(params, lr: float, weight_decay: float) -> torch.optim.Adam:
    """The papers' Adam, as one fused kernel for all members' parameters (faster than the default
    per-parameter loop, README "Speed"); the default where fused Adam is not available."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, ValueError):  # a device or dtype without the fused kernel
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


def epochs_without_improvement(history: list[dict[str, float]], key: str = "val_loss") -> int:
    """Epochs since the best (lowest) ``key`` in ``history``; 0 when the last epoch is the best."""
    values = [h[key] for h in history if key in h]
    if not values:
        return 0
    best = min(range(len(values)), key=lambda i: (values[i], i))
    return len(values) - 1 - best


class Trainer:
    """Builds data, ensemble, defense and optimiser from a :class:`TrainConfig` and trains them."""

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        if cfg.num_threads:
            torch.set_num_threads(int(cfg.num_threads))
        meta = data.info(cfg.dataset)
        # The paper's values for this dataset, overridden by what the config sets.
        self.defense = defenses.build(cfg.defense, **{**defenses.defaults(cfg.defense, cfg.dataset), **cfg.hparams})
        opts = dict(self.defense.model_options)
        if cfg.activation:
            opts["activation"] = cfg.activation
        torch.manual_seed(cfg.seed)
        self.ensemble = models.build_ensemble(
            cfg.arch,
            cfg.n_members,
            meta.num_classes,
            meta.in_channels,
            image_size=meta.image_size,
            mean=list(meta.mean),
            std=list(meta.std),
            **opts,
        )
        self.ensemble.train_config = cfg.to_dict()  # recorded in saved files (a surrogate copies the routine)
        self.defense.prepare(self.ensemble)
        self.memory_format = resolve_memory_format(cfg.memory_format, self.device)
        self.precision = resolve_precision(cfg.precision, self.device)  # auto resolved once
        # Module.to takes memory_format (torch documents it); its type stubs do not list it
        self.ensemble.to(self.device, memory_format=self.memory_format)  # type: ignore[call-overload]
        self.ensemble.set_execution(cfg.execution)
        self.defense.to(self.device)
        source = (cfg.adv_train or {}).get("source")
        # ensemble adversarial training: examples from a static pre-trained model, never updated here
        self.adv_source = models.load_ensemble(source, self.device).eval() if source else None

        train_x, train_y = data.load(
            cfg.dataset, "train", cfg.data_dir, subset=cfg.subset, seed=cfg.data_seed, val_size=cfg.val_size
        )
        val_x, val_y = data.load(
            cfg.dataset, "val", cfg.data_dir, subset=cfg.val_subset, seed=cfg.data_seed, val_size=cfg.val_size
        )
        augment = meta.augment if cfg.augment is None else cfg.augment
        self.train_loader = data.TensorLoader(
            train_x,
            train_y,
            cfg.batch_size,
            shuffle=True,
            augment=augment,
            device=self.device,
            memory_format=self.memory_format,
        )
        self.val_loader = data.TensorLoader(val_x, val_y, EVAL_BATCH, device=self.device)

        params = list(self.ensemble.parameters()) + list(self.defense.parameters())
        self.optimizer = adam(params, cfg.lr, cfg.weight_decay)
        self.scheduler: torch.optim.lr_scheduler.ReduceLROnPlateau | torch.optim.lr_scheduler.MultiStepLR
        if cfg.schedule == "plateau":
            self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                self.optimizer, mode="min", factor=cfg.plateau_factor, patience=cfg.plateau_patience
            )
        else:
            self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer, cfg.milestones, cfg.lr_gamma)
        self.epoch = 0  # epochs completed
        self.history: list[dict[str, float]] = []

    # -- one epoch ---------------------------------------------------------------------------------
    def train_epoch(self) -> dict[str, float]:
        epoch = self.epoch + 1
        torch.manual_seed(epoch_seed(self.cfg.seed, epoch))
        self.train_loader.set_epoch(epoch_seed(self.cfg.seed, epoch))
        self.ensemble.train()
        self.defense.train()
        self.defense.start_epoch(epoch, self.ensemble)
        sums: dict[str, float] = {}
        total_sum, steps = 0.0, 0
        start = time.perf_counter()
        adversarial = self.adversarial_now
        retraining = adversarial and bool(self.retrain_epochs)
        for step, (x, y) in enumerate(self.train_loader):
            if adversarial:
                x = self.mix_adversarial(x, y, epoch_seed(self.cfg.seed, epoch) * 10_007 + step)
            with precision_context(self.precision, self.device):  # loss and backward, one switch per step
                total, parts = self.defense.loss(self.ensemble, x, y)
                value = float(total.detach())
                if not math.isfinite(value):
                    detail = ", ".join(f"{k}={v:.4g}" for k, v in parts.items())
                    raise DivergenceError(
                        f"loss of defense '{self.cfg.defense}' became {value} at epoch {epoch}, step {step} "
                        f"({detail}); lower the regulariser's coefficient or the learning rate"
                    )
                self.optimizer.zero_grad(set_to_none=True)
                total.backward()
            self.optimizer.step()
            total_sum += value
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v
            steps += 1
        train_time = time.perf_counter() - start
        val_acc, member_acc, val_loss = ensemble_eval(self.ensemble, self.val_loader)
        with torch.no_grad():
            penalty = self.defense.penalty(self.ensemble) if self.cfg.monitor == "loss" else None
        watched = {} if penalty is None else {"val_nll": val_loss, "val_penalty": float(penalty.detach())}
        val_loss += watched.get("val_penalty", 0.0)
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            if not retraining:  # retraining keeps the learning rate natural training left (config.py)
                self.scheduler.step(val_loss)
        elif not retraining:
            self.scheduler.step()
        self.epoch = epoch
        metrics = {
            "epoch": epoch,
            "train_loss": total_sum / steps,
            **{f"part_{k}": v / steps for k, v in sums.items()},
            "val_clean_acc": val_acc,
            "val_loss": val_loss,
            **watched,
            **{f"val_member_acc_{i}": a for i, a in enumerate(member_acc)},
            "lr": self.optimizer.param_groups[0]["lr"],
            "epoch_time_s": train_time,
            **({"retraining": 1.0} if retraining else {}),
        }
        self.history.append(metrics)
        return metrics

    def mix_adversarial(self, x: torch.Tensor, y: torch.Tensor, seed: int = 0) -> torch.Tensor:
        """Replace the first ``ratio`` share of the batch by adversarial examples of the current ensemble,
        or of the static ``source`` model (ensemble adversarial training); ``seed`` draws a ``random_eps``."""
        spec = self.cfg.adv_train
        assert spec is not None, "mix_adversarial needs TrainConfig.adv_train"
        n = max(1, round(float(spec["ratio"]) * x.shape[0]))
        options = attacks.ATTACKS.get(spec["attack"]).with_steps(spec["steps"])
        eps = float(spec["eps"])
        if spec.get("random_eps"):
            eps = truncated_eps(eps, seed)
        model = self.adv_source if self.adv_source is not None else self.ensemble
        x_adv = attacks.run(spec["attack"], model, x[:n], y[:n], eps, **options)
        return torch.cat([x_adv, x[n:]]).contiguous(memory_format=self.memory_format)

    @property
    def retrain_epochs(self) -> int:
        """Epochs of adversarial retraining after natural training (``adv_train.retrain_epochs``), or 0."""
        return int((self.cfg.adv_train or {}).get("retrain_epochs") or 0)

    @property
    def natural_history(self) -> list[dict[str, float]]:
        return [h for h in self.history if not h.get("retraining")]

    @property
    def stopped_early(self) -> bool:
        """True once the validation loss has not improved for ``early_stop_patience`` epochs (of natural
        training, when a retraining phase follows it)."""
        patience = self.cfg.early_stop_patience
        return patience is not None and epochs_without_improvement(self.natural_history) >= patience

    @property
    def retraining(self) -> bool:
        """In the adversarial retraining phase: natural training is over and ``retrain_epochs`` are asked."""
        return bool(self.retrain_epochs) and (len(self.natural_history) >= self.cfg.epochs or self.stopped_early)

    @property
    def adversarial_now(self) -> bool:
        """Whether the next epoch trains on adversarial examples."""
        return bool(self.cfg.adv_train) and (not self.retrain_epochs or self.retraining)

    def phase(self) -> tuple[str, int, int]:
        """Where the last epoch trained stands: ``("training", epoch, epochs)``, or in the retraining phase
        ``("retraining", k, retrain_epochs)`` with ``k`` counted from 1 within it."""
        retrained = len(self.history) - len(self.natural_history)
        if retrained:
            return "retraining", retrained, self.retrain_epochs
        return "training", self.epoch, self.cfg.epochs

    @property
    def done(self) -> bool:
        """Every epoch trained, or stopped early; then the retraining epochs, when asked."""
        natural_done = self.epoch >= self.cfg.epochs or self.stopped_early
        if not self.retrain_epochs:
            return natural_done
        return self.retraining and len(self.history) - len(self.natural_history) >= self.retrain_epochs

    def fit(
        self,
        callback: Callable[[dict[str, float]], None] | None = None,
        checkpoint_path: str | os.PathLike | None = None,
    ) -> list[dict[str, float]]:
        """Train up to ``cfg.epochs`` (or until early stopping), resuming from ``checkpoint_path`` if it
        exists and saving it each epoch."""
        if checkpoint_path is not None and Path(checkpoint_path).is_file():
            self.load_checkpoint(checkpoint_path)
        while not self.done:
            metrics = self.train_epoch()
            if checkpoint_path is not None:
                self.save_checkpoint(checkpoint_path)
            if callback is not None:
                callback(metrics)
        return self.history

    # -- evaluation --------------------------------------------------------------------------------
    def test_accuracy(self, subset: int | None = None) -> tuple[float, list[float]]:
        x, y = data.load(self.cfg.dataset, "test", self.cfg.data_dir, subset=subset, seed=self.cfg.data_seed)
        return ensemble_and_member_accuracy(self.ensemble, data.TensorLoader(x, y, EVAL_BATCH, device=self.device))

    # -- checkpoints -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "config": self.cfg.to_dict(),
            "ensemble": self.ensemble.state_dict(),
            "defense": self.defense.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "history": self.history,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ensemble.load_state_dict(state["ensemble"])
        self.defense.load_state_dict(state["defense"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.epoch = int(state["epoch"])
        self.history = list(state["history"])

    def save_checkpoint(self, path: str | os.PathLike) -> None:
        checkpoint.save(self.state_dict(), path)

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        self.load_state_dict(checkpoint.load(path, self.cfg, self.device))
