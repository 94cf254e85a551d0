"""The pieces of browsing that need no server: the front's Markdown, the URLs, the experiment's kind,
the latest search, the dashboard's study lookup and ``tune-div ui``'s bad input."""

from __future__ import annotations

import os
import time

import optuna
import pytest

from tune_div.cli import ui
from tune_div.errors import UserError
from tune_div.tracking import browse, dashboard
from tune_div.tracking.uri import get_or_create_experiment


def table(front, knee=None):
    for r in front:
        r["knee"] = r["trial_id"] == knee
    return {
        "objectives": ["val_clean_acc", "val_robust_acc"],
        "front": front,
        "hypervolume": 0.5,
        "reference": [0.0, 0.0],
        "knee": next((r for r in front if r["knee"]), None),
    }


def test_front_markdown_links_each_member_marks_the_knee_and_ends_with_the_baseline():
    front = [
        {"trial_id": "a1", "val_clean_acc": 0.9, "val_robust_acc": 0.5, "val_proxy_acc": 0.55,
         "val_robust_acc_n": 200, "val_robust_acc_ci_low": 0.431, "val_robust_acc_ci_high": 0.569,
         "audit_lift_over_naive": 0.02, "audit_lift_p": 0.01, "hparams": {"lam": 1.5678}, "train": {"lr": 0.001}},
        {"trial_id": "b2", "val_clean_acc": 0.8, "val_robust_acc": 0.6, "val_proxy_acc": None,
         "audit_lift_over_naive": None, "hparams": {"mode": "a|b"}, "train": {}},
    ]  # fmt: skip
    md = browse.front_markdown(
        table(front, knee="a1"), "7", {"a1": "run-a"}, "audited", {"val_clean_acc": 0.85, "val_robust_acc": 0.48}
    )
    rows = [ln for ln in md.splitlines() if ln.startswith("| ")][1:]
    assert rows[0] == "| [b2] | 0.8000 | 0.6000 | – | – | `mode=a\\|b` |".replace("[b2]", "b2")  # no run yet: no link
    assert rows[1] == (
        "| [a1](#/experiments/7/runs/run-a?workflowType=machine_learning) **knee** | 0.9000 | 0.5000 [0.431, 0.569] "
        "| 0.5500 | +0.0200* | `lam=1.568 lr=0.001` |"
    )
    assert rows[2].startswith("| naive baseline | 0.8500 | 0.4800 | – | 0 (reference) |")
    assert "robust accuracy audited" in md and "2 trial(s)" in md
    assert "lift significant at 0.05" in md


def test_a_confirmed_front_shows_its_seed_means():
    front = [
        {"trial_id": "a1", "val_clean_acc": 0.9, "val_robust_acc": 0.5, "knee": True, "hparams": {}, "train": {},
         "confirmed_val_robust_acc": 0.45, "confirmed_val_robust_acc_std": 0.0412, "confirm_seeds": [0, 1, 2],
         "confirmed_lift": 0.031, "confirmed_lift_significant": True},
        {"trial_id": "b2", "val_clean_acc": 0.8, "val_robust_acc": 0.6, "hparams": {}, "train": {}},
    ]  # fmt: skip
    md = browse.front_markdown(table(front, knee="a1"), "7", {}, "audited")
    header, _, first, second = [ln for ln in md.splitlines() if ln.startswith("|")][:4]
    assert "confirmed robust, test lift (seeds)" in header
    assert first.startswith("| b2 |") and "| – |" in first  # not confirmed: a dash
    assert "| 0.4500 ± 0.041, +0.0310* (3) |" in second


def test_an_empty_front_says_so():
    md = browse.front_markdown(table([]), "1", {}, "PROXY, not audited")
    assert "(no eligible trial yet)" in md and "PROXY, not audited" in md


def test_the_experiment_url_opens_model_training():
    assert browse.experiment_url("http://h:5/", "3") == "http://h:5/#/experiments/3?workflowType=machine_learning"


def test_experiments_are_marked_model_training_new_or_old(tmp_path):
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    new = get_or_create_experiment(client, "new", str(tmp_path / "art"), "about it")
    assert client.get_experiment(new).tags == {browse.KIND_TAG: browse.MODEL_TRAINING, browse.NOTE_TAG: "about it"}
    old = client.create_experiment("old")  # as an older tune_div or another client made it
    assert get_or_create_experiment(client, "old", None, "about old") == old
    assert client.get_experiment(old).tags[browse.KIND_TAG] == browse.MODEL_TRAINING
    client.set_experiment_tag(old, browse.NOTE_TAG, "the user's own words")
    get_or_create_experiment(client, "old", None, "about old")
    assert client.get_experiment(old).tags[browse.NOTE_TAG] == "the user's own words"  # never overwritten


def test_the_latest_search_is_the_most_recently_started_parent(tmp_path):
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert browse.latest_search(client) is None
    first, second = (get_or_create_experiment(client, n, None) for n in ("gal-mnist", "smd-mnist"))
    client.create_run(second, tags={"tune_div.role": "search"})
    time.sleep(0.01)
    client.create_run(first, tags={"tune_div.role": "search"})
    time.sleep(0.01)
    client.create_run(second, tags={"tune_div.role": "retrain"})  # not a search
    assert browse.latest_search(client) == (first, "gal-mnist")


def make_study(folder, name=None):
    folder.mkdir(parents=True)
    optuna.create_study(study_name=name or folder.name, storage=dashboard.storage_url(folder / "optuna.db"))
    return folder / "optuna.db"


def test_the_study_file_is_the_named_folder_the_named_search_or_the_latest(tmp_path):
    a = make_study(tmp_path / "a")
    b = make_study(tmp_path / "b")
    os.utime(a, (time.time() + 10, time.time() + 10))
    assert dashboard.study_file(tmp_path) == a.resolve()
    assert dashboard.study_file(tmp_path, "b") == b.resolve()
    assert dashboard.study_file(tmp_path, folder=tmp_path / "b") == b.resolve()
    for call, needle in (
        (lambda: dashboard.study_file(tmp_path / "none"), "no search under"),
        (lambda: dashboard.study_file(tmp_path, "zzz"), "no search 'zzz'"),
        (lambda: dashboard.study_file(tmp_path, folder=tmp_path), "no Optuna study at"),
    ):
        with pytest.raises(UserError, match=needle):
            call()


def test_the_study_page_is_the_study_named_after_its_folder(tmp_path):
    path = make_study(tmp_path / "e2e")
    optuna.create_study(study_name="other", storage=dashboard.storage_url(path))
    sid = optuna.storages.RDBStorage(dashboard.storage_url(path)).get_study_id_from_name("e2e")
    assert dashboard.study_page(path) == f"/dashboard/studies/{sid}"
    moved = make_study(tmp_path / "moved", name="original")  # one study, whatever its name
    assert dashboard.study_page(moved).startswith("/dashboard/studies/")


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--experiment", "nope"], "no experiment 'nope'"),
        (["--optuna", "/nonexistent/search"], "no Optuna study at /nonexistent/search/optuna.db"),
        (["--optuna", "--experiment", "nope"], "no search 'nope'"),
        (["--port", "0"], "--port"),
    ],
)
def test_ui_bad_input_is_one_line_and_exit_2(argv, needle, tmp_path, capsys):
    from mlflow import MlflowClient

    MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").create_experiment("e")
    capsys.readouterr()  # MLflow's own lines while the test made the store
    with pytest.raises(SystemExit) as exc:
        ui.main(["--storage", str(tmp_path), *argv])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and len(err.splitlines()) == 1 and needle in err, err
