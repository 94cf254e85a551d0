"""The Ray Tune function trainable shared by every defense.

``config`` is a :class:`~tune_div.search.trial_config.TrialConfig` (its dict on the Ray side).

Every epoch it reports (``ray.tune.report``) the training metrics and ``val_clean_acc`` (the whole
validation split, or ``base.val_subset``). At the rung epochs (``rungs``: where the scheduler compares
trials) and after the last epoch it also measures the **proxy** ``val_proxy_acc``
(PGD-10 on the CW margin of the mean member logits on the objective's fixed, seeded validation subset of
``objective.n`` points, whose clean accuracy is ``proxy_clean_acc``); after the last epoch also the
sanity ``flags`` (comma-joined names, "" if none) with ``flagged`` (0/1).
Every report carries a checkpoint (a few MB for 3 x LeNet-5, small beside an epoch) and the
node that ran it (``node_id``), so a trial retried after a lost worker or a killed driver loses at most
the epoch in progress; the checkpoint holds the epoch's metrics too, so a trial restored from its last
one re-reports them instead of training again. An exception raised by the trial's own code (a
divergence, a bug) is first reported as ``trial_error`` (:data:`ERROR_KEY`) so that the driver does not
retry it: it would fail the same way. ``val_robust_acc`` is the robust
objective: the proxy at rungs, and after the last epoch the **audit** (``val_audit_acc``, the strong
adaptive suite of docs/audit.md on the same points), so the searcher learns from audited numbers; a proxy
more than 0.05 above the audit raises ``proxy_inflated``. The test split is the final report of the
front's members only, measured after the search from their last checkpoints (:func:`front_test_report`).
With ``blackbox`` set it reports ``val_blackbox_acc``: the proxy's attack transferred from the search's
surrogate (trained by the driver before any trial; its examples are cached). It resumes from
``ray.tune.get_checkpoint()``.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from .. import attacks, data
from ..eval import (
    Surrogate,
    accuracy,
    audit,
    craft,
    eval_subset,
    predict,
    proxy_inflation_flags,
    sanity_checks,
    sanity_flags,
)
from ..eval.intervals import annotate, points_text
from ..train import TrainConfig, Trainer
from .settings import FINAL, OBJECTIVE_DEFAULTS, check_objective
from .trial_config import Blackbox, TrialConfig

CHECKPOINT_FILE = "state.pt"
METRICS_FILE = "metrics.json"  # the checkpointed epoch's report, beside the state
ERROR_KEY = "trial_error"  # a report saying the trial's code raised: never retried
# measured on the objective's validation subset; each is reported with its n and 95% interval
SUBSET_METRICS = ("proxy_clean_acc", "val_proxy_acc", "val_robust_acc", "val_audit_acc", "val_blackbox_acc")


def train_config(config: TrialConfig) -> TrainConfig:
    return config.train_config()


class SubsetAttack:
    """The objective's attacks on a fixed, seeded subset of a split: calling it runs the **proxy** (the
    cheap PGD-class attack of every rung), :meth:`audit` the **audit** (the strong adaptive suite).

    The names, one meaning each: the *objective* is how robustness is measured (``Objective``: attack,
    ε, points, audit preset); the *proxy* is that attack's accuracy (``val_proxy_acc``); the *audit* is
    the suite's (``val_audit_acc``); the *robust* metric ``val_robust_acc`` is the number the searcher
    optimises, the proxy at rungs and the audit after the last epoch (the proxy when ``--audit off``).
    Which metrics a search optimises is its objective set, ``Settings.objectives``."""

    def __init__(self, cfg: TrainConfig, spec: dict[str, Any], split: str = "val", n: int | None = None):
        spec = check_objective({**OBJECTIVE_DEFAULTS, "eps": data.info(cfg.dataset).objective_eps, **spec})
        self.attack, self.eps = spec["attack"], float(spec["eps"])
        self.options = attacks.ATTACKS.get(self.attack).with_steps(spec.get("steps"))
        n = spec["n"] if n is None else n
        self.x, self.y = eval_subset(cfg.dataset, split, n, seed=int(spec["seed"]), root=cfg.data_dir)

    def __call__(self, model) -> tuple[float, float]:
        """(clean accuracy, proxy robust accuracy) on the subset."""
        clean, robust = self.measure(model)
        return clean, float(robust.float().mean())

    def measure(self, model) -> tuple[float, torch.Tensor]:
        """Clean accuracy and the proxy's per-point robustness ``[n]`` bool."""
        torch.manual_seed(0)  # the PGD random start: same proxy draw for every trial and epoch
        x_adv = craft(self.attack, model, self.x, self.y, self.eps, self.options)
        return accuracy(model, self.x, self.y), predict(model, x_adv) == self.y

    def audit(self, model, preset: str) -> float:
        """The audit's robust accuracy (docs/audit.md) on the same subset, at the same eps."""
        return float(self.audit_points(model, preset).float().mean())

    def audit_points(self, model, preset: str) -> torch.Tensor:
        """The audit's per-point robustness ``[n]`` bool on the same subset, at the same eps."""
        torch.manual_seed(0)
        return audit(model, self.x, self.y, self.eps, preset).robust


class TransferObjective:
    """Accuracy on examples transferred from the search's cached surrogate (crafted once, then cached)."""

    def __init__(self, spec: Blackbox, proxy: SubsetAttack, subset_key: str):
        self.surrogate = Surrogate(TrainConfig.from_dict(spec.config), root=Path(spec.root))
        self.proxy, self.key = proxy, subset_key

    def __call__(self, model) -> float:
        p = self.proxy
        x_adv, _ = self.surrogate.adversarial(p.attack, p.eps, p.options, self.key, p.x, p.y)
        return accuracy(model, x_adv, p.y)


def final_metrics(model, objective: dict[str, Any], val: SubsetAttack, proxy_points: torch.Tensor) -> dict[str, Any]:
    """After the last epoch: the audit on the validation subset (``val_audit_acc``, which becomes
    ``val_robust_acc``, the robust objective). Without an audit preset the robust number is the proxy's.
    ``val_robust_points`` is the robust objective per point, for the paired test against the baseline."""
    preset = objective.get("audit")
    points = proxy_points
    out: dict[str, Any] = {}
    if preset:
        t0 = time.perf_counter()
        points = val.audit_points(model, preset)
        out["val_audit_acc"] = float(points.float().mean())
        out["audit_time_s"] = time.perf_counter() - t0
    out["val_robust_acc"] = float(points.float().mean())
    out["val_robust_points"] = points_text(points.tolist())
    return out


def test_metrics(model, cfg: TrainConfig, objective: dict[str, Any]) -> dict[str, Any]:
    """The test split, for the final report only (never to choose among trials): clean and
    proxy accuracy and, with an audit preset, the audited ``test_robust_acc`` (else the proxy's)."""
    test = SubsetAttack(cfg, objective, split="test", n=objective.get("test_n"))
    out: dict[str, Any] = {}
    out["test_clean_acc"], points = test.measure(model)
    out["test_proxy_acc"] = out["test_robust_acc"] = float(points.float().mean())
    if objective.get("audit"):
        points = test.audit_points(model, objective["audit"])
        out["test_audit_acc"] = out["test_robust_acc"] = float(points.float().mean())
    out = annotate(out, dict.fromkeys(out, len(test.y)))
    out["test_robust_points"] = points_text(points.tolist())
    return out


def front_test_report(config: TrialConfig, checkpoint: Any) -> dict[str, Any]:
    """The test split of a finished trial, from its last checkpoint (a Ray ``Checkpoint``): the final
    report of a front member, run by the driver after the search. Same subset, seed and thread count as
    the trial, so a retrained exported config measures the same numbers."""
    cfg = config.train_config()
    trainer = Trainer(cfg)
    with checkpoint.as_directory() as d:
        trainer.load_checkpoint(Path(d) / CHECKPOINT_FILE)
    return test_metrics(trainer.ensemble.eval(), cfg, config.objective_block())


def objective_metrics(trainer: Trainer, objective: dict) -> dict[str, float]:
    """The search's objective on the same fixed subsets as the trial (validation, then test), for a
    retrained exported config: the numbers compare with the trial's."""
    model = trainer.ensemble.eval()
    val = SubsetAttack(trainer.cfg, objective)
    _, points = val.measure(model)
    out = annotate(
        {"val_proxy_acc": float(points.float().mean()), **final_metrics(model, objective, val, points)},
        dict.fromkeys(SUBSET_METRICS, len(val.y)),
    )
    out.update(test_metrics(model, trainer.cfg, objective))
    return {k: v for k, v in out.items() if not k.endswith("_points")}


def run_trial(config: TrialConfig, report: Any, checkpoint_dir: str | None = None) -> dict[str, Any]:
    """The trial loop with an injectable ``report(metrics, trainer)``: every report carries a checkpoint of
    ``trainer``. The proxy runs at the rung epochs and after the last one, the sanity pass and the audit
    after the last one; the other epochs report training metrics and validation clean accuracy. Restored
    from a checkpoint of its last epoch (a retry or a resume after the trial had finished), it re-reports
    that epoch's metrics and trains nothing."""
    cfg = config.train_config()
    trainer = Trainer(cfg)
    last: dict[str, Any] = {}
    if checkpoint_dir and (Path(checkpoint_dir) / CHECKPOINT_FILE).is_file():
        trainer.load_checkpoint(Path(checkpoint_dir) / CHECKPOINT_FILE)
        if (Path(checkpoint_dir) / METRICS_FILE).is_file():
            last = json.loads((Path(checkpoint_dir) / METRICS_FILE).read_text())
    if trainer.done and last:
        report(last, trainer)
        return last
    spec = config.objective_block()
    objective = SubsetAttack(cfg, spec)
    transfer = None
    if config.blackbox is not None:
        o = config.objective
        transfer = TransferObjective(
            config.blackbox, objective, f"{cfg.dataset}/val/n={o.n}/seed={o.seed}/val_size={cfg.val_size}"
        )
    sanity_n = config.sanity_n
    rungs = set(config.rungs)
    inject = config.inject_nan_if  # fault injection for tests: (hyperparameter, threshold)
    if inject and float(cfg.hparams.get(inject[0], float("-inf"))) > inject[1]:
        real_loss = trainer.defense.loss

        def poisoned(ens, x, y):
            total, parts = real_loss(ens, x, y)
            return total * float("nan"), parts

        trainer.defense.loss = poisoned  # type: ignore[method-assign]  # fault injection for tests
    flags = {"flags": last.get("flags", ""), "flagged": last.get("flagged", 0)}  # carried between evaluations
    while not trainer.done:
        metrics = trainer.train_epoch()  # DivergenceError fails this trial with its reason
        metrics = annotate(metrics, {"val_clean_acc": len(trainer.val_loader.labels)})  # the whole val split
        final = trainer.done  # the last epoch, or early stopping (train.early_stop_patience)
        if final or trainer.epoch in rungs:
            metrics.update(epoch_metrics(trainer.ensemble.eval(), spec, objective, transfer, sanity_n, final))
            flags = {k: metrics[k] for k in flags}
            if final and config.test_report:  # a single model (the naive baseline): its report now
                metrics.update(test_metrics(trainer.ensemble, cfg, spec))
        metrics.update({**flags, FINAL: final})
        report(metrics, trainer)
        last = metrics
    return last


def epoch_metrics(
    model,
    spec: dict[str, Any],
    objective: SubsetAttack,
    transfer: TransferObjective | None,
    sanity_n: int,
    final: bool,
) -> dict[str, Any]:
    """The evaluation after a rung epoch or the ``final`` one: the proxy (and transfer); after the final
    epoch also the sanity flags and the audit (:func:`final_metrics`), with ``proxy_inflated`` if the
    proxy overstates the audit."""
    t0 = time.perf_counter()
    out: dict[str, Any] = {}
    out["proxy_clean_acc"], proxy_points = objective.measure(model)
    out["val_proxy_acc"] = out["val_robust_acc"] = float(proxy_points.float().mean())  # the audit replaces it
    white = {objective.attack: {str(objective.eps): out["val_proxy_acc"]}}
    black = None
    if transfer is not None:
        out["val_blackbox_acc"] = transfer(model)
        black = {objective.attack: {str(objective.eps): out["val_blackbox_acc"]}}
    flags = []
    if sanity_n > 0 and final:  # the flags decide the front: one pass on the final model is enough
        checks = sanity_checks(model, objective.x[:sanity_n], objective.y[:sanity_n], objective.eps)
        flags = sanity_flags(checks, white, black)
    out["eval_time_s"] = time.perf_counter() - t0
    if final:
        out.update(final_metrics(model, spec, objective, proxy_points))
        if "val_audit_acc" in out:
            flags += proxy_inflation_flags(white, {str(objective.eps): out["val_audit_acc"]})
    out["flags"] = ",".join(sorted({f["name"] for f in flags}))
    out["flagged"] = int(bool(flags))
    return annotate(out, dict.fromkeys(SUBSET_METRICS, len(objective.y)))


def trainable(config: dict[str, Any]) -> None:
    """Ray Tune entry point (function API)."""
    import ray
    from ray import tune

    node = ray.get_runtime_context().get_node_id()  # which node ran it (result.json; clusters)

    def report(metrics, trainer):
        metrics = {**metrics, "node_id": node}
        with tempfile.TemporaryDirectory() as d:
            trainer.save_checkpoint(Path(d) / CHECKPOINT_FILE)
            (Path(d) / METRICS_FILE).write_text(json.dumps(metrics, default=float))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))

    ckpt = tune.get_checkpoint()
    try:
        trial = TrialConfig.from_dict(config)  # the one place a trial's dict becomes its typed config
        if ckpt is None:
            run_trial(trial, report)
        else:
            with ckpt.as_directory() as d:
                run_trial(trial, report, d)
    except Exception as exc:
        # Said before raising, so the driver's retry policy (callbacks.RetryPolicy) sees it: an error of the
        # trial's own code is final; only a lost worker (no report, the process is gone) is retried.
        tune.report({ERROR_KEY: f"{type(exc).__name__}: {exc}".splitlines()[0]})
        raise
