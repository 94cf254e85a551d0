r"""Running a search: join or start Ray, build the Tuner, run it, publish the front.

Order matters for "nothing written on bad input" and for resume: the inputs (dataset, search space,
storage, MLflow store) are checked before Ray starts, the cluster's resources before anything is
written; the MLflow parent run exists before ``search.json`` is written (once), so a resumed search
re-attaches to it. A resume first :func:`reconcile`\ s what a killed driver left behind.

What survives what (README, "Clusters"): a lost worker process or node -> the trial is retried from its
last checkpoint (``--max-retries``, every epoch is checkpointed); an error of the trial's own code
(divergence) -> failed at once, never retried; Ctrl-C or ``kill -9`` of the driver -> ``--resume``.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from typing import Any

from .. import tracking
from ..errors import UserError
from ..files import atomic_write_text
from . import baseline, pareto
from .results import collect, write_results
from .settings import FINAL, Settings, base_config

RAY_LOG = "ray.log"  # Ray's own log lines and tracebacks, kept out of the terminal
LOST = (
    "lost: the driver was killed after this trial was created and before Ray recorded it; "
    "Ray runs its replacement instead"
)


def quiet_ray(log_file: Path | None = None) -> None:
    """Ray's banners, hints and tracebacks go to ``log_file`` (``<experiment>/ray.log``), not the terminal;
    the trial's one-line reason is printed by the search's own callbacks. Before the experiment folder
    exists (nothing may be written yet) they are dropped. Optuna's and MLflow's info lines too."""
    ray_logger = logging.getLogger("ray")
    for lg in [ray_logger] + [
        logging.getLogger(n) for n in list(logging.root.manager.loggerDict) if n.startswith("ray.")
    ]:
        for h in list(getattr(lg, "handlers", [])):
            lg.removeHandler(h)
    ray_logger.propagate = False
    ray_logger.addHandler(logging.FileHandler(log_file) if log_file else logging.NullHandler())
    ray_logger.setLevel(logging.INFO if log_file else logging.ERROR)
    # Ray Tune's new output engine prints its config table, TensorBoard hint and per-trial tables even at
    # verbose=0; the legacy one is silent at verbose=0. The search prints its own lines.
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    tracking.quiet_mlflow()
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


def connect(s: Settings, address: str | None) -> dict[str, float]:
    """Start or join Ray and check the resources asked for exist; returns the cluster's resources."""
    import ray

    if address and address != "auto":  # fail fast: Ray itself retries an unreachable address for minutes
        host, _, port = address.rpartition(":")
        try:
            socket.create_connection((host or address, int(port or 6379)), timeout=5).close()
        except (OSError, ValueError):
            raise UserError(
                f"cannot reach a Ray cluster at {address}; start one with `ray start --head` or check the address"
            ) from None
    if not ray.is_initialized():
        # a local Ray counts the machine's GPUs itself (num_gpus=None); a cluster already knows its own
        local: dict[str, Any] = {} if address else {"num_gpus": None}
        try:
            ray.init(address=address, include_dashboard=False, configure_logging=False, log_to_driver=False, **local)
        except ConnectionError as exc:
            raise UserError(f"cannot join the Ray cluster at {address}: {str(exc).splitlines()[0]}") from None
    res = ray.cluster_resources()
    have_gpu, have_cpu = float(res.get("GPU", 0)), float(res.get("CPU", 0))
    if s.gpus > have_gpu:
        raise UserError(
            f"asked for {s.gpus:g} GPUs but the cluster has {have_gpu:g} GPU(s) and {have_cpu:g} CPU(s); "
            "use --gpus 0 for CPU"
        )
    if s.cpus_per_trial > have_cpu:
        raise UserError(f"--cpus-per-trial {s.cpus_per_trial:g} is more than the cluster's {have_cpu:g} CPUs")
    return {"GPU": have_gpu, "CPU": have_cpu}


def check_writable(path: Path) -> None:
    """``path`` exists as a writable folder or can be created (its nearest existing parent is one)."""
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    if not p.is_dir() or not os.access(p, os.W_OK | os.X_OK):
        raise UserError(
            f"cannot write the results under {path}: {p} is not a writable folder; "
            "pass --storage-path a folder you can write (shared by all nodes on a cluster)"
        )


def check_data(s: Settings) -> None:
    """Both splits of the dataset can be read (or downloaded, when online) before Ray starts."""
    from .. import data

    for split in ("train", "test"):
        data.load(s.dataset, split, root=s.data_dir, subset=1)


def preflight(s: Settings, resume: bool) -> None:
    """Before Ray starts: the dataset can be read, the search space loads, the storage path is writable,
    the MLflow store can be read; on resume also the Ray experiment state and the Optuna study. One line
    and nothing written otherwise."""
    s.space()
    check_data(s)
    check_writable(s.path)
    tracking.check_store(s.mlflow_uri)
    if not resume:
        return
    import optuna
    from ray import tune

    if not tune.Tuner.can_restore(str(s.path)):
        raise UserError(
            f"{s.path} holds no Ray experiment state to resume (it was never started, or it was "
            "moved without its files)"
        )
    try:
        optuna.load_study(study_name=s.experiment, storage=f"sqlite:///{s.path / 'optuna.db'}")
    except Exception as exc:
        raise UserError(
            f"the Optuna study {s.path / 'optuna.db'} cannot be read ({type(exc).__name__}); it is "
            "damaged or not this search's"
        ) from None


def concurrency(s: Settings, res: dict[str, float]) -> int:
    if s.concurrency:
        return s.concurrency
    by_cpu = int(res["CPU"] // s.cpus_per_trial)
    by_gpu = int(s.gpus // s.gpus_per_trial) if s.gpus_per_trial > 0 else by_cpu
    return max(1, min(by_cpu, by_gpu, s.samples))


def prepare_surrogate(s: Settings, param_space: dict[str, Any], quiet: bool) -> dict[str, Any]:
    """Train (or find in the cache) the naive surrogate once, before any trial, so trials only load it."""
    from ..eval import Surrogate, surrogate_config

    base = param_space["base"]
    sur = Surrogate(
        surrogate_config(
            {"arch": s.arch, "n_members": s.members}, s.dataset, s.epochs, s.seed + 1000, base["subset"], s.data_dir
        )
    )
    sur.model(log=(lambda m: None) if quiet else (lambda m: print(m, flush=True)))
    return {"config": sur.cfg.to_dict(), "root": str(sur.root)}


def tracker_for(s: Settings) -> tracking.SearchTracker:
    # a sqlite store keeps artifacts beside it; a server (on a cluster) keeps its own
    return tracking.SearchTracker(
        s.mlflow_uri, s.mlflow_experiment, tracking.artifact_root_for(s.mlflow_uri), s.parent_run_id
    )


def run(s: Settings, address: str | None, resume: bool, quiet: bool) -> dict[str, Any]:
    """Run (or continue) the search; returns ``{"rows", "table", "interrupted"}``."""
    # One snapshot per epoch is by design here (every report carries a checkpoint): no warning about it.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # The proxy is measured at rungs and at the end, not every epoch: results between rungs do not carry
    # the robust objective, which Ray would otherwise refuse.
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    # Ray's snapshot of the experiment (which trials exist, their last checkpoint) at most 1 s old: after a
    # kill -9 of the driver a trial continues from the checkpoint of its last reported epoch.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
    from ray import tune

    from .callbacks import MLflowLogger, RetryPolicy, TrialProgress
    from .scheduler import MOASHA
    from .searcher import make_searcher
    from .trainable import trainable

    quiet_ray()
    preflight(s, resume)
    res = connect(s, address)  # fails on resources before anything is written
    space = s.space()
    param_space = base_config(s)
    if "val_blackbox_acc" in s.metrics and not resume:
        param_space["blackbox"] = prepare_surrogate(s, param_space, quiet)
    conc = concurrency(s, res)
    tracker = tracker_for(s)
    s.parent_run_id = tracker.start_parent(
        s.experiment,
        {k: v for k, v in vars(s).items() if k != "parent_run_id"},
        {
            "defense": s.defense,
            "dataset": s.dataset,
            "arch": s.arch,
            "sampler": s.sampler,
            "objectives": ",".join(s.metrics),
            "budget": s.budget,
            "tune_div.experiment_dir": str(s.path),
        },
    )
    if not resume:
        s.save()
    quiet_ray(s.path / RAY_LOG)
    if not quiet:
        print(
            f"{'resuming' if resume else 'searching'} {s.defense} on {s.dataset} ({s.members} x {s.arch}, "
            f"{s.epochs} epochs, {s.samples} trials, budget {s.budget}), sampler {s.sampler}, objectives "
            f"{', '.join(s.metrics)}; {conc} at once on {res['CPU']:g} CPU / {res['GPU']:g} GPU; "
            f"results in {s.path}",
            flush=True,
        )
    naive = start_baseline(s, param_space) if spare_slot(s, res, conc) else None
    fn = tune.with_resources(trainable, {"cpu": s.cpus_per_trial, "gpu": s.gpus_per_trial})
    if resume:
        tuner = tune.Tuner.restore(
            str(s.path), trainable=fn, resume_unfinished=True, resume_errored=False, restart_errored=False
        )
        reconcile(s, tuner, tracker, quiet)
    else:
        run_config = tune.RunConfig(
            name=s.experiment,
            storage_path=s.storage_path,
            verbose=0,
            callbacks=[RetryPolicy(), TrialProgress(s.epochs, quiet), MLflowLogger(s, tracker)],
            failure_config=tune.FailureConfig(max_failures=s.max_retries),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        )
        scheduler = (
            MOASHA(s.metrics[:2], s.epochs, s.grace_period, s.reduction_factor, record_dir=s.path)
            if s.scheduler == "moasha"
            else None
        )  # at rungs val_robust_acc is the proxy
        tuner = tune.Tuner(
            fn,
            param_space=param_space,
            run_config=run_config,
            tune_config=tune.TuneConfig(
                search_alg=make_searcher(s, space),
                scheduler=scheduler,
                num_samples=s.samples,
                max_concurrent_trials=conc,
            ),
        )
    rows = collect(tuner.fit(), stopped_trials(s.path))
    tracker.attach_children()  # the callback may be a restored copy: read the child runs back from MLflow
    interrupted = len(rows) < s.samples or any(r["status"] == "UNFINISHED" for r in rows)
    if not interrupted and not any(r["status"] == "TERMINATED" for r in rows):  # nothing to put on a front
        finish_baseline(naive, True, quiet)
        table = pareto.pareto_table(rows, objectives=(s.metrics[0], s.metrics[1]), clean_floor=s.clean_floor)
        write_results(s, rows, table, None)
        tracker.end_parent("FAILED")
        failed = sorted((r for r in rows if r["status"] == "ERROR"), key=creation_order)
        return {
            "rows": rows,
            "table": table,
            "interrupted": False,
            "baseline": None,
            "all_failed": failed[0] if failed else {"trial_id": "-", "error": "no trial ran to its last epoch"},
        }
    if naive is None and not interrupted:
        naive = start_baseline(s, param_space)
    table = pareto.pareto_table(rows, objectives=(s.metrics[0], s.metrics[1]), clean_floor=s.clean_floor)
    if not interrupted:
        report_front_on_test(s, table["front"], tracker, quiet)
    base = finish_baseline(naive, interrupted, quiet)
    baseline.lift(rows, base, s.metrics[1])
    files = write_results(s, rows, table, base)
    publish(s, tracker, space, rows, table, files, base)
    tracker.end_parent("KILLED" if interrupted else "FINISHED")
    return {"rows": rows, "table": table, "interrupted": interrupted, "baseline": base, "all_failed": None}


def creation_order(row: dict[str, Any]) -> int:
    """A trial's index in the search, from its Ray folder name ``trainable_<id>_<index>_...``."""
    try:
        return int(Path(str(row.get("path"))).name.split("_")[2])
    except (IndexError, ValueError):
        return 1 << 30


def reconcile(s: Settings, tuner, tracker: tracking.SearchTracker, quiet: bool) -> None:
    """Close what a killed driver left open, before the resumed search runs. Ray's restored state decides:
    a trial Ray still has unfinished is continued from its checkpoint (its Optuna trial stays RUNNING and
    the searcher re-attaches it by ``ray_trial_id``); a trial Ray finished gets the end it had in Optuna
    and MLflow; a trial Ray never recorded (created in the instant before the kill) is closed as FAIL in
    Optuna and its MLflow run, which belongs to no trial, is deleted (lifecycle ``deleted``)."""
    import optuna

    from .searcher import RAY_TRIAL_ID, close_trial, open_trial

    rows = {str(r["trial_id"]): r for r in collect(tuner.get_results(), stopped_trials(s.path))}

    def result_of(r):
        return {
            **{k: r.get(k) for k in s.metrics},
            "val_clean_acc": r.get("val_clean_acc"),
            "flags": r["flags"],
            "epoch": r["epoch"],
            FINAL: r["status"] == "TERMINATED",
        }

    study = optuna.load_study(study_name=s.experiment, storage=f"sqlite:///{s.path / 'optuna.db'}")
    lost = 0
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        r = rows.get(str(t.user_attrs.get(RAY_TRIAL_ID)))
        if r is not None and r["status"] == "UNFINISHED":
            continue
        ot = open_trial(study, t)
        if r is None:
            ot.set_user_attr("lost", LOST)
            lost += 1
        close_trial(
            study,
            ot,
            s.metrics,
            None if r is None else result_of(r),
            r is None or r["status"] == "ERROR",
            s.clean_floor,
        )
    ends = {tid: (r["status"], result_of(r), r["error"]) for tid, r in rows.items()}
    deleted = tracker.reconcile(ends, LOST)
    if not quiet and (lost or deleted):
        print(
            f"closed what the killed driver left: {lost} Optuna trial(s) FAIL, {len(deleted)} MLflow run(s) "
            "of trials Ray never recorded deleted",
            flush=True,
        )


def stopped_trials(path: Path) -> dict[str, int]:
    """Trial id -> the rung epoch the scheduler stopped it at (from its records; none with fifo)."""
    import yaml

    from .scheduler import RECORD_FILE

    f = path / RECORD_FILE
    return {k: int(v) for k, v in yaml.safe_load(f.read_text())["stopped"].items()} if f.is_file() else {}


def report_front_on_test(
    s: Settings, front: list[dict[str, Any]], tracker: tracking.SearchTracker, quiet: bool
) -> None:
    """The final report of the front: each member's test split (clean, proxy, audit) measured from its
    last checkpoint, in Ray tasks with a trial's resources; the numbers go into the rows and onto the
    members' child runs."""
    import ray

    from .trainable import front_test_report

    todo = [r for r in front if r.get("checkpoint") is not None and r.get("test_robust_acc") is None]
    if not todo:
        return
    if not quiet:
        what = f"audited, {s.audit} preset" if s.audit != "off" else "proxy"
        print(f"measuring the test split of the {len(todo)} front member(s) ({what})", flush=True)
    task = ray.remote(num_cpus=s.cpus_per_trial, num_gpus=s.gpus_per_trial, max_retries=0)(front_test_report)
    refs = [task.remote(r["config"], r["checkpoint"]) for r in todo]
    for r, ref in zip(todo, refs):
        try:
            report: dict[str, float] = ray.get(ref)
            r.update(report)
        except Exception as exc:  # the member stays on the front (chosen on validation), its test numbers blank
            print(f"[{r['trial_id']}] test-split report failed: {str(exc).strip().splitlines()[-1]}", flush=True)
            continue
        tracker.log_final(str(r["trial_id"]), {k: v for k, v in r.items() if k.startswith("test_")})


def spare_slot(s: Settings, res: dict[str, float], conc: int) -> bool:
    """Whether the search leaves room for one more trial-sized task while ``conc`` trials run."""
    cpu_left = res["CPU"] - conc * s.cpus_per_trial
    gpu_left = s.gpus - conc * s.gpus_per_trial
    return cpu_left >= s.cpus_per_trial and gpu_left >= s.gpus_per_trial


def start_baseline(s: Settings, param_space: dict[str, Any]):
    """The naive baseline as a Ray task with a trial's resources: beside the trials when the cluster has
    a spare slot, else right after them (it never takes a slot a trial could use)."""
    import ray

    task = ray.remote(num_cpus=s.cpus_per_trial, num_gpus=s.gpus_per_trial, max_retries=0)(baseline.measure)
    return task.remote(baseline.baseline_config(param_space))


def finish_baseline(ref, interrupted: bool, quiet: bool) -> dict[str, Any] | None:
    """The baseline's metrics; None (and a note) if the search was interrupted or the baseline failed."""
    import ray

    if ref is None:
        return None
    if interrupted:
        ray.cancel(ref, force=True)
        return None
    try:
        return ray.get(ref)
    except Exception as exc:  # the front stands without its reference point; say why
        if not quiet:
            print(f"naive baseline failed, shown without it: {str(exc).strip().splitlines()[-1]}", flush=True)
        return None


def publish(
    s: Settings, tracker: tracking.SearchTracker, space, rows, table, files: list[Path], base: dict[str, Any] | None
) -> None:
    """Parent artifacts: the Pareto table and plot (with the naive baseline), every trial, the effective
    search space, the exports; the baseline's metrics on the parent."""
    plot = tracking.pareto_plot(
        rows,
        table,
        s.path / "pareto.png",
        f"{s.defense} on {s.dataset}: {s.experiment}",
        baseline=base,
        robust_note="audited" if s.audit != "off" else "proxy, not audited",
    )
    space_file = atomic_write_text(s.path / "search_space.yaml", space.to_yaml())
    exported = s.path / "exported"
    tracking.export_from_tracking(
        s.mlflow_uri, parent_run_id=tracker.parent_run_id, out=exported, clean_floor=s.clean_floor
    )
    tracker.log_front(rows, table, [*files, plot, space_file, exported])
    if base:
        tracker.log_parent_metrics({f"baseline_{k}": v for k, v in base.items() if isinstance(v, float)})
