"""The Optuna searcher with every sampler, driven the way Ray Tune drives it (suggest, complete, fail),
against a real Optuna study on disk; no trial is trained, the objectives are a known function."""

from __future__ import annotations

import optuna
import pytest

from tune_div.search import space as search_space
from tune_div.search.searcher import make_searcher
from tune_div.search.settings import SAMPLERS, Settings

FLOOR = 0.9


def settings(tmp_path, sampler: str) -> Settings:
    s = Settings(
        defense="cldl",
        dataset="mnist",
        arch="lenet5",
        members=3,
        epochs=1,
        samples=8,
        budget="smoke",
        sampler=sampler,
        objectives="robust",
        clean_floor=FLOOR,
        gpus=0,
        gpus_per_trial=0,
        cpus_per_trial=1,
        concurrency=None,
        seed=0,
        space_file=None,
        data_dir=None,
        inject_nan_if=None,
        experiment="e",
        storage_path=str(tmp_path),
    )
    s.path.mkdir(parents=True)
    return s


def objectives(hp: dict) -> tuple[float, float]:
    """A trade-off: more label diversity (alpha) costs clean accuracy and buys robustness."""
    return 1.0 - 0.03 * hp["alpha"], 0.05 * hp["alpha"] + 0.01 * hp["beta"]


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_sampler_paper_point_first_fail_pruned_and_constraint_reach_the_study(sampler, tmp_path):
    s = settings(tmp_path, sampler)
    space = search_space.load("cldl", dataset="mnist")
    searcher = make_searcher(s, space)
    told = {}
    for i in range(8):
        config = searcher.suggest(f"t{i}")
        hp = config["hparams"]
        if i == 0:
            assert hp == {"gamma": 3.0, "alpha": 4.0, "beta": 4.0}  # the paper's MNIST setting, evaluated first
        for p in space.params:
            assert p.low <= hp[p.short] <= p.high
        clean, robust = objectives(hp)
        failed, stopped = i == 3, i in (5, 6)  # a diverged trial; two the scheduler stopped at a rung
        searcher.on_trial_complete(
            f"t{i}",
            {
                "val_clean_acc": clean,
                "val_robust_acc": robust,
                "flags": "",
                "final": not stopped,
                "epoch": 1 if stopped else 9,
            },
            error=failed,
        )
        told[i] = "FAIL" if failed else "PRUNED" if stopped else (clean, robust)
    study = optuna.load_study(study_name="e", storage=f"sqlite:///{s.path / 'optuna.db'}")
    assert len(study.trials) == 8
    for t in study.trials:
        if told[t.number] == "FAIL":
            assert t.state == optuna.trial.TrialState.FAIL and t.values is None  # never a partial point
        elif told[t.number] == "PRUNED":  # stopped at a rung: its partial values are not final values
            assert t.state == optuna.trial.TrialState.PRUNED and t.values is None and t.user_attrs["stopped_at"] == 1
        else:
            assert t.state == optuna.trial.TrialState.COMPLETE
            assert tuple(t.values) == pytest.approx(told[t.number])
            assert t.constraints == pytest.approx({"clean_floor": FLOOR - told[t.number][0]})
    feasible = {t.number for t in study.trials if t.values and t.values[0] >= FLOOR}
    assert feasible and {t.number for t in study.best_trials} <= feasible  # the study alone knows the floor


def test_a_restored_searcher_reattaches_and_closes_each_trial_once(tmp_path):
    """After a killed driver the searcher may be restored from a snapshot older than the study: it finds
    the Optuna trial of a Ray trial by its ``ray_trial_id``, closes it once, and leaves a closed one alone."""
    from tune_div.search.searcher import RAY_TRIAL_ID, close_trial, open_trial

    s = settings(tmp_path, "random")
    space = search_space.load("cldl", dataset="mnist")
    first = make_searcher(s, space)
    first.suggest("a")
    first.suggest("b")  # the driver dies here: Optuna has a and b RUNNING
    study = optuna.load_study(study_name="e", storage=f"sqlite:///{s.path / 'optuna.db'}")
    assert [t.user_attrs[RAY_TRIAL_ID] for t in study.trials] == ["a", "b"]
    restored = make_searcher(s, space)  # knows neither (it enqueues the paper point again: WAITING, unused)
    done = {"val_clean_acc": 0.95, "val_robust_acc": 0.4, "flags": "", "final": True, "epoch": 9}
    restored.on_trial_complete("b", done)
    restored.on_trial_complete("b", {**done, "val_robust_acc": 0.9})  # told twice: the first stands
    restored.on_trial_complete("a", None, error=True)
    study = optuna.load_study(study_name="e", storage=f"sqlite:///{s.path / 'optuna.db'}")
    by_id = {t.user_attrs[RAY_TRIAL_ID]: t for t in study.trials if RAY_TRIAL_ID in t.user_attrs}
    assert len(by_id) == 2 and all(t.state.name == "WAITING" for t in study.trials if t.number > 1)  # re-attached
    assert by_id["b"].state.name == "COMPLETE" and tuple(by_id["b"].values) == (0.95, 0.4)
    assert by_id["b"].constraints == pytest.approx({"clean_floor": FLOOR - 0.95})
    assert by_id["a"].state.name == "FAIL"
    handle = open_trial(study, by_id["b"])
    assert close_trial(study, handle, s.metrics, None, True, FLOOR) == "COMPLETE"  # already closed: unchanged
