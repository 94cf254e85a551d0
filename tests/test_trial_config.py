"""The typed trial config: one dict layout across the Ray boundary, strict on both sides; trial states and
Ray's folder names read in one place each."""

from __future__ import annotations

import pytest

from tune_div.errors import UserError
from tune_div.search import ray_layout, states
from tune_div.search.settings import base_config
from tune_div.search.states import TrialState
from tune_div.search.trial_config import Blackbox, TrialConfig

# A trial's config as Ray hands it to the trainable, in the layout every search so far has written.
RAY_SIDE = {
    "defense": "smd",
    "hparams": {"lam": 0.7},
    "train": {"adv_attack": "pgd", "adv_eps": 0.2, "lr": 0.002},
    "base": {"dataset": "mnist", "arch": "lenet5", "n_members": 3, "epochs": 2, "seed": 0, "subset": 500},
    "objective": {"attack": "pgd_cw_logits", "eps": 0.1, "steps": 10, "n": 50, "seed": 0, "audit": "fast"},
    "sanity_n": 20,
    "test_n": 100,
    "rungs": [1],
    "inject_nan_if": ["lam", 5.0],
}


def test_the_ray_side_dict_round_trips_and_is_read_by_attribute():
    c = TrialConfig.from_dict(RAY_SIDE)
    assert c.to_dict() == RAY_SIDE
    assert c.objective.eps == 0.1 and c.rungs == (1,) and c.inject_nan_if == ("lam", 5.0)
    cfg = c.train_config()
    assert cfg.defense == "smd" and cfg.hparams == {"lam": 0.7} and cfg.lr == 0.002
    assert cfg.adv_train is not None and cfg.adv_train["attack"] == "pgd" and cfg.adv_train["eps"] == 0.2
    assert c.objective_block() == {**RAY_SIDE["objective"], "test_n": 100}
    assert c.sampled() == {"lam": 0.7, "adv_attack": "pgd", "adv_eps": 0.2, "lr": 0.002}
    assert "blackbox" not in c.logged_params() and "hparams" not in c.logged_params()


def test_optional_parts_are_written_only_when_set():
    c = TrialConfig.from_dict({**RAY_SIDE, "blackbox": {"config": {"defense": "naive"}, "root": "/c"}})
    assert c.blackbox == Blackbox({"defense": "naive"}, "/c")
    assert c.to_dict()["blackbox"] == {"config": {"defense": "naive"}, "root": "/c"}
    naive = c.replace(defense="naive", hparams={}, train={}, test_report=True)
    assert naive.to_dict()["test_report"] is True and "test_report" not in c.to_dict()


@pytest.mark.parametrize(
    "change, needle",
    [
        ({"sanity": 20}, "unknown key(s) ['sanity']"),  # a misspelt key never becomes a default
        ({"objective": {**RAY_SIDE["objective"], "step": 10}}, "trial objective: unknown key(s) ['step']"),
        ({"base": {**RAY_SIDE["base"], "epoch": 3}}, "unknown training field(s) ['epoch']"),
        ({"blackbox": {"config": {}}}, "trial blackbox: missing key(s) ['root']"),
    ],
)
def test_an_unknown_or_missing_key_is_an_error_at_construction(change, needle):
    with pytest.raises(UserError) as exc:
        TrialConfig.from_dict({**RAY_SIDE, **change})
    assert needle in str(exc.value)


def test_a_missing_required_key_is_named():
    doc = {k: v for k, v in RAY_SIDE.items() if k != "rungs"}
    with pytest.raises(UserError, match=r"missing key\(s\) \['rungs'\]"):
        TrialConfig.from_dict(doc)


def test_the_search_builds_its_fixed_part_as_a_typed_config(tmp_path):
    from tune_div.cli import search

    args = search.build_parser().parse_args(["gal", "--budget", "smoke", "--storage-path", str(tmp_path)])
    c = base_config(search.settings_from(args))
    assert isinstance(c, TrialConfig) and c.defense == "gal" and c.objective.audit == "fast"
    assert TrialConfig.from_dict(c.to_dict()) == c


def test_trial_states_and_ray_folder_names():
    assert (
        states.stopped(3) == "STOPPED@3" and states.is_stopped("STOPPED@3") and states.stopped_epoch("STOPPED@3") == "3"
    )
    assert str(TrialState.ERROR) == "ERROR" and TrialState.TERMINATED == "TERMINATED"
    assert [states.mlflow_end(s) for s in ("TERMINATED", "STOPPED@1", "ERROR", "UNFINISHED")] == [
        "FINISHED",
        "FINISHED",
        "FAILED",
        "KILLED",
    ]
    folder = "/x/exp/trainable_5f3a1b2c_7_lam=0.5_2026-12-01_10-00-00"
    assert ray_layout.trial_id(folder) == "5f3a1b2c" and ray_layout.creation_index(folder) == 7
    assert ray_layout.creation_index("/x/None") is None
