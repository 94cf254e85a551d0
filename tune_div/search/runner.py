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

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import tracking
from ..errors import UserError
from ..files import atomic_write_text
from . import baseline, pareto, ray_layout
from .process import ProcessState, search_process
from .results import collect, robust_label, write_results
from .settings import FINAL, Settings, base_config
from .space import SearchSpace
from .states import TrialState
from .trial_config import Blackbox, TrialConfig

RAY_LOG = "ray.log"  # Ray's own log lines and tracebacks, kept out of the terminal
LOST = (
    "lost: the driver was killed after this trial was created and before Ray recorded it; "
    "Ray runs its replacement instead"
)


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
        optuna.load_study(study_name=s.experiment, storage=s.study_url)
    except Exception as exc:
        raise UserError(
            f"the Optuna study {s.study_path} cannot be read ({type(exc).__name__}); it is damaged or not this search's"
        ) from None


def concurrency(s: Settings, res: dict[str, float]) -> int:
    if s.concurrency:
        return s.concurrency
    by_cpu = int(res["CPU"] // s.cpus_per_trial)
    by_gpu = int(s.gpus // s.gpus_per_trial) if s.gpus_per_trial > 0 else by_cpu
    return max(1, min(by_cpu, by_gpu, s.samples))


def prepare_surrogate(s: Settings, param_space: TrialConfig, quiet: bool) -> Blackbox:
    """Train (or find in the cache) the naive surrogate once, before any trial, so trials only load it."""
    from ..eval import Surrogate, surrogate_config

    sur = Surrogate(
        surrogate_config(
            {"arch": s.arch, "n_members": s.members},
            s.dataset,
            s.epochs,
            s.seed + 1000,
            param_space.base["subset"],
            s.data_dir,
        )
    )
    sur.model(log=(lambda m: None) if quiet else (lambda m: print(m, flush=True)))
    return Blackbox(config=sur.cfg.to_dict(), root=str(sur.root))


def tracker_for(s: Settings) -> tracking.SearchTracker:
    # a sqlite store keeps artifacts beside it; a server (on a cluster) keeps its own
    return tracking.SearchTracker(
        s.mlflow_uri, s.mlflow_experiment, tracking.artifact_root_for(s.mlflow_uri), s.parent_run_id
    )


@dataclass
class Prepared:
    """What the prepare stage hands to the others."""

    space: SearchSpace
    param_space: TrialConfig
    resources: dict[str, float]
    concurrency: int
    tracker: tracking.SearchTracker


@dataclass
class SearchOutcome:
    """What a search ends with: every trial's row, the front, the naive baseline's metrics, and whether it
    was interrupted (Ctrl-C: resume it) or ended with every trial failed (``all_failed``: the first)."""

    rows: list[dict[str, Any]]
    table: dict[str, Any]
    interrupted: bool
    baseline: dict[str, Any] | None = None
    all_failed: dict[str, Any] | None = None


def run(s: Settings, address: str | None = None, resume: bool = False, quiet: bool = False) -> SearchOutcome:
    """Run (or continue) the search: the stages below, in order, inside :func:`search_process` (which
    restores the process's variables and loggers afterwards)."""
    with search_process() as process:
        preflight(s, resume)
        resources = connect(s, address)  # fails on resources before anything is written
        prepared = prepare(s, resources, resume, quiet, process)
        rows, naive = tune_trials(s, prepared, resume, quiet)
        outcome = collect_outcome(s, rows)
        report(s, prepared, outcome, naive, quiet)
        confirm_front(s, prepared, outcome, quiet)
        publish(s, prepared, outcome)
    return outcome


def prepare(s: Settings, resources: dict[str, float], resume: bool, quiet: bool, process: ProcessState) -> Prepared:
    """The search space, the fixed trial config (with the black-box surrogate), the MLflow parent run, and
    ``search.json``: from here on the experiment folder exists."""
    space = s.space()
    param_space = base_config(s)
    if "val_blackbox_acc" in s.metrics and not resume:
        param_space = param_space.replace(blackbox=prepare_surrogate(s, param_space, quiet))
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
    process.quiet(s.path / RAY_LOG)
    conc = concurrency(s, resources)
    if not quiet:
        print(
            f"{'resuming' if resume else 'searching'} {s.defense} on {s.dataset} ({s.members} x {s.arch}, "
            f"{s.epochs} epochs, {s.samples} trials, budget {s.budget}), sampler {s.sampler}, objectives "
            f"{', '.join(s.metrics)}; {conc} at once on {resources['CPU']:g} CPU / {resources['GPU']:g} GPU; "
            f"results in {s.path}",
            flush=True,
        )
    return Prepared(space, param_space, resources, conc, tracker)


def tune_trials(s: Settings, p: Prepared, resume: bool, quiet: bool) -> tuple[list[dict[str, Any]], Any]:
    """Build (or restore) the Tuner and run it; returns the trials' rows and the baseline's task, which
    starts beside the trials when the cluster has a spare slot."""
    from ray import tune

    from .callbacks import MLflowLogger, RetryPolicy, TrialProgress
    from .scheduler import MOASHA
    from .searcher import make_searcher
    from .trainable import trainable

    naive = start_baseline(s, p.param_space) if spare_slot(s, p.resources, p.concurrency) else None
    fn = tune.with_resources(trainable, {"cpu": s.cpus_per_trial, "gpu": s.gpus_per_trial})
    if resume:
        tuner = tune.Tuner.restore(
            str(s.path), trainable=fn, resume_unfinished=True, resume_errored=False, restart_errored=False
        )
        reconcile(s, tuner, p.tracker, quiet)
    else:
        run_config = tune.RunConfig(
            name=s.experiment,
            storage_path=s.storage_path,
            verbose=0,
            callbacks=[RetryPolicy(), TrialProgress(s.epochs, quiet, s.samples), MLflowLogger(s, p.tracker)],
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
            param_space=p.param_space.to_dict(),
            run_config=run_config,
            tune_config=tune.TuneConfig(
                search_alg=make_searcher(s, p.space),
                scheduler=scheduler,
                num_samples=s.samples,
                max_concurrent_trials=p.concurrency,
            ),
        )
    rows = collect(tuner.fit(), stopped_trials(s.path))
    p.tracker.attach_children()  # the callback may be a restored copy: read the child runs back from MLflow
    return rows, naive


def collect_outcome(s: Settings, rows: list[dict[str, Any]]) -> SearchOutcome:
    """The front of the finished trials; interrupted when trials are missing or unfinished, all failed
    when it was not interrupted and no trial ran to its last epoch."""
    interrupted = len(rows) < s.samples or any(r["status"] == TrialState.UNFINISHED for r in rows)
    table = pareto.pareto_table(rows, objectives=(s.metrics[0], s.metrics[1]), clean_floor=s.clean_floor)
    outcome = SearchOutcome(rows, table, interrupted)
    if not interrupted and not any(r["status"] == TrialState.TERMINATED for r in rows):
        failed = sorted((r for r in rows if r["status"] == TrialState.ERROR), key=creation_order)
        outcome.all_failed = failed[0] if failed else {"trial_id": "-", "error": "no trial ran to its last epoch"}
    return outcome


def report(s: Settings, p: Prepared, outcome: SearchOutcome, naive: Any, quiet: bool) -> None:
    """The final report of a finished search: the front's test split and the naive baseline (started
    now if no slot was spare during the trials), and each trial's lift over it."""
    if outcome.all_failed is not None or outcome.interrupted:
        finish_baseline(naive, True, quiet)  # cancelled: an interrupted front has no baseline yet
        if outcome.all_failed is None:
            baseline.lift(outcome.rows, None, s.metrics[1])
        return
    naive = naive if naive is not None else start_baseline(s, p.param_space)
    report_front_on_test(s, outcome.table["front"], p.tracker, quiet)
    outcome.baseline = finish_baseline(naive, False, quiet)
    baseline.lift(outcome.rows, outcome.baseline, s.metrics[1])
    base_robust = (outcome.baseline or {}).get(s.metrics[1])
    if base_robust is not None:
        x, y = s.metrics[0], s.metrics[1]
        points = [(float(r[x]), float(r[y])) for r in outcome.table["front"]]
        outcome.table["lift_hypervolume"] = pareto.lift_hypervolume(points, base_robust, s.clean_floor)


def confirm_front(s: Settings, p: Prepared, outcome: SearchOutcome, quiet: bool) -> None:
    """Seed confirmation (``--confirm K``, search/confirm.py): retrain the chosen front members and the
    naive baseline with K fresh seeds, as Ray tasks with a trial's resources; set each member's confirmed
    numbers, choose the knee and the best robust again on the confirmed means, and log every retrain as
    an MLflow run nested under its trial's run. A Ctrl-C here leaves the search interrupted (resume it)."""
    if s.confirm <= 0 or outcome.all_failed is not None or outcome.interrupted or not outcome.table["front"]:
        return
    import ray

    from . import confirm

    objectives = (s.metrics[0], s.metrics[1])
    chosen = confirm.members(outcome.table, s.confirm_top, objectives, outcome.rows)
    off_front = [r for r in chosen if not r.get("pareto")]
    if off_front:  # their search seed's test split, as the front's (measured once, from their checkpoints)
        report_front_on_test(s, off_front, p.tracker, quiet, "trial(s) just off the front, to confirm")
        baseline.lift(off_front, outcome.baseline, s.metrics[1])
    fresh = confirm.seeds(s.seed, s.confirm)
    root = s.path / confirm.FOLDER
    jobs = {
        (str(r["trial_id"]), seed): (confirm.seed_config(r["config"], seed), root / str(r["trial_id"]) / f"seed_{seed}")
        for r in chosen
        for seed in fresh
    }
    task = ray.remote(num_cpus=s.cpus_per_trial, num_gpus=s.gpus_per_trial, max_retries=0)(confirm.retrain)
    naive_task = ray.remote(num_cpus=s.cpus_per_trial, num_gpus=s.gpus_per_trial, max_retries=0)(baseline.measure)
    naive_config = baseline.baseline_config(p.param_space)

    def measure_naive(seed: int):
        return naive_task.remote(confirm.seed_config(naive_config, seed))

    say = (lambda m: None) if quiet else (lambda m: print(m, flush=True))
    on_front = len(chosen) - len(off_front)
    say(
        f"confirming {on_front} front member(s)"
        + (f" and {len(off_front)} trial(s) just off the front" if off_front else "")
        + f" with {s.confirm} fresh seed(s) each "
        f"({', '.join(map(str, fresh))}; same data and points): {len(jobs)} retrainings, audited on the test split"
    )
    results, naive, conf = confirm.run(
        jobs,
        task,
        measure_naive if outcome.baseline is not None else None,
        fresh,
        p.tracker.log_confirmation,
        say,
    )
    base = {s.seed: outcome.baseline} if outcome.baseline is not None else {}
    for r in chosen:
        tid = str(r["trial_id"])
        per_seed = {s.seed: r, **{seed: results[(tid, seed)] for seed in fresh if (tid, seed) in results}}
        confirm.summarize(r, per_seed, {**base, **naive})
        logged = {k: r[k] for k in confirm.LOGGED if isinstance(r.get(k), (int, float))}
        p.tracker.log_final(tid, {**logged, "confirmed_seeds": len(per_seed)})
    conf.members = [str(r["trial_id"]) for r in chosen]
    conf.search_knee = str(outcome.table["knee"]["trial_id"]) if outcome.table["knee"] else None
    y = objectives[1]
    conf.search_best = str(max(outcome.table["front"], key=lambda r: (r[y], r[objectives[0]]))["trial_id"])
    choice = None if conf.interrupted else pareto.confirmed_choice(chosen, objectives)
    if choice is not None:
        new_knee, best = choice
        for r in outcome.rows:
            r["knee"] = r is new_knee
        outcome.table["knee"] = new_knee
        conf.knee, conf.best = str(new_knee["trial_id"]), str(best["trial_id"])
    from .searcher import record_confirmation

    record_confirmation(s.study_url, s.experiment, chosen, conf.knee)
    outcome.table["confirmed"] = chosen
    outcome.table["confirmation"] = {
        **conf.to_dict(),
        "search_compute_s": sum(float(r.get("time_total_s") or 0.0) for r in outcome.rows),
    }
    outcome.interrupted = outcome.interrupted or conf.interrupted


def creation_order(row: dict[str, Any]) -> int:
    """A trial's index in the search (from its Ray folder); trials without one sort last."""
    index = ray_layout.creation_index(str(row.get("path")))
    return 1 << 30 if index is None else index


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
            FINAL: r["status"] == TrialState.TERMINATED,
        }

    study = optuna.load_study(study_name=s.experiment, storage=s.study_url)
    lost = 0
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        r = rows.get(str(t.user_attrs.get(RAY_TRIAL_ID)))
        if r is not None and r["status"] == TrialState.UNFINISHED:
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
            r is None or r["status"] == TrialState.ERROR,
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
    s: Settings,
    front: list[dict[str, Any]],
    tracker: tracking.SearchTracker,
    quiet: bool,
    what: str = "front member(s)",
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
        how = f"audited, {s.audit} preset" if s.audit != "off" else "proxy"
        print(f"measuring the test split of the {len(todo)} {what} ({how})", flush=True)
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


def start_baseline(s: Settings, param_space: TrialConfig) -> Any:
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


def publish(s: Settings, p: Prepared, outcome: SearchOutcome) -> None:
    """``pareto.*`` and ``trials.csv``, and the parent run's artifacts and status: FAILED when every trial
    failed, KILLED when interrupted (exported only when the resumed search ends), else FINISHED with the
    plot, the search space and the exports."""
    files = write_results(s, outcome.rows, outcome.table, outcome.baseline)
    if outcome.all_failed is not None:
        p.tracker.end_parent("FAILED")
        return
    export = not outcome.interrupted and bool(outcome.table["front"])
    publish_front(s, p.tracker, p.space, outcome.rows, outcome.table, files, outcome.baseline, export)
    p.tracker.end_parent("KILLED" if outcome.interrupted else "FINISHED")


def publish_front(
    s: Settings,
    tracker: tracking.SearchTracker,
    space,
    rows,
    table,
    files: list[Path],
    base: dict[str, Any] | None,
    export: bool = True,
) -> None:
    """Parent artifacts: the Pareto table and plot (with the naive baseline), every trial, the effective
    search space, the exports (when ``export``); the baseline's metrics on the parent."""
    plot = tracking.pareto_plot(
        rows,
        table,
        s.path / "pareto.png",
        f"{s.defense} on {s.dataset}: {s.experiment}",
        baseline=base,
        robust_note="audited" if s.audit != "off" else "proxy, not audited",
    )
    space_file = atomic_write_text(s.path / "search_space.yaml", space.to_yaml())
    # the front first: the export reads each member's lift over the baseline from its run
    tracker.log_front(rows, table, [*files, plot, space_file], robust_label(s), base)
    if export:
        exported = s.path / "exported"
        tracking.export_from_tracking(
            s.mlflow_uri, parent_run_id=tracker.parent_run_id, out=exported, clean_floor=s.clean_floor
        )
        tracker.log_files([exported])
    if base:
        tracker.log_parent_metrics({f"baseline_{k}": v for k, v in base.items() if isinstance(v, float)})
