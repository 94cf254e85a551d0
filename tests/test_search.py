"""The search end to end with a real local Ray, real Optuna and real MNIST subsets."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import statistics
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch
import yaml
from conftest import SMOKE_FLOOR as FLOOR

from tune_div.cli import search
from tune_div.eval.intervals import wilson
from tune_div.search import pareto

pytestmark = pytest.mark.usefixtures("real_data")
REPO = Path(__file__).resolve().parents[1]


def run_search(argv, capsys):
    rc = search.main(argv)
    return rc, capsys.readouterr()


def read_rows(path: Path) -> list[dict]:
    with open(path / "trials.csv") as fh:
        return list(csv.DictReader(fh))


def test_smoke_search_prints_the_brute_force_front(smoke):
    exp, out = smoke["exp"], smoke["out"]
    rows = read_rows(exp)
    assert len(rows) == 3 and all(r["status"] == "TERMINATED" for r in rows)
    ok = [r for r in rows if not r["flags"]]
    pts = {r["trial_id"]: (float(r["val_clean_acc"]), float(r["val_robust_acc"])) for r in ok}
    brute = {t for t, p in pts.items() if not any(q[0] >= p[0] and q[1] >= p[1] and q != p for q in pts.values())}
    table = out.split("Pareto front")[1].split("written:")[0].split("Seed confirmation")[0]
    assert "robust accuracy audited (fast preset" in table.splitlines()[0]
    lines = [ln for ln in table.splitlines()[2:] if ln.strip() and not ln.strip().startswith("*")]
    printed = {ln.split()[0] for ln in lines if not ln.split()[0] == "naive-baseline"}
    # the paired test's verdict, in one line under the table
    assert re.search(r"\* lift over naive significant at 0\.05 \(exact McNemar on the same 200 points\)", table)
    assert printed == brute and brute
    doc = json.loads((exp / "pareto.json").read_text())
    assert {r["trial_id"] for r in doc["front"]} == brute and doc["hypervolume"] > 0
    # The robust objective is the audit; the proxy is kept beside it, and is never below it by much.
    for r in rows:
        assert float(r["val_robust_acc"]) == float(r["val_audit_acc"])
        assert float(r["val_proxy_acc"]) >= float(r["val_audit_acc"]) - 0.02
    # The naive baseline: a reference row under the front, and every front trial's lift over it.
    base = doc["naive_baseline"]
    assert base["val_robust_acc"] == base["val_audit_acc"] and base["test_robust_acc"] == base["test_audit_acc"]
    (base_line,) = [ln for ln in lines if ln.split()[0] == "naive-baseline"]
    assert f"{base['val_robust_acc']:.4f}" in base_line
    for r in doc["front"]:
        assert r["audit_lift_over_naive"] == pytest.approx(r["val_robust_acc"] - base["val_robust_acc"])
        # paired on the same points: the interval holds the lift, and p is the exact McNemar test's
        assert r["audit_lift_ci_low"] <= r["audit_lift_over_naive"] <= r["audit_lift_ci_high"]
        assert 0 < r["audit_lift_p"] <= 1 and (r["audit_lift_p"] < 0.05) == (
            not r["audit_lift_ci_low"] <= 0 <= r["audit_lift_ci_high"]
        )
        assert r["test_audit_lift_over_naive"] == pytest.approx(r["test_robust_acc"] - base["test_robust_acc"])
    assert doc["significant_lift"] == sum(
        r["audit_lift_p"] < 0.05 and r["audit_lift_over_naive"] > 0 for r in doc["front"]
    )
    assert not any(k.endswith("_points") for k in base)  # the per-point masks stay out of the files
    for r in doc["front"]:
        assert r["test_robust_acc"] == r["test_audit_acc"]  # the front's test split, audited
    # Every accuracy carries its point count and 95% Wilson interval, in trials.csv and pareto.json alike.
    for r in rows:
        assert int(r["val_clean_acc_n"]) > int(r["val_robust_acc_n"]) == int(r["val_proxy_acc_n"]) > 0
        for key in ("val_clean_acc", "val_robust_acc", "val_proxy_acc", "val_audit_acc"):
            n = int(r[f"{key}_n"])
            ci = wilson(round(float(r[key]) * n), n)
            assert (float(r[f"{key}_ci_low"]), float(r[f"{key}_ci_high"])) == pytest.approx((ci.low, ci.high))
    for r in doc["front"]:
        assert r["test_robust_acc_n"] > 0 and r["test_robust_acc_ci_low"] <= r["test_robust_acc"]
        assert r["test_robust_acc"] <= r["test_robust_acc_ci_high"]
    assert json.loads(rows[0]["hparams"]).keys() == {"lam"}
    assert any(json.loads(r["hparams"])["lam"] == 1.0 for r in rows)  # the paper point is evaluated
    # The Optuna study alone rebuilds the same objective values, without Ray.
    study = optuna.load_study(study_name="e2e", storage=f"sqlite:///{exp / 'optuna.db'}")
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert sorted(tuple(round(v, 6) for v in t.values) for t in done) == sorted(
        (round(float(r["val_clean_acc"]), 6), round(float(r["val_robust_acc"]), 6)) for r in rows
    )
    # --clean-floor reached Optuna as a constraint on every trial: floor − clean accuracy.
    assert sorted(round(t.constraints["clean_floor"], 6) for t in done) == sorted(
        round(FLOOR - float(r["val_clean_acc"]), 6) for r in rows
    )
    assert "epoch 1/1" in out
    # every live line ends with the search's progress: trials done, running, left, and the time left
    live = [ln for ln in out.splitlines() if " epoch 1/1 " in ln]
    assert live and all(re.search(r"\| trials \d+ done, \d+ running, \d+ left", ln) for ln in live), live
    assert re.search(r"\| trials 0 done, \d running, \d left, ETA ~\d+", live[0]), live[0]
    by_id = {r["trial_id"]: r for r in rows}
    for line in lines:  # the printed numbers are the trials' own
        if line.split()[0] in by_id:
            tid, clean, robust_ci, proxy, test_clean, test_robust_ci = line.split()[:6]
            (robust, half), (test_robust, test_half) = robust_ci.split("±"), test_robust_ci.split("±")
            r = by_id[tid]
            for key, shown in (("val_robust_acc", half), ("test_robust_acc", test_half)):
                ci = wilson(round(float(r[key]) * int(r[f"{key}_n"])), int(r[f"{key}_n"]))
                assert float(shown) == pytest.approx(ci.half_width, abs=5e-4)  # the 95% half-width shown
            assert [float(v) for v in (clean, robust, proxy, test_clean, test_robust)] == pytest.approx(
                [
                    float(by_id[tid][k])
                    for k in ("val_clean_acc", "val_robust_acc", "val_proxy_acc", "test_clean_acc", "test_robust_acc")
                ],
                abs=5e-5,
            )


@pytest.mark.slow  # the standard preset on every front member, a minute; test_audit checks the same bound on evaluate
def test_the_fronts_robust_accuracy_survives_the_standard_audit(smoke, real_data):
    """A front number is never more than 0.03 above what the audit's standard preset finds on the same
    validation points, for the trial's own final checkpoint."""
    import torch

    from tune_div.eval import audit
    from tune_div.search.trainable import CHECKPOINT_FILE, SubsetAttack
    from tune_div.train import TrainConfig, Trainer

    doc = json.loads((smoke["exp"] / "pareto.json").read_text())
    objective = doc["settings"]
    for r in doc["front"]:
        (ckpt,) = smoke["exp"].glob(f"*{r['trial_id']}*/checkpoint_*/{CHECKPOINT_FILE}")
        state = torch.load(ckpt, weights_only=True)
        trainer = Trainer(TrainConfig.from_dict({**state["config"], "data_dir": str(real_data)}))
        trainer.load_checkpoint(ckpt)
        val = SubsetAttack(trainer.cfg, {"n": 200, "seed": objective["seed"]})  # the smoke budget's points
        torch.manual_seed(1)
        standard = audit(trainer.ensemble.eval(), val.x, val.y, val.eps, "standard").robust_acc
        assert r["val_robust_acc"] <= standard + 0.03, (r["trial_id"], r["val_robust_acc"], standard)


def mlflow_runs(storage: Path, experiment: str = "smd-mnist"):
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{storage / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("tune_div.role") == "search"]
    children = [r for r in runs if r.data.tags.get("tune_div.role") == "trial"]
    return client, parents, children


def test_the_winners_are_confirmed_with_a_fresh_seed_and_chosen_on_the_means(smoke):
    """``--confirm 1``: the knee and the best robust (or the next trial off the front) retrained with seed
    1 on the same data, audited on the test split, each a run nested under its trial's run; the knee and
    best robust chosen again on the means, and the export writing those, with the confirmed numbers."""
    exp, out = smoke["exp"], smoke["out"]
    doc = json.loads((exp / "pareto.json").read_text())
    conf, confirmed = doc["confirmation"], doc["confirmed"]
    assert conf["seeds"] == [1] and conf["trained"] == len(confirmed) == len(conf["members"]) >= 1
    assert [r["trial_id"] for r in confirmed] == conf["members"] and not conf["failures"]
    rows = {r["trial_id"]: r for r in read_rows(exp)}
    for r in confirmed:
        assert r["confirm_seeds"] == [0, 1]
        result = json.loads((exp / "confirm" / r["trial_id"] / "seed_1" / "result.json").read_text())
        for key in ("val_clean_acc", "val_robust_acc", "test_clean_acc", "test_robust_acc"):
            values = r[f"confirmed_{key}_values"]
            assert values == pytest.approx([r[key], result[key]])  # the search's seed, then the fresh one
            assert r[f"confirmed_{key}"] == pytest.approx(statistics.fmean(values))
            assert r[f"confirmed_{key}_std"] == pytest.approx(statistics.stdev(values))
        for key in ("val_robust_acc_n", "test_robust_acc_n"):  # measured on the same points
            assert result[key] == r[key]
        assert r["confirmed_lift_values"][0] == pytest.approx(r["test_audit_lift_over_naive"])
        assert float(rows[r["trial_id"]]["confirmed_val_robust_acc"]) == pytest.approx(r["confirmed_val_robust_acc"])
    assert not list(exp.glob("confirm/*/*/state.pt"))  # no weights kept
    means = [(r["confirmed_val_clean_acc"], r["confirmed_val_robust_acc"]) for r in confirmed]
    assert doc["knee"] == conf["knee"] == confirmed[pareto.knee(means)]["trial_id"]
    best = max(confirmed, key=lambda r: (r["confirmed_val_robust_acc"], r["confirmed_val_clean_acc"]))
    assert conf["best"] == best["trial_id"]
    assert "Seed confirmation: " in out and "confirmation cost: " in out and f"knee {conf['knee']}" in out
    # MLflow: each retrain is a run nested under its trial's run, with its own numbers
    client, (parent,), children = mlflow_runs(smoke["storage"])
    run_of = {c.data.tags["tune_div.trial_id"]: c for c in children}
    for r in confirmed:
        (run,) = client.search_runs(
            [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{run_of[r['trial_id']].info.run_id}'"
        )
        assert run.data.tags["tune_div.role"] == "confirmation" and run.data.tags["tune_div.confirm_seed"] == "1"
        assert run.info.status == "FINISHED"
        assert run.data.metrics["final_test_robust_acc"] == pytest.approx(r["confirmed_test_robust_acc_values"][1])
        trial_metrics = run_of[r["trial_id"]].data.metrics
        assert trial_metrics["final_confirmed_val_robust_acc"] == pytest.approx(r["confirmed_val_robust_acc"])
        assert trial_metrics["final_confirmed_seeds"] == 2
    assert run_of[doc["knee"]].data.tags["knee"] == "true"
    # the export writes the confirmed choice, with the confirmed numbers
    for name, tid in (("knee", conf["knee"]), ("best_robust", conf["best"])):
        written = yaml.safe_load((exp / "exported" / f"{name}.yaml").read_text())
        assert written["source"]["trial_id"] == tid
        (r,) = [c for c in confirmed if c["trial_id"] == tid]
        assert written["metrics"]["confirmed_val_robust_acc"] == pytest.approx(r["confirmed_val_robust_acc"])
        assert written["metrics"]["confirmed_seeds"] == 2
        assert written["metrics"]["confirmed_lift"] == pytest.approx(r["confirmed_lift"])


def test_mlflow_parent_and_children_match_the_search(smoke):
    client, parents, children = mlflow_runs(smoke["storage"])
    (parent,) = parents
    assert parent.info.status == "FINISHED" and parent.data.tags["defense"] == "smd"
    assert parent.data.tags["objectives"] == "val_clean_acc,val_robust_acc" and parent.data.params["sampler"] == "tpe"
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"pareto.csv", "pareto.json", "pareto.png", "search_space.yaml", "exported", "trials.csv"} <= artifacts
    front = {r["trial_id"] for r in json.loads((smoke["exp"] / "pareto.json").read_text())["front"]}
    assert parent.data.metrics["front_size"] == len(front)
    assert parent.data.metrics["hypervolume"] == pytest.approx(
        json.loads((smoke["exp"] / "pareto.json").read_text())["hypervolume"]
    )
    rows = {r["trial_id"]: r for r in read_rows(smoke["exp"])}
    assert sorted(c.data.tags["tune_div.trial_id"] for c in children) == sorted(rows)  # one to one
    for c in children:
        tid = c.data.tags["tune_div.trial_id"]
        assert c.data.tags["mlflow.parentRunId"] == parent.info.run_id and c.info.status == "FINISHED"
        assert c.data.tags["pareto"] == ("true" if tid in front else "false")
        assert float(c.data.params["hparams.lam"]) == json.loads(rows[tid]["hparams"])["lam"]
        assert c.data.metrics["final_val_robust_acc"] == pytest.approx(float(rows[tid]["val_robust_acc"]))
        for suffix in ("_n", "_ci_low", "_ci_high"):  # the interval beside it, in MLflow too
            key = f"val_robust_acc{suffix}"
            assert c.data.metrics[f"final_{key}"] == pytest.approx(float(rows[tid][key]))
        assert [m.step for m in client.get_metric_history(c.info.run_id, "val_clean_acc")] == [1]
        assert [a.path for a in client.list_artifacts(c.info.run_id)] == ["config.yaml"]


def test_the_experiment_is_model_training_and_the_parent_describes_its_front(smoke):
    """What MLflow's UI reads: the experiment kind, and the front as the parent's Markdown description,
    each front member linked to its own run, the knee marked, the baseline as the last row."""
    client, parents, children = mlflow_runs(smoke["storage"])
    exp = client.get_experiment_by_name("smd-mnist")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    assert "Pareto front" in exp.tags["mlflow.note.content"]
    note = parents[0].data.tags["mlflow.note.content"]
    doc = json.loads((smoke["exp"] / "pareto.json").read_text())
    run_of = {c.data.tags["tune_div.trial_id"]: c.info.run_id for c in children}
    table = [ln for ln in note.splitlines() if ln.startswith("| ")]
    assert table[0].split("|")[1:-1] == [
        " trial ",
        " clean ",
        " robust (95%) ",
        " proxy ",
        " lift over naive ",
        " confirmed robust, test lift (seeds) ",  # the smoke search is seed-confirmed
        " hyperparameters ",
    ]
    body = table[1:]
    off = [r for r in doc["confirmed"] if not r["pareto"]]  # confirmed from just off the front
    assert len(body) == len(doc["front"]) + len(off) + 1 and body[-1].startswith("| naive baseline |")
    for r in doc["front"] + off:
        (row,) = [ln for ln in body if f"[{r['trial_id']}]" in ln]
        assert f"(#/experiments/{exp.experiment_id}/runs/{run_of[r['trial_id']]}?workflowType=machine_learning)" in row
        robust = f"| {r['val_robust_acc']:.4f} [{r['val_robust_acc_ci_low']:.3f}, {r['val_robust_acc_ci_high']:.3f}] |"
        assert robust in row and f"| {r['val_clean_acc']:.4f} |" in row
        assert ("**knee**" in row) == (r["trial_id"] == doc["knee"])
        assert ("(off the front)" in row) == (not r["pareto"])
    for r in doc["confirmed"]:
        (row,) = [ln for ln in body if f"[{r['trial_id']}]" in ln]
        assert f"| {r['confirmed_val_robust_acc']:.4f} ± {r['confirmed_val_robust_acc_std']:.3f}, " in row
        assert row.split("|")[6].strip().endswith("(2)")


def test_the_optuna_study_carries_names_runs_and_the_audit(smoke):
    """What optuna-dashboard shows: objective names, and per trial its MLflow run, flags, audit and proxy."""
    _, _, children = mlflow_runs(smoke["storage"])
    run_of = {c.data.tags["tune_div.trial_id"]: c.info.run_id for c in children}
    rows = {r["trial_id"]: r for r in read_rows(smoke["exp"])}
    study = optuna.load_study(study_name="e2e", storage=f"sqlite:///{smoke['exp'] / 'optuna.db'}")
    assert study.metric_names == ["val_clean_acc", "val_robust_acc"]
    assert study.user_attrs["mlflow_experiment"] == "smd-mnist" and study.user_attrs["defense"] == "smd"
    assert len(study.trials) == len(rows)
    for t in study.trials:
        tid = t.user_attrs["ray_trial_id"]
        assert t.user_attrs["mlflow_run_id"] == run_of[tid]
        assert t.user_attrs["flags"] == rows[tid]["flags"]
        for key in ("val_audit_acc", "val_proxy_acc"):
            assert t.user_attrs[key] == pytest.approx(float(rows[tid][key]))
            low, high, n = (rows[tid][f"{key}{suffix}"] for suffix in ("_ci_low", "_ci_high", "_n"))
            assert t.user_attrs[f"{key}_95ci"] == f"[{float(low):.3f}, {float(high):.3f}] of {n}"
    doc = json.loads((smoke["exp"] / "pareto.json").read_text())
    assert sorted(study.user_attrs["confirmed"]) == sorted(r["trial_id"] for r in doc["confirmed"])
    assert study.user_attrs["confirmed_knee"] == doc["knee"]
    for r in doc["confirmed"]:
        assert f"robust {r['confirmed_val_robust_acc']:.4f} ± " in study.user_attrs["confirmed"][r["trial_id"]]


def test_export_from_mlflow_alone_and_retrain_reproduces_the_trial(smoke, real_data, tmp_path, capsys):
    import shutil

    import yaml

    from tune_div.cli import export, train

    hidden = tmp_path / "ray_results_moved_away"
    shutil.move(str(smoke["exp"]), hidden)  # export must not need the Ray results
    try:
        assert (
            export.main(
                ["--experiment", "smd-mnist", "--storage", str(smoke["storage"]), "--out", str(tmp_path / "cfg")]
            )
            == 0
        )
    finally:
        shutil.move(str(hidden), smoke["exp"])
    best = yaml.safe_load((tmp_path / "cfg" / "best_robust.yaml").read_text())
    assert set(best) >= {
        "defense",
        "dataset",
        "arch",
        "n_members",
        "hparams",
        "train",
        "objective",
        "metrics",
        "source",
    }
    assert best["source"]["experiment"] == "smd-mnist" and best["source"]["run_id"]
    assert (tmp_path / "cfg" / "knee.yaml").is_file() and list((tmp_path / "cfg").glob("pareto_*.yaml"))
    out = tmp_path / "r.json"
    assert (
        train.main(
            ["--config", str(tmp_path / "cfg" / "best_robust.yaml"), "--data-dir", str(real_data), "--out", str(out)]
        )
        == 0
    )
    got = json.loads(out.read_text())["metrics"]
    for key in ("val_clean_acc", "val_robust_acc", "test_clean_acc", "test_robust_acc"):
        assert got[key] == best["metrics"][key], key  # same seed, same threads: the same numbers on CPU
    for key in ("val_robust_acc", "test_robust_acc"):  # with their points and 95% intervals, retrained or not
        n = best["metrics"][f"{key}_n"]
        assert isinstance(n, int) and got[f"{key}_n"] == n
        assert (
            got[f"{key}_ci_low"]
            == pytest.approx(best["metrics"][f"{key}_ci_low"])
            == wilson(round(best["metrics"][key] * n), n).low
        )
    assert "audit_lift_p" in best["metrics"]
    # --clean-floor on export keeps the front of the trials at or above it.
    rows = [r for r in read_rows(smoke["exp"]) if not r["flags"]]
    floor = sorted(float(r["val_clean_acc"]) for r in rows)[len(rows) // 2]
    above = {
        r["trial_id"]: (float(r["val_clean_acc"]), float(r["val_robust_acc"]))
        for r in rows
        if float(r["val_clean_acc"]) >= floor
    }
    expected = {
        t for t, p in above.items() if not any(q[0] >= p[0] and q[1] >= p[1] and q != p for q in above.values())
    }
    assert (
        export.main(
            [
                "--experiment",
                "smd-mnist",
                "--storage",
                str(smoke["storage"]),
                "--clean-floor",
                str(floor),
                "--out",
                str(tmp_path / "floor"),
            ]
        )
        == 0
    )
    assert {p.stem[len("pareto_") :] for p in (tmp_path / "floor").glob("pareto_*.yaml")} == expected
    with pytest.raises(SystemExit):
        export.main(
            [
                "--experiment",
                "smd-mnist",
                "--storage",
                str(smoke["storage"]),
                "--clean-floor",
                "0.999",
                "--out",
                str(tmp_path / "none"),
            ]
        )
    assert "at --clean-floor 0.999" in capsys.readouterr().err
    client, _, _ = mlflow_runs(smoke["storage"])
    version = client.get_model_version_by_alias("smd-mnist", "best-robust")
    retrain = client.get_run(version.run_id)
    assert retrain.data.tags["tune_div.source_run_id"] == best["source"]["run_id"]


def test_ui_serves_the_store_and_stops_on_ctrl_c(smoke, free_port):
    import urllib.request

    port = free_port
    p = subprocess.Popen(
        [sys.executable, "-m", "tune_div.ui", "--storage", str(smoke["storage"]), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
    )
    try:
        line = p.stdout.readline()
        assert f"http://127.0.0.1:{port}" in line, line
        _, parents, _ = mlflow_runs(smoke["storage"])
        body = json.dumps({"experiment_ids": [parents[0].info.experiment_id], "max_results": 100}).encode()
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/2.0/mlflow/runs/search",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        runs = json.loads(urllib.request.urlopen(req, timeout=30).read())["runs"]
        assert parents[0].info.run_id in {r["info"]["run_id"] for r in runs}
    finally:
        p.send_signal(signal.SIGINT)
        rest = p.communicate(timeout=60)[0]
    assert p.returncode == 0 and "MLflow UI stopped" in rest


def test_cross_search_comparison(smoke, tmp_path):
    sys.path.insert(0, str(REPO / "analysis"))
    try:
        import compare_fronts
    finally:
        sys.path.pop(0)
    table = compare_fronts.compare(f"sqlite:///{smoke['storage'] / 'mlflow.db'}", ["smd-mnist"], tmp_path / "cmp")
    assert table[0]["hypervolume"] > 0 and (tmp_path / "cmp" / "fronts.png").is_file()
    # above the naive baseline: the same front, the reference raised to the baseline's robust accuracy
    doc = json.loads((smoke["exp"] / "pareto.json").read_text())
    base = doc["naive_baseline"]["val_robust_acc"]
    assert table[0]["baseline_robust"] == pytest.approx(base)
    points = [(r["val_clean_acc"], r["val_robust_acc"]) for r in doc["front"]]
    # the search's own uses its clean floor as the reference's clean value; the comparison, given none, 0
    assert doc["lift_hypervolume"] == pytest.approx(pareto.lift_hypervolume(points, base, FLOOR))
    assert table[0]["lift_hypervolume"] == pytest.approx(pareto.lift_hypervolume(points, base), abs=1e-6)
    assert doc["lift_hypervolume"] < doc["hypervolume"]
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{smoke['storage'] / 'mlflow.db'}")
    exp = client.get_experiment_by_name("comparisons")
    assert client.search_runs([exp.experiment_id])


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["--experiment", "smd-mnist", "--storage", "/no/such", "--out", "x"], "no MLflow store"),
        (["--experiment", "nope-mnist", "--storage", "STORE", "--out", "x"], "no MLflow experiment 'nope-mnist'"),
        (["--run-id", "0123", "--storage", "STORE", "--out", "x"], "no MLflow run 0123"),
    ],
)
def test_export_bad_input(argv, needle, smoke, tmp_path, capsys, monkeypatch):
    from tune_div.cli import export

    monkeypatch.chdir(tmp_path)
    argv = [str(smoke["storage"]) if a == "STORE" else a for a in argv]
    with pytest.raises(SystemExit) as exc:
        export.main(argv)
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and needle in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_a_diverging_trial_fails_alone_with_its_reason(ray_session, real_data, tmp_path, capsys):
    rc, out = run_search(
        [
            "smd",
            "--budget",
            "smoke",
            "--samples",
            "4",
            "--concurrency",
            "2",
            "--epochs",
            "1",
            "--inject-nan-if",
            "lam>1.5",
            "--subset",
            "1000",
            "--audit",
            "off",
            "--data-dir",
            str(real_data),
            "--storage-path",
            str(tmp_path),
            "--experiment",
            "nan",
        ],
        capsys,
    )
    assert rc == 0, out.err
    rows = read_rows(tmp_path / "nan")
    failed = [r for r in rows if r["status"] == "ERROR"]
    finished = [r for r in rows if r["status"] == "TERMINATED"]
    assert len(rows) == 4 and failed and finished
    assert all(json.loads(r["hparams"])["lam"] > 1.5 for r in failed)
    assert all(json.loads(r["hparams"])["lam"] <= 1.5 for r in finished)
    assert all("became nan at epoch 1" in r["error"] for r in failed)
    assert "FAILED" in out.out
    study = optuna.load_study(study_name="nan", storage=f"sqlite:///{tmp_path / 'nan' / 'optuna.db'}")
    assert sum(t.state == optuna.trial.TrialState.FAIL for t in study.trials) == len(failed)
    _, _, children = mlflow_runs(tmp_path)
    by_trial = {c.data.tags["tune_div.trial_id"]: c for c in children}
    for r in failed:
        run = by_trial[r["trial_id"]]
        assert run.info.status == "FAILED" and "became nan" in run.data.tags["tune_div.error"]
    assert all(by_trial[r["trial_id"]].info.status == "FINISHED" for r in finished)


@pytest.mark.slow  # 16 real trials at once on 2 cores, about 2.5 minutes: out of the default run's time
def test_fractional_gpus_run_sixteen_trials_at_once(ray_session, real_data, tmp_path, capsys):
    rc, out = run_search(
        [
            "naive",
            "--budget",
            "smoke",
            "--samples",
            "16",
            "--epochs",
            "1",
            "--audit",
            "off",
            "--gpus",
            "8",
            "--gpus-per-trial",
            "0.5",
            "--data-dir",
            str(real_data),
            "--storage-path",
            str(tmp_path),
            "--experiment",
            "gpu",
            "--quiet",
        ],
        capsys,
    )
    assert rc == 0, out.err
    intervals = []
    for line_dir in (tmp_path / "gpu").iterdir():
        result = line_dir / "result.json"
        if result.is_file():
            r = json.loads(result.read_text().splitlines()[-1])
            intervals.append((r["timestamp"] - r["time_total_s"], r["timestamp"]))
    assert len(intervals) == 16
    latest_start = max(s for s, _ in intervals)
    assert all(end > latest_start for _, end in intervals)  # all 16 were running at the same moment


def test_gpus_on_a_machine_without_any_is_a_clear_error(real_data, tmp_path):
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "tune_div.search",
            "smd",
            "--budget",
            "smoke",
            "--gpus",
            "8",
            "--data-dir",
            str(real_data),
            "--storage-path",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert p.returncode == 2
    last = p.stderr.strip().splitlines()[-1]
    assert "asked for 8 GPUs but the cluster has 0 GPU(s)" in last and "Traceback" not in p.stderr
    assert not (tmp_path / "out").exists()


def test_interrupted_search_resumes_without_rerunning_finished_trials(real_data, tmp_path):
    exp = tmp_path / "res" / "sig"
    cmd = [
        sys.executable,
        "-m",
        "tune_div.search",
        "smd",
        "--budget",
        "smoke",
        "--samples",
        "3",
        "--concurrency",
        "1",
        "--epochs",
        "1",
        "--subset",
        "1000",
        "--audit",
        "off",  # what is resumed is the search, not what it measures
        "--data-dir",
        str(real_data),
        "--storage-path",
        str(tmp_path / "res"),
        "--experiment",
        "sig",
    ]
    # stopped as the first trial ends (its MLflow run may not be closed yet): no export, no error, and it resumes
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
    for line in p.stdout:
        if "  epoch 1/1  " in line:
            p.send_signal(signal.SIGINT)
            break
    rest = p.communicate(timeout=300)[0]
    assert p.returncode == 130 and "Traceback" not in rest, rest[-2000:]
    assert "nothing exported yet" in rest and "--resume" in rest
    assert not (exp / "exported").exists()
    resume = [sys.executable, "-m", "tune_div.search", "--resume", str(exp)]
    p = subprocess.Popen(resume, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
    first = None
    for line in p.stdout:
        if line.rstrip().endswith("] finished"):
            first = line.split("]")[0].lstrip("[")
            p.send_signal(signal.SIGINT)
            break
    rest = p.communicate(timeout=300)[0]
    assert first and p.returncode == 130, rest[-2000:]
    assert "--resume" in rest
    before = {
        d.name: len((d / "result.json").read_text().splitlines())
        for d in exp.iterdir()
        if (d / "result.json").is_file()
    }
    q = subprocess.run(
        resume,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )
    assert q.returncode == 0, q.stdout[-2000:] + q.stderr[-2000:]
    rows = read_rows(exp)
    assert len(rows) == 3 and all(r["status"] == "TERMINATED" for r in rows)
    assert f"[{first}] epoch" not in q.stdout  # the finished trial did not train again
    first_dir = next(d for d in exp.iterdir() if first in d.name)
    # (2 lines when that trial is the one the first stop cut short, as its epoch 1 ended: it reported again)
    assert len((first_dir / "result.json").read_text().splitlines()) == before[first_dir.name]
    client, parents, children = mlflow_runs(tmp_path / "res")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"  # the same parent continued
    assert sorted(c.data.tags["tune_div.trial_id"] for c in children) == sorted(r["trial_id"] for r in rows)
    assert all(c.info.status == "FINISHED" for c in children)  # no duplicate, none left RUNNING
    for c in children:
        steps = [m.step for m in client.get_metric_history(c.info.run_id, "val_clean_acc")]
        assert steps == sorted(set(steps))  # no epoch logged twice


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["bogus"], "unknown defense 'bogus'"),
        (["smd", "--samples", "-1"], "--samples=-1 is not valid; expected an integer >= 1"),
        (["smd", "--space", "SPACE"], "inverted range"),
        (["smd", "--data-dir", "/no/such/dir"], "does not exist"),
        (["smd", "--address", "127.0.0.1:1"], "cannot reach a Ray cluster at 127.0.0.1:1"),
        (["smd", "--gpus-per-trial", "0.5"], "needs --gpus > 0"),
        (["smd", "--gpus", "9"], "asked for 9 GPUs but the cluster has 8"),
        (["smd", "--clean-floor", "97"], "--clean-floor=97.0 is not valid; expected a number in [0, 1]"),
        (["smd", "--sampler", "cmaes"], "invalid choice"),
        (["smd", "--execution", "fast"], "invalid choice: 'fast'"),
        (["smd", "--inject-nan-if", "gamma>1"], "not a searched hyperparameter"),
        (["--resume", "/no/such/experiment"], "not a tune_div experiment folder"),
        ([], "name the defense"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(argv, needle, ray_session, tmp_path, capsys, monkeypatch):
    space = tmp_path / "space.yaml"
    space.write_text("defense: smd\nparams:\n  lam: {type: float, low: 2.0, high: 1.0}\n")
    argv = [str(space) if a == "SPACE" else a for a in argv]
    out = tmp_path / "out"
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        search.main(argv + ["--storage-path", str(out)])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and needle in err and len(err.splitlines()) == 1, err
    assert not out.exists()


def test_execution_reaches_every_trials_training_config(tmp_path):
    from tune_div.search.settings import base_config

    for argv, expected in (([], "auto"), (["--execution", "fused"], "fused"), (["--execution", "looped"], "looped")):
        args = search.build_parser().parse_args(["smd", "--storage-path", str(tmp_path), *argv])
        s = search.settings_from(args)
        assert s.execution == expected
        assert base_config(s).train_config().execution == expected
    assert not any(tmp_path.iterdir())  # settings are built without writing anything


def test_existing_experiment_is_not_overwritten(ray_session, tmp_path, capsys):
    exp = tmp_path / "keep"
    exp.mkdir()
    (exp / "precious.txt").write_text("x")
    with pytest.raises(SystemExit) as exc:
        search.main(["smd", "--storage-path", str(tmp_path), "--experiment", "keep"])
    assert exc.value.code == 2 and "--resume" in capsys.readouterr().err
    assert [p.name for p in exp.iterdir()] == ["precious.txt"]


def test_a_trials_black_box_objective_is_the_transfer_from_the_cached_surrogate(real_data, trained_ensemble, tmp_path):
    """What a trial reports as ``val_blackbox_acc`` (the search test below runs it through Ray, in the slow
    set): the accuracy on the examples crafted once on the surrogate, read back by every later trial."""
    from tune_div.eval import Surrogate, surrogate_config
    from tune_div.search.trainable import SubsetAttack, TransferObjective, epoch_metrics
    from tune_div.search.trial_config import Blackbox
    from tune_div.train import TrainConfig

    sur = Surrogate(
        surrogate_config({"arch": "lenet5", "n_members": 2}, "mnist", 1, 1000, 2000, str(real_data)), tmp_path
    )
    sur.model()
    spec = {"attack": "pgd", "eps": 0.1, "n": 60, "seed": 0}
    proxy = SubsetAttack(TrainConfig(defense="naive", data_dir=str(real_data)), spec)
    blackbox = Blackbox(sur.cfg.to_dict(), str(tmp_path))
    out = epoch_metrics(trained_ensemble, spec, proxy, TransferObjective(blackbox, proxy, "k"), 0, False)
    (crafted,) = (sur.folder / "adv").iterdir()
    blob = torch.load(crafted, weights_only=True)
    assert torch.equal(blob["y"], proxy.y)
    with torch.no_grad():
        by_hand = (trained_ensemble(blob["x_adv"]).argmax(1) == proxy.y).float().mean().item()
    assert out["val_blackbox_acc"] == pytest.approx(by_hand)
    assert out["val_blackbox_acc"] > out["val_proxy_acc"]  # a transfer is weaker than the white-box attack
    stamp = crafted.stat().st_mtime_ns
    later = TransferObjective(blackbox, proxy, "k")  # the next trial: loads, crafts nothing
    assert later(trained_ensemble) == out["val_blackbox_acc"] and not later.surrogate.trained_now
    assert crafted.stat().st_mtime_ns == stamp and len(list((sur.folder / "adv").iterdir())) == 1


@pytest.mark.slow
def test_black_box_objective_uses_one_cached_surrogate(ray_session, real_data, tmp_path, capsys):
    rc, out = run_search(
        [
            "smd",
            "--budget",
            "smoke",
            "--samples",
            "2",
            "--concurrency",
            "2",
            "--epochs",
            "1",
            "--objective",
            "both",
            "--data-dir",
            str(real_data),
            "--storage-path",
            str(tmp_path),
            "--experiment",
            "bb",
        ],
        capsys,
    )
    assert rc == 0, out.err
    rows = read_rows(tmp_path / "bb")
    assert all(0.0 <= float(r["val_blackbox_acc"]) <= 1.0 for r in rows)
    assert out.out.count("training the black-box surrogate once") <= 1  # by the driver, never per trial
    study = optuna.load_study(study_name="bb", storage=f"sqlite:///{tmp_path / 'bb' / 'optuna.db'}")
    assert all(len(t.values) == 3 for t in study.trials if t.values)
    surrogates = list((Path(os.environ["TUNE_DIV_CACHE"]) / "surrogates").iterdir())
    assert any((d / "model.pt").is_file() and list((d / "adv").iterdir()) for d in surrogates)


LR_SPACE = "defense: naive\nparams: {}\ntrain:\n  lr: {enabled: true, low: 1.0e-5, high: 1.0e-2}\n"


def replay_scheduler(exp: Path) -> dict:
    """The scheduler's records, checked decision by decision against the promotion rule."""
    from tune_div.search.scheduler import promoted

    doc = yaml.safe_load((exp / "scheduler.yaml").read_text())
    for rung, records in doc["records"].items():
        seen: dict = {}
        for tid, point in records.items():  # arrival order
            seen[tid] = point
            assert promoted(tid, seen, doc["reduction_factor"]) == (doc["decisions"][tid][rung] == "CONTINUE")
    return doc


def test_moasha_stops_dominated_trials_at_rungs(ray_session, real_data, tmp_path, capsys):
    space = tmp_path / "lr.yaml"
    space.write_text(LR_SPACE)
    rc, out = run_search(
        [
            "naive",
            "--space",
            str(space),
            "--budget",
            "smoke",
            "--samples",
            "6",
            "--epochs",
            "4",
            "--subset",
            "2000",
            "--concurrency",
            "2",
            "--audit",
            "off",
            "--data-dir",
            str(real_data),
            "--storage-path",
            str(tmp_path),
            "--experiment",
            "asha",
        ],
        capsys,
    )
    assert rc == 0, out.err
    exp = tmp_path / "asha"
    doc = replay_scheduler(exp)
    assert doc["rungs"] == [1, 3]
    rows = {r["trial_id"]: r for r in read_rows(exp)}
    stopped = {t: e for t, e in doc["stopped"].items()}
    assert stopped  # six trials, two rungs: somebody is dominated
    for tid, r in rows.items():
        epochs = [
            json.loads(line)["epoch"]
            for d in exp.glob(f"*{tid}*")
            for line in (d / "result.json").read_text().splitlines()
        ]
        if tid in stopped:
            assert r["status"] == f"STOPPED@{stopped[tid]}" and max(epochs) == stopped[tid]
            assert f"[{tid}] STOPPED@{stopped[tid]}" in out.out
        else:
            assert r["status"] == "TERMINATED" and max(epochs) == 4
    front = json.loads((exp / "pareto.json").read_text())["front"]
    assert front and all(rows[r["trial_id"]]["status"] == "TERMINATED" for r in front)  # only complete trials
    study = optuna.load_study(study_name="asha", storage=f"sqlite:///{exp / 'optuna.db'}")
    states = {t.user_attrs["ray_trial_id"]: t.state.name for t in study.trials}
    assert states == {t: ("PRUNED" if t in stopped else "COMPLETE") for t in rows}
    _, _, children = mlflow_runs(tmp_path, "naive-mnist")
    for c in children:
        tid = c.data.tags["tune_div.trial_id"]
        assert c.info.status == "FINISHED"
        assert c.data.tags.get("tune_div.stopped_at") == (str(stopped[tid]) if tid in stopped else None)
    assert f"{len(stopped)} stopped at a rung" in out.out


@pytest.mark.slow  # 1.5 minutes; the default run resumes an interrupted search (FIFO) and tests MO-ASHA's rungs
def test_moasha_resume_after_ctrl_c_keeps_rungs_and_stopped_trials(real_data, tmp_path):
    space = tmp_path / "lr.yaml"
    space.write_text(LR_SPACE)
    exp = tmp_path / "res" / "asha"
    cmd = [
        sys.executable,
        "-m",
        "tune_div.search",
        "naive",
        "--space",
        str(space),
        "--budget",
        "smoke",
        "--samples",
        "5",
        "--epochs",
        "4",
        "--subset",
        "2000",
        "--concurrency",
        "1",
        "--audit",
        "off",
        "--data-dir",
        str(real_data),
        "--storage-path",
        str(tmp_path / "res"),
        "--experiment",
        "asha",
    ]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
    stopped_first = None
    for line in p.stdout:
        if "STOPPED@" in line:
            stopped_first = line.split("]")[0].lstrip("[")
            p.send_signal(signal.SIGINT)
            break
    rest = p.communicate(timeout=300)[0]
    assert stopped_first and p.returncode == 130, rest[-2000:]
    before = replay_scheduler(exp)
    stopped_dir = next(d for d in exp.iterdir() if stopped_first in d.name)
    lines_before = (stopped_dir / "result.json").read_text()
    q = subprocess.run(
        [sys.executable, "-m", "tune_div.search", "--resume", str(exp)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )
    assert q.returncode == 0, q.stdout[-2000:] + q.stderr[-2000:]
    after = replay_scheduler(exp)
    for rung, records in before["records"].items():  # no rung forgotten, no decision changed
        assert list(after["records"][rung])[: len(records)] == list(records)
    assert set(before["stopped"]).issubset(after["stopped"])
    assert (stopped_dir / "result.json").read_text() == lines_before  # the stopped trial did not run again
    assert f"[{stopped_first}] epoch" not in q.stdout
    rows = read_rows(exp)
    assert len(rows) == 5 and all(r["status"] == "TERMINATED" or r["status"].startswith("STOPPED@") for r in rows)
    study = optuna.load_study(study_name="asha", storage=f"sqlite:///{exp / 'optuna.db'}")
    assert {t.state.name for t in study.trials} <= {"COMPLETE", "PRUNED"}  # nothing left RUNNING


def _logging_tree() -> dict[str, tuple]:
    import logging

    tree = {"": (tuple(logging.root.handlers), logging.root.level)}
    for name, lg in list(logging.root.manager.loggerDict.items()):
        if isinstance(lg, logging.Logger):
            tree[name] = (tuple(lg.handlers), lg.level, lg.propagate, lg.disabled)
    return tree


def test_a_search_called_in_process_leaves_the_environment_and_logging_as_they_were(
    ray_session, real_data, tmp_path, monkeypatch
):
    """``runner.run`` sets Tune's variables and quiets Ray's, MLflow's and Optuna's loggers for the search
    only: afterwards ``os.environ`` and every logger that existed before are exactly as they were."""
    import logging
    import os

    import mlflow  # noqa: F401  (imported first: what the libraries do on import is not the search's doing)
    import optuna
    from ray import tune  # noqa: F401

    from tune_div.search import runner

    monkeypatch.setenv("TUNE_GLOBAL_CHECKPOINT_S", "7")  # a user's own value survives
    monkeypatch.delenv("TUNE_DISABLE_STRICT_METRIC_CHECKING", raising=False)
    logging.getLogger("ray.tune").addHandler(user_handler := logging.NullHandler())
    optuna.logging.set_verbosity(optuna.logging.INFO)
    argv = [
        "naive",
        "--budget",
        "smoke",
        "--samples",
        "1",
        "--epochs",
        "1",
        "--subset",
        "500",
        "--audit",
        "off",
        "--data-dir",
        str(real_data),
        "--storage-path",
        str(tmp_path),
        "--experiment",
        "inproc",
    ]
    s = search.settings_from(search.build_parser().parse_args(argv))
    env, tree = dict(os.environ), _logging_tree()
    seen = {}

    def spy(*args, **kwargs):  # what the trials' driver sees while the search runs
        seen.update({k: os.environ.get(k) for k in ("TUNE_DISABLE_STRICT_METRIC_CHECKING", "TUNE_GLOBAL_CHECKPOINT_S")})
        seen["ray_handlers"] = list(logging.getLogger("ray").handlers)
        return real_collect(*args, **kwargs)

    real_collect = runner.collect
    monkeypatch.setattr(runner, "collect", spy)
    outcome = runner.run(s, quiet=True)
    assert [r["status"] for r in outcome.rows] == ["TERMINATED"] and not outcome.interrupted
    assert seen["TUNE_DISABLE_STRICT_METRIC_CHECKING"] == "1" and seen["TUNE_GLOBAL_CHECKPOINT_S"] == "7"
    assert any(isinstance(h, logging.FileHandler) for h in seen["ray_handlers"])  # quieted during the run
    assert dict(os.environ) == env
    after = _logging_tree()
    assert {name: after[name] for name in tree} == tree
    assert user_handler in logging.getLogger("ray.tune").handlers
    assert optuna.logging.get_verbosity() == optuna.logging.INFO
