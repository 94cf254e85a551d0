"""The Optuna searcher: multi-objective, FAIL-aware, with the clean-floor constraint.

Ray's ``OptunaSearch`` tells Optuna COMPLETE with the last reported values for a trial that errored
after reporting; for a diverged trial that would put a partial point on the front and into the
sampler's model. :class:`ParetoOptunaSearch` tells FAIL instead, PRUNED for a trial the scheduler
stopped at a rung (its values are partial too), and sets on every finished trial the
constraint ``clean_floor`` (``floor − clean accuracy``, feasible when <= 0) with Optuna 5's
``Trial.set_constraint``, which every sampler and ``study.best_trials`` read (the samplers'
``constraints_func`` is deprecated since Optuna 5.0), plus its flags. Every Optuna trial carries its Ray
trial id (user attribute ``ray_trial_id``) from the moment it is asked: :func:`close_trial` is also how
``runner.reconcile`` closes the trials a killed driver left RUNNING.

The study is what optuna-dashboard shows (``tune-div ui --optuna``), so it carries what its reader needs:
the objectives' names (``study.set_metric_names``), the search's MLflow experiment, tracking URI and
defense as study attributes; per trial its MLflow run (``mlflow_run_id``, set by :func:`link_run` when the
run is made), its flags, and every validation and test accuracy beside the objectives (the audit, the
proxy) as user attributes.
"""

from __future__ import annotations

import warnings
from typing import Any

import optuna
from ray.tune.search.optuna import OptunaSearch

from ..eval.intervals import interval_of
from .settings import FINAL, SAMPLERS, Settings

CLEAN_FLOOR = "clean_floor"  # the name of the constraint in the Optuna study


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    """The Optuna sampler ``name`` (one of ``SAMPLERS``); TPE uses the constant liar for parallel trials."""
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ValueError(f"unknown sampler '{name}'; choose one of: {', '.join(SAMPLERS)}")


RAY_TRIAL_ID = "ray_trial_id"  # user attribute: the Ray trial an Optuna trial belongs to, set when asked
MLFLOW_RUN_ID = "mlflow_run_id"  # user attribute: the trial's MLflow child run
# the accuracies copied onto a finished trial, beside its objective values
SHOWN_METRICS = (
    "val_clean_acc",
    "val_robust_acc",
    "val_audit_acc",
    "val_proxy_acc",
    "val_blackbox_acc",
    "test_clean_acc",
    "test_robust_acc",
    "test_audit_acc",
    "test_proxy_acc",
)


def open_trial(study: optuna.Study, frozen: optuna.trial.FrozenTrial) -> optuna.trial.Trial:
    """A handle on a still-open trial of ``study``, to set attributes and tell it. Optuna has no public
    way to get one from a stored trial: ``FrozenTrial._trial_id`` (the storage's id, read from optuna
    5.0.0) is what ``Trial`` is built from."""
    return optuna.trial.Trial(study, frozen._trial_id)


def close_trial(
    study: optuna.Study, ot_trial, metrics: list[str], result: dict | None, error: bool, clean_floor: float | None
) -> str:
    """Tell ``study`` how a trial ended; returns the Optuna state's name. A result of the last epoch is
    COMPLETE (with the clean-floor constraint and the flags), an earlier one was stopped at a rung (PRUNED:
    partial values), an error or no result is FAIL. A trial Optuna has closed already is left alone."""
    number = ot_trial.number
    frozen = study.get_trials(deepcopy=False)[number]
    if frozen.state.is_finished():
        return frozen.state.name
    values = [result.get(m) for m in metrics] if result else []
    if error or not result or any(v is None for v in values):
        study.tell(ot_trial, state=optuna.trial.TrialState.FAIL)
        return "FAIL"
    if not result.get(FINAL):
        # Stopped at a rung by the scheduler: PRUNED, so its partial values never enter the front or the
        # sampler's model as if they were final.
        ot_trial.set_user_attr("stopped_at", result.get("epoch"))
        study.tell(ot_trial, state=optuna.trial.TrialState.PRUNED)
        return "PRUNED"
    if clean_floor is not None:
        ot_trial.set_constraint(CLEAN_FLOOR, float(clean_floor - result.get("val_clean_acc", 0.0)))
    ot_trial.set_user_attr("flags", result.get("flags", ""))
    for key in SHOWN_METRICS:
        if isinstance(result.get(key), (int, float)):
            ot_trial.set_user_attr(key, float(result[key]))
        ci = interval_of(result, key)
        if ci is not None:  # one attribute per accuracy: the dashboard's table stays readable
            ot_trial.set_user_attr(f"{key}_95ci", f"[{ci.low:.3f}, {ci.high:.3f}] of {ci.n}")
    study.tell(ot_trial, values=[float(v) for v in values if v is not None], state=optuna.trial.TrialState.COMPLETE)
    return "COMPLETE"


class ParetoOptunaSearch(OptunaSearch):
    """OptunaSearch that tells Optuna FAIL for errored trials, PRUNED for stopped ones, records the
    clean-floor constraint and the sanity flags, and survives a killed driver: every Optuna trial carries
    its Ray trial id from the moment it is asked, so a restored searcher that does not know a trial Ray
    resumes finds it again in the study."""

    def __init__(self, *args: Any, clean_floor: float | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._clean_floor = clean_floor

    # -- the one adapter onto OptunaSearch's internals, read from ray 2.60.0
    # (ray/tune/search/optuna/optuna_search.py); nothing else in tune_div touches them.
    @property
    def study(self) -> optuna.Study:
        study = self._ot_study  # the optuna.Study, set by OptunaSearch._setup_study
        assert study is not None, "the searcher has no study before Ray sets it up"
        return study

    @property
    def open_trials(self) -> dict[str, optuna.trial.Trial]:
        return self._ot_trials  # Ray trial id -> the Optuna trial asked for it

    @property
    def completed(self) -> set[str]:
        return self._completed_trials  # Ray trial ids already told to Optuna

    @property
    def metrics(self) -> list[str]:
        return list(self.metric) if isinstance(self.metric, list) else [str(self.metric)]

    # --
    def suggest(self, trial_id: str) -> dict | None:
        config = super().suggest(trial_id)
        if config is not None:
            self.open_trials[trial_id].set_user_attr(RAY_TRIAL_ID, trial_id)
        return config

    def _find(self, trial_id: str) -> optuna.trial.Trial | None:
        """The Optuna trial of Ray trial ``trial_id``: known, or re-attached from the study by its id."""
        if trial_id not in self.open_trials:
            for t in self.study.get_trials(deepcopy=False):
                if t.user_attrs.get(RAY_TRIAL_ID) == trial_id:
                    self.open_trials[trial_id] = open_trial(self.study, t)
                    break
        return self.open_trials.get(trial_id)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self.completed:
            return
        ot_trial = self._find(trial_id)
        if ot_trial is not None:
            close_trial(self.study, ot_trial, self.metrics, None if error else result, error, self._clean_floor)
        self.completed.add(trial_id)


def link_run(storage_url: str, study_name: str, ray_trial_id: str, run_id: str) -> bool:
    """Write the MLflow run of Ray trial ``ray_trial_id`` on its still-open Optuna trial; False if the study
    has no such open trial."""
    study = optuna.load_study(study_name=study_name, storage=storage_url)
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if t.user_attrs.get(RAY_TRIAL_ID) == ray_trial_id:
            open_trial(study, t).set_user_attr(MLFLOW_RUN_ID, run_id)
            return True
    return False


def record_confirmation(storage_url: str, study_name: str, rows: list[dict[str, Any]], knee: str | None) -> None:
    """The seed confirmation (search/confirm.py) on the study, for optuna-dashboard: a finished trial cannot
    take new attributes, so the study holds ``confirmed`` (Ray trial id -> its confirmed numbers in one
    line) and ``confirmed_knee``."""
    study = optuna.load_study(study_name=study_name, storage=storage_url)
    lines = {}
    for r in rows:
        if r.get("confirmed_val_robust_acc") is None:
            continue
        lift = r.get("confirmed_lift")
        lines[str(r["trial_id"])] = (
            f"robust {r['confirmed_val_robust_acc']:.4f} ± {r['confirmed_val_robust_acc_std']:.3f}, clean "
            f"{r['confirmed_val_clean_acc']:.4f} over seeds {', '.join(map(str, r['confirm_seeds']))}"
            + ("" if lift is None else f"; test lift over naive {lift:+.4f} ({r['confirmed_lift_verdict']})")
        )
    study.set_user_attr("confirmed", lines)
    study.set_user_attr("confirmed_knee", knee)


def make_searcher(s: Settings, space) -> ParetoOptunaSearch:
    """The searcher of a search: study ``<experiment>/optuna.db``, the paper point evaluated first."""
    storage = optuna.storages.RDBStorage(s.study_url)
    paper = space.paper_point()
    searcher = ParetoOptunaSearch(
        space=space.define_by_run,
        metric=s.metrics,
        mode=["max"] * len(s.metrics),
        points_to_evaluate=[paper] if paper else None,
        sampler=make_sampler(s.sampler, s.seed),
        study_name=s.experiment,
        storage=storage,
        seed=s.seed,
        clean_floor=s.clean_floor,
    )
    with warnings.catch_warnings():  # experimental since Optuna 3.2, and what optuna-dashboard reads
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        searcher.study.set_metric_names(s.metrics)
    for key, value in (
        ("defense", s.defense),
        ("dataset", s.dataset),
        ("mlflow_experiment", s.mlflow_experiment),
        ("mlflow_tracking_uri", s.mlflow_uri),
        ("robust", "audited" if s.audit != "off" else "proxy, not audited"),
    ):
        searcher.study.set_user_attr(key, value)
    return searcher
