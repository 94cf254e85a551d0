"""Search a defense's hyperparameters: ``python -m tune_div.search smd [--budget smoke] [--gpus 8]``.

Ray Tune runs the trials (one trainable for every defense, ``tune_div.trainable``); Optuna samples
them against two objectives, validation clean accuracy and validation robust accuracy (PGD-10 proxy),
both maximised; the paper's values are evaluated first. The Optuna study lives in
``<experiment>/optuna.db`` so the front can be rebuilt without Ray. At the end the Pareto table is
printed and written to ``<experiment>/pareto.json|csv`` with every trial in ``trials.csv``.
Ctrl-C stops cleanly; ``--resume <experiment dir>`` continues without re-running finished trials.
"""

from __future__ import annotations

import csv
import json
import math
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import config_file, data, defenses, models, pareto, search_space, tracking
from .cli import ArgumentParser
from .errors import UserError, cli_errors
from .training import DATASET_DEFAULTS

PROG = "python -m tune_div.search"
SAMPLERS = ("tpe", "nsga2", "gp", "random")
OBJECTIVES = {"robust": ["val_clean_acc", "val_robust_acc"],
              "blackbox": ["val_clean_acc", "val_blackbox_acc"],
              "both": ["val_clean_acc", "val_robust_acc", "val_blackbox_acc"]}
OBJECTIVE_EPS = {"mnist": 0.1, "fashion_mnist": 0.1, "cifar10": 0.01, "cifar100": 0.01}

# Budgets: smoke finishes on a 2-core CPU in a few minutes; paper uses the papers' epochs, full data.
BUDGETS: dict[str, dict[str, Any]] = {
    "smoke": {"samples": 4, "epochs": 2, "subset": 5000, "val_subset": 1000, "objective_n": 200, "sanity_n": 100,
              "test_n": 500},
    "small": {"samples": 16, "epochs": 5, "subset": 10000, "val_subset": 2000, "objective_n": 500, "sanity_n": 200,
              "test_n": 1000},
    "paper": {"samples": 32, "epochs": None, "subset": None, "val_subset": None, "objective_n": 1000, "sanity_n": 200,
              "test_n": None},
}


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    p.add_argument("defense", nargs="?", help=f"one of: {', '.join(defenses.names())}")
    p.add_argument("--budget", choices=list(BUDGETS), default="small", help="preset sizes (default small)")
    p.add_argument("--dataset", default="mnist", help=f"one of: {', '.join(data.names())}")
    p.add_argument("--arch", help=f"one of: {', '.join(models.names())} (default: the dataset's)")
    p.add_argument("--members", type=int, default=3)
    p.add_argument("--epochs", type=int, help="epochs per trial (default: the budget's)")
    p.add_argument("--samples", type=int, help="number of trials (default: the budget's)")
    p.add_argument("--subset", type=int, help="train each trial on N images (default: the budget's)")
    p.add_argument("--space", help="search-space YAML (default search_spaces/<defense>.yaml)")
    p.add_argument("--sampler", choices=SAMPLERS, default="tpe", help="tpe (constant liar, default), nsga2, gp, random")
    p.add_argument("--objective", choices=list(OBJECTIVES), default="robust",
                   help="robust: white-box proxy (default); blackbox: transfer instead; both: three objectives")
    p.add_argument("--clean-floor", type=float, help="constraint: trials below this clean accuracy are infeasible")
    p.add_argument("--gpus", type=float, default=0, help="GPUs for the whole search (0: CPU)")
    p.add_argument("--gpus-per-trial", type=float, help="fractional allowed (default 1 if --gpus, else 0)")
    p.add_argument("--cpus-per-trial", type=float, default=1)
    p.add_argument("--concurrency", type=int, help="trials at once (default: what the resources allow)")
    p.add_argument("--address", help="join a running Ray cluster (host:port or auto)")
    p.add_argument("--storage-path", default="tune_div_results", help="results folder (shared storage on a cluster)")
    p.add_argument("--experiment", help="experiment name (default <defense>-<dataset>-<time>)")
    p.add_argument("--resume", metavar="PATH", help="continue the experiment in this folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", help="dataset folder (else $TUNE_DIV_DATA)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default sqlite:///<storage-path>/mlflow.db)")
    p.add_argument("--inject-nan-if", metavar="PARAM>VALUE",
                   help="fault injection for testing: trials with hparams PARAM above VALUE get a NaN loss in epoch 1")
    p.add_argument("--quiet", action="store_true")
    return p


# --- settings -------------------------------------------------------------------------------------

@dataclass
class Settings:
    defense: str
    dataset: str
    arch: str
    members: int
    epochs: int
    samples: int
    budget: str
    sampler: str
    objective: str
    clean_floor: float | None
    gpus: float
    gpus_per_trial: float
    cpus_per_trial: float
    concurrency: int | None
    seed: int
    space_file: str | None
    data_dir: str | None
    inject_nan_if: str | None
    experiment: str
    storage_path: str
    subset: int | None = None
    tracking_uri: str | None = None
    parent_run_id: str | None = None

    @property
    def metrics(self) -> list[str]:
        return OBJECTIVES[self.objective]

    @property
    def path(self) -> Path:
        return Path(self.storage_path) / self.experiment

    @property
    def uri(self) -> str:
        return self.tracking_uri or tracking.default_uri(self.storage_path)

    @property
    def mlflow_experiment(self) -> str:
        return tracking.experiment_name(self.defense, self.dataset)


def settings_from_args(args) -> Settings:
    if not args.defense:
        raise UserError(f"name the defense to search, one of: {', '.join(defenses.names())}")
    defenses.DEFENSES.get(args.defense)
    data.info(args.dataset)  # unknown dataset: ValueError naming the choices
    budget = BUDGETS[args.budget]
    arch = args.arch or DATASET_DEFAULTS[args.dataset]["arch"]
    models.MODELS.get(arch)
    epochs = args.epochs or budget["epochs"] or DATASET_DEFAULTS[args.dataset]["epochs"]
    samples = args.samples if args.samples is not None else budget["samples"]
    for name, value in (("--samples", samples), ("--epochs", epochs), ("--members", args.members)):
        if value < 1:
            raise UserError(f"{name} must be at least 1, got {value}")
    if args.gpus < 0 or args.cpus_per_trial <= 0:
        raise UserError("--gpus must be >= 0 and --cpus-per-trial > 0")
    gpt = args.gpus_per_trial if args.gpus_per_trial is not None else (1.0 if args.gpus > 0 else 0.0)
    if gpt < 0 or (gpt > 0 and args.gpus == 0):
        raise UserError(f"--gpus-per-trial {gpt} needs --gpus > 0 (the GPUs the whole search may use)")
    if gpt > args.gpus > 0:
        raise UserError(f"--gpus-per-trial {gpt} is more than --gpus {args.gpus}")
    if args.clean_floor is not None and not 0 <= args.clean_floor <= 1:
        raise UserError(f"--clean-floor is an accuracy in [0, 1], got {args.clean_floor}")
    if args.subset is not None and args.subset < 1:
        raise UserError(f"--subset must be a positive number of images, got {args.subset}")
    if args.concurrency is not None and args.concurrency < 1:
        raise UserError(f"--concurrency must be at least 1, got {args.concurrency}")
    # Trials run in their own working directories: hand them an absolute data folder.
    data_dir = args.data_dir or os.environ.get("TUNE_DIV_DATA")
    if data_dir:
        if not Path(data_dir).expanduser().is_dir():
            raise UserError(f"data folder {data_dir} (--data-dir or TUNE_DIV_DATA) does not exist")
        data_dir = str(Path(data_dir).expanduser().resolve())
    space = search_space.load(args.defense, args.space)  # validates the file now
    if args.inject_nan_if:
        parse_injection(args.inject_nan_if, space)
    experiment = args.experiment or f"{args.defense}-{args.dataset}-{time.strftime('%Y%m%d-%H%M%S')}"
    return Settings(args.defense, args.dataset, arch, args.members, epochs, samples, args.budget, args.sampler,
                    args.objective, args.clean_floor, args.gpus, gpt, args.cpus_per_trial, args.concurrency, args.seed,
                    str(Path(args.space).resolve()) if args.space else None, data_dir, args.inject_nan_if, experiment,
                    str(Path(args.storage_path).expanduser().resolve()), args.subset, args.tracking_uri)


def parse_injection(text: str, space=None) -> tuple[str, float]:
    name, sep, value = text.partition(">")
    try:
        threshold = float(value)
    except ValueError:
        threshold = None
    if not sep or threshold is None:
        raise UserError(f"--inject-nan-if expects PARAM>VALUE, got '{text}'")
    if space is not None and f"hparams/{name}" not in space.names():
        raise UserError(f"--inject-nan-if: '{name}' is not a searched hyperparameter ({', '.join(space.names())})")
    return name, threshold


def base_config(s: Settings) -> dict[str, Any]:
    budget = dict(BUDGETS[s.budget])
    if s.subset:
        budget["subset"] = s.subset
    return {
        "defense": s.defense,
        "base": {"dataset": s.dataset, "arch": s.arch, "n_members": s.members, "epochs": s.epochs, "seed": s.seed,
                 "subset": budget["subset"], "val_subset": budget["val_subset"], "data_dir": s.data_dir,
                 "num_threads": max(1, int(s.cpus_per_trial))},
        "objective": {"attack": "pgd", "eps": OBJECTIVE_EPS[s.dataset], "steps": 10, "n": budget["objective_n"],
                      "seed": s.seed},
        "sanity_n": budget["sanity_n"], "test_n": budget["test_n"],
        "inject_nan_if": list(parse_injection(s.inject_nan_if)) if s.inject_nan_if else None,
    }


# --- Ray ------------------------------------------------------------------------------------------

def connect(s: Settings, address: str | None) -> dict[str, float]:
    """Start or join Ray and check the resources asked for exist; returns the cluster's resources."""
    import ray

    if address and address != "auto":  # fail fast: Ray itself retries an unreachable address for minutes
        host, _, port = address.rpartition(":")
        try:
            socket.create_connection((host or address, int(port or 6379)), timeout=5).close()
        except (OSError, ValueError):
            raise UserError(f"cannot reach a Ray cluster at {address}; start one with `ray start --head` "
                            "or check the address") from None
    if not ray.is_initialized():
        try:
            ray.init(address=address, include_dashboard=False, configure_logging=False, log_to_driver=False,
                     **({} if address else {"num_gpus": None}))
        except ConnectionError as exc:
            raise UserError(f"cannot join the Ray cluster at {address}: {str(exc).splitlines()[0]}") from None
    res = ray.cluster_resources()
    have_gpu, have_cpu = float(res.get("GPU", 0)), float(res.get("CPU", 0))
    if s.gpus > have_gpu:
        raise UserError(f"asked for {s.gpus:g} GPUs but the cluster has {have_gpu:g} GPU(s) and {have_cpu:g} CPU(s); "
                        "use --gpus 0 for CPU")
    if s.cpus_per_trial > have_cpu:
        raise UserError(f"--cpus-per-trial {s.cpus_per_trial:g} is more than the cluster's {have_cpu:g} CPUs")
    return {"GPU": have_gpu, "CPU": have_cpu}


def concurrency(s: Settings, res: dict[str, float]) -> int:
    if s.concurrency:
        return s.concurrency
    by_cpu = int(res["CPU"] // s.cpus_per_trial)
    by_gpu = int(s.gpus // s.gpus_per_trial) if s.gpus_per_trial > 0 else by_cpu
    return max(1, min(by_cpu, by_gpu, s.samples))


def make_sampler(name: str, seed: int, constrained: bool):
    import optuna

    cf = constraints_of if constrained else None
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True, constraints_func=cf)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, constraints_func=cf)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, constraints_func=cf)
    return optuna.samplers.RandomSampler(seed=seed)


def constraints_of(frozen_trial) -> list[float]:
    """Optuna's constraint values (<= 0 is feasible): floor − clean accuracy, set when the trial ends."""
    return list(frozen_trial.user_attrs.get("constraint", [0.0]))


def make_searcher(s: Settings, space):
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    class ParetoOptunaSearch(OptunaSearch):
        """OptunaSearch that tells Optuna FAIL for errored trials (Ray's would record their partial values
        as a finished point) and records the clean-floor constraint and the sanity flags on each trial."""

        def __init__(self, *a, clean_floor=None, **k):
            super().__init__(*a, **k)
            self._clean_floor = clean_floor

        def on_trial_complete(self, trial_id, result=None, error=False):
            ot_trial = self._ot_trials.get(trial_id)
            if ot_trial is not None and result and not error:
                clean = result.get("val_clean_acc", 0.0)
                floor = self._clean_floor
                ot_trial.set_user_attr("constraint", [float(floor - clean) if floor is not None else 0.0])
                ot_trial.set_user_attr("flags", result.get("flags", ""))
                ot_trial.set_user_attr("ray_trial_id", trial_id)
            super().on_trial_complete(trial_id, None if error else result, error)

    storage = optuna.storages.RDBStorage(f"sqlite:///{s.path / 'optuna.db'}")
    paper = space.paper_point()
    return ParetoOptunaSearch(space=space.define_by_run, metric=s.metrics, mode=["max"] * len(s.metrics),
                              points_to_evaluate=[paper] if paper else None,
                              sampler=make_sampler(s.sampler, s.seed, s.clean_floor is not None),
                              study_name=s.experiment, storage=storage, seed=s.seed, clean_floor=s.clean_floor)


def progress_callback(s: Settings, quiet: bool):
    from ray import tune

    class TrialProgress(tune.Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            if quiet:
                return
            hp = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                          for k, v in {**trial.config.get("hparams", {}), **trial.config.get("train", {})}.items())
            extra = f"  bb {result['val_blackbox_acc']:.4f}" if "val_blackbox_acc" in result else ""
            flags = f"  FLAGS {result['flags']}" if result.get("flags") else ""
            print(f"[{trial.trial_id}] {hp or 'defaults'}  epoch {result['epoch']}/{s.epochs}  "
                  f"clean {result['val_clean_acc']:.4f}  robust {result['val_robust_acc']:.4f}{extra}  "
                  f"{result['epoch_time_s']:.1f}s{flags}", flush=True)

        def on_trial_complete(self, iteration, trials, trial, **info):
            if not quiet:
                print(f"[{trial.trial_id}] finished", flush=True)

        def on_trial_error(self, iteration, trials, trial, **info):
            print(f"[{trial.trial_id}] FAILED: {trial_error(trial)}", flush=True)

    return TrialProgress()


def trial_config_doc(s: Settings, trial_id: str, config: dict[str, Any], parent_run_id: str) -> dict[str, Any]:
    """The trial in the exported-config format (what ``tune_div.train --config`` retrains)."""
    from .trainable import train_config

    cfg = train_config(config)
    doc = config_file.from_train_config(cfg, objective={**(config.get("objective") or {}),
                                                         "test_n": config.get("test_n")})
    doc["train"].pop("data_dir", None)
    doc["source"] = {"experiment": s.mlflow_experiment, "parent_run_id": parent_run_id, "trial_id": trial_id,
                     "tracking_uri": s.uri}
    return doc


def mlflow_callback(s: Settings, tracker: "tracking.SearchTracker"):
    from ray import tune

    class MLflowLogger(tune.Callback):
        """Mirrors the search into MLflow as it runs (parent + one nested run per trial)."""

        def __init__(self):
            self.tracker = tracker
            self.settings = s
            self.last: dict[str, dict] = {}
            self.status: dict[str, str] = {}

        def setup(self, **info):
            self.tracker.start_parent(self.settings.experiment, {}, {})  # resume: re-attach, never duplicate

        def on_trial_start(self, iteration, trials, trial, **info):
            self.tracker.child(trial.trial_id, trial.config,
                               trial_config_doc(self.settings, trial.trial_id, trial.config, self.tracker.parent_run_id))

        def on_trial_result(self, iteration, trials, trial, result, **info):
            self.last[trial.trial_id] = result
            self.tracker.log_epoch(trial.trial_id, result)

        def on_trial_complete(self, iteration, trials, trial, **info):
            self.status[trial.trial_id] = "TERMINATED"
            self.tracker.finish_child(trial.trial_id, "TERMINATED", self.last.get(trial.trial_id) or trial.last_result)
            self.refresh(trials)

        def on_trial_error(self, iteration, trials, trial, **info):
            self.status[trial.trial_id] = "ERROR"
            self.tracker.finish_child(trial.trial_id, "ERROR", None, trial_error(trial))
            self.refresh(trials)

        def refresh(self, trials):
            rows = []
            for t in trials:
                m = self.last.get(t.trial_id) or t.last_result or {}
                status = self.status.get(t.trial_id) or ("TERMINATED" if m.get("done") else str(t.status))
                rows.append({"trial_id": t.trial_id, "status": status, "flags": m.get("flags", ""),
                             **{k: m.get(k) for k in self.settings.metrics}})
            table = pareto.pareto_table(rows, objectives=(self.settings.metrics[0], self.settings.metrics[1]),
                                        clean_floor=self.settings.clean_floor)
            self.tracker.log_front(rows, table, [])

    return MLflowLogger()


def trial_error(trial_or_result) -> str:
    """The one-line reason of a failed trial (the DivergenceError message when it diverged)."""
    err = getattr(trial_or_result, "error", None)
    text = str(err) if err is not None else ""
    path = getattr(trial_or_result, "error_file", None)
    if path and Path(path).is_file():
        text = Path(path).read_text()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if "Error" in ln and ":" in ln:
            return ln.split("Error: ", 1)[-1] if "DivergenceError" in ln else ln
    return lines[-1] if lines else "unknown error"


def run(s: Settings, address: str | None, resume: bool, quiet: bool) -> dict[str, Any]:
    # One snapshot per epoch is by design here (every report carries a checkpoint): no warning about it.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    from ray import tune

    from .trainable import trainable

    res = connect(s, address)
    space = search_space.load(s.defense, s.space_file)
    s.path.mkdir(parents=True, exist_ok=True)
    param_space = base_config(s)
    if "val_blackbox_acc" in s.metrics and not resume:
        param_space["blackbox"] = prepare_surrogate(s, param_space, quiet)
    conc = concurrency(s, res)
    fn = tune.with_resources(trainable, {"cpu": s.cpus_per_trial, "gpu": s.gpus_per_trial})
    tracker = tracking.SearchTracker(s.uri, s.mlflow_experiment, str(Path(s.storage_path) / "mlartifacts"),
                                     s.parent_run_id)
    s.parent_run_id = tracker.start_parent(s.experiment, {k: v for k, v in s.__dict__.items() if k != "parent_run_id"},
                                           {"defense": s.defense, "dataset": s.dataset, "arch": s.arch,
                                            "sampler": s.sampler, "objectives": ",".join(s.metrics),
                                            "budget": s.budget, "tune_div.experiment_dir": str(s.path)})
    (s.path / "search.json").write_text(json.dumps(s.__dict__, indent=2))
    if not quiet:
        print(f"{'resuming' if resume else 'searching'} {s.defense} on {s.dataset} ({s.members} x {s.arch}, "
              f"{s.epochs} epochs, {s.samples} trials, budget {s.budget}), sampler {s.sampler}, objectives "
              f"{', '.join(s.metrics)}; {conc} at once on {res['CPU']:g} CPU / {res['GPU']:g} GPU; "
              f"results in {s.path}", flush=True)
    run_config = tune.RunConfig(name=s.experiment, storage_path=s.storage_path, verbose=0,
                                callbacks=[progress_callback(s, quiet), mlflow_callback(s, tracker)],
                                failure_config=tune.FailureConfig(max_failures=0),
                                checkpoint_config=tune.CheckpointConfig(num_to_keep=1))
    if resume:
        tuner = tune.Tuner.restore(str(s.path), trainable=fn, resume_unfinished=True, resume_errored=False,
                                   restart_errored=False)
    else:
        tuner = tune.Tuner(fn, param_space=param_space, run_config=run_config,
                           tune_config=tune.TuneConfig(search_alg=make_searcher(s, space), num_samples=s.samples,
                                                       max_concurrent_trials=conc))
    grid = tuner.fit()
    rows = collect(grid)
    table = pareto.pareto_table(rows, objectives=(s.metrics[0], s.metrics[1]), clean_floor=s.clean_floor)
    write_results(s, rows, table)
    interrupted = len(rows) < s.samples or any(r["status"] == "UNFINISHED" for r in rows)
    publish(s, tracker, space, rows, table)
    tracker.end_parent("KILLED" if interrupted else "FINISHED")
    return {"rows": rows, "table": table, "interrupted": interrupted}


def publish(s: Settings, tracker: "tracking.SearchTracker", space, rows, table) -> None:
    """Parent artifacts: Pareto table/plot, the search space, the exported configs."""
    from . import export

    tracker.attach_children()  # the callback may be a restored copy: read the child runs back from MLflow
    tracking.pareto_plot(rows, table, s.path / "pareto.png", f"{s.defense} on {s.dataset}: {s.experiment}")
    exported = s.path / "exported"
    export.export_from_tracking(s.uri, parent_run_id=tracker.parent_run_id, out=exported, clean_floor=s.clean_floor)
    files = [s.path / "pareto.csv", s.path / "pareto.json", s.path / "pareto.png", s.path / "trials.csv",
             Path(space.source), exported]
    tracker.log_front(rows, table, files)


def prepare_surrogate(s: Settings, param_space: dict[str, Any], quiet: bool) -> dict[str, Any]:
    """Train (or find in the cache) the naive surrogate once, before any trial, so trials only load it."""
    from .evaluation import Surrogate, surrogate_config

    base = param_space["base"]
    sur = Surrogate(surrogate_config({"arch": s.arch, "n_members": s.members}, s.dataset, s.epochs, s.seed + 1000,
                                     base["subset"], s.data_dir))
    sur.model(log=(lambda m: None) if quiet else (lambda m: print(m, flush=True)))
    return {"config": sur.cfg.to_dict(), "root": str(sur.root)}


def collect(grid) -> list[dict[str, Any]]:
    rows = []
    for r in grid:
        m = r.metrics or {}
        status = "ERROR" if r.error else ("TERMINATED" if m.get("done") else "UNFINISHED")
        rows.append({"trial_id": m.get("trial_id"),
                     "status": status, "error": trial_error(r) if r.error else "",
                     "hparams": dict(r.config.get("hparams") or {}), "train": dict(r.config.get("train") or {}),
                     "epoch": m.get("epoch"), "flags": m.get("flags", ""),
                     **{k: m.get(k) for k in ("val_clean_acc", "val_robust_acc", "val_blackbox_acc", "test_clean_acc",
                                              "test_robust_acc")},
                     "path": r.path})
    return sorted(rows, key=lambda row: str(row["trial_id"]))


def write_results(s: Settings, rows: list[dict[str, Any]], table: dict[str, Any]) -> None:
    cols = ["trial_id", "status", "pareto", "knee", "eligibility", "val_clean_acc", "val_robust_acc",
            "val_blackbox_acc", "test_clean_acc", "test_robust_acc", "flags", "hparams", "train", "error"]
    for name, subset in (("trials.csv", rows), ("pareto.csv", table["front"])):
        with open(s.path / name, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
            w.writeheader()
            for r in subset:
                w.writerow({**r, "hparams": json.dumps(r["hparams"]), "train": json.dumps(r["train"])})
    doc = {"settings": s.__dict__, "objectives": table["objectives"], "hypervolume": table["hypervolume"],
           "reference": table["reference"], "knee": table["knee"]["trial_id"] if table["knee"] else None,
           "front": [{k: r.get(k) for k in cols} for r in table["front"]]}
    (s.path / "pareto.json").write_text(json.dumps(doc, indent=2, default=str))


def print_table(s: Settings, result: dict[str, Any]) -> None:
    rows, table = result["rows"], result["table"]
    failed = [r for r in rows if r["status"] == "ERROR"]
    print(f"\n{len(rows)} trials: {sum(r['status'] == 'TERMINATED' for r in rows)} finished, {len(failed)} failed, "
          f"{sum(r['eligibility'] == 'flagged' for r in rows)} flagged, "
          f"{sum(r['eligibility'] == 'infeasible' for r in rows)} infeasible")
    for r in failed:
        print(f"  failed {r['trial_id']}: {r['error']}")
    print(f"Pareto front ({table['objectives'][0]} vs {table['objectives'][1]}), hypervolume "
          f"{table['hypervolume']:.4f} (reference {tuple(table['reference'])}):")
    print(f"  {'trial':<12} {'clean':>8} {'robust':>8} {'test clean':>11} {'test robust':>12}  hyperparameters")
    for r in table["front"]:
        hp = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in {**r["hparams"], **r["train"]}.items())
        fmt = lambda v: f"{v:.4f}" if isinstance(v, (int, float)) and v is not None and math.isfinite(v) else "-"
        print(f"  {str(r['trial_id']):<12} {fmt(r[table['objectives'][0]]):>8} {fmt(r[table['objectives'][1]]):>8} "
              f"{fmt(r['test_clean_acc']):>11} {fmt(r['test_robust_acc']):>12}  {hp or 'defaults'}"
              f"{'  <- knee' if r['knee'] else ''}")
    print(f"written: {s.path / 'pareto.csv'}, {s.path / 'pareto.json'}, {s.path / 'trials.csv'}, "
          f"Optuna study {s.path / 'optuna.db'}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with cli_errors(PROG):
        if args.resume:
            path = Path(args.resume).expanduser().resolve()
            if not (path / "search.json").is_file():
                raise UserError(f"{args.resume} is not a tune_div experiment folder (no search.json)")
            s = Settings(**json.loads((path / "search.json").read_text()))
            s.storage_path, s.experiment = str(path.parent), path.name
        else:
            s = settings_from_args(args)
            if s.path.exists() and any(s.path.iterdir()):
                raise UserError(f"experiment folder {s.path} exists already; use --resume {s.path} or another --experiment")
        if not args.resume:
            connect(s, args.address)  # fail on resources before writing anything
            s.path.mkdir(parents=True, exist_ok=True)
            (s.path / "search.json").write_text(json.dumps(s.__dict__, indent=2))
        result = run(s, args.address, bool(args.resume), args.quiet)
        print_table(s, result)
        if result["interrupted"]:
            print(f"interrupted: continue with  {PROG} --resume {s.path}", file=sys.stderr)
            return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
