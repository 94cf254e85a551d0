"""The Optuna searcher: multi-objective, FAIL-aware, with the clean-floor constraint.

Ray's ``OptunaSearch`` tells Optuna COMPLETE with the last reported values for a trial that errored
after reporting; for a diverged trial that would put a partial point on the front and into the
sampler's model. :class:`ParetoOptunaSearch` tells FAIL instead, PRUNED for a trial the scheduler
stopped at a rung (its values are partial too), and sets on every finished trial the
constraint ``clean_floor`` (``floor − clean accuracy``, feasible when <= 0) with Optuna 5's
``Trial.set_constraint``, which every sampler and ``study.best_trials`` read (the samplers'
``constraints_func`` is deprecated since Optuna 5.0), plus its flags and its Ray trial id.
"""

from __future__ import annotations

from typing import Any

import optuna
from ray.tune.search.optuna import OptunaSearch

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


class ParetoOptunaSearch(OptunaSearch):
    """OptunaSearch that tells Optuna FAIL for errored trials and records the clean-floor constraint and
    the sanity flags on each finished trial."""

    def __init__(self, *args: Any, clean_floor: float | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._clean_floor = clean_floor

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is not None and result and not error and not result.get(FINAL):
            # Stopped at a rung by the scheduler: PRUNED, so its partial values never enter the front or the
            # sampler's model as if they were final.
            ot_trial.set_user_attr("stopped_at", result.get("epoch"))
            ot_trial.set_user_attr("ray_trial_id", trial_id)
            self._ot_study.tell(ot_trial, state=optuna.trial.TrialState.PRUNED)
            self._completed_trials.add(trial_id)
            return
        if ot_trial is not None and result and not error:
            if self._clean_floor is not None:
                ot_trial.set_constraint(CLEAN_FLOOR, float(self._clean_floor - result.get("val_clean_acc", 0.0)))
            ot_trial.set_user_attr("flags", result.get("flags", ""))
            ot_trial.set_user_attr("ray_trial_id", trial_id)
        super().on_trial_complete(trial_id, None if error else result, error)


def make_searcher(s: Settings, space) -> ParetoOptunaSearch:
    """The searcher of a search: study ``<experiment>/optuna.db``, the paper point evaluated first."""
    storage = optuna.storages.RDBStorage(f"sqlite:///{s.path / 'optuna.db'}")
    paper = space.paper_point()
    return ParetoOptunaSearch(space=space.define_by_run, metric=s.metrics, mode=["max"] * len(s.metrics),
                              points_to_evaluate=[paper] if paper else None,
                              sampler=make_sampler(s.sampler, s.seed),
                              study_name=s.experiment, storage=storage, seed=s.seed, clean_floor=s.clean_floor)
