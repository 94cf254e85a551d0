"""The search end to end with a real local Ray, real Optuna and real MNIST subsets."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from tune_div import search

pytestmark = pytest.mark.usefixtures("real_data")
REPO = Path(__file__).resolve().parents[1]


def run_search(argv, capsys):
    rc = search.main(argv)
    return rc, capsys.readouterr()


def read_rows(path: Path) -> list[dict]:
    with open(path / "trials.csv") as fh:
        return list(csv.DictReader(fh))


def test_smoke_search_prints_the_brute_force_front(ray_session, real_data, tmp_path, capsys):
    rc, out = run_search(["smd", "--budget", "smoke", "--samples", "3", "--concurrency", "2", "--epochs", "1",
                          "--data-dir", str(real_data), "--storage-path", str(tmp_path), "--experiment", "e2e"], capsys)
    assert rc == 0, out.err
    exp = tmp_path / "e2e"
    rows = read_rows(exp)
    assert len(rows) == 3 and all(r["status"] == "TERMINATED" for r in rows)
    ok = [r for r in rows if not r["flags"]]
    pts = {r["trial_id"]: (float(r["val_clean_acc"]), float(r["val_robust_acc"])) for r in ok}
    brute = {t for t, p in pts.items() if not any(q[0] >= p[0] and q[1] >= p[1] and q != p for q in pts.values())}
    table = out.out.split("Pareto front")[1].split("written:")[0]
    printed = {line.split()[0] for line in table.splitlines()[2:] if line.strip()}
    assert printed == brute and brute
    doc = json.loads((exp / "pareto.json").read_text())
    assert {r["trial_id"] for r in doc["front"]} == brute and doc["hypervolume"] > 0
    assert json.loads(rows[0]["hparams"]).keys() == {"lam"}
    assert any(json.loads(r["hparams"])["lam"] == 1.0 for r in rows)  # the paper point is evaluated
    # The Optuna study alone rebuilds the same objective values, without Ray.
    study = optuna.load_study(study_name="e2e", storage=f"sqlite:///{exp / 'optuna.db'}")
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert sorted(tuple(round(v, 6) for v in t.values) for t in done) == \
        sorted((round(float(r["val_clean_acc"]), 6), round(float(r["val_robust_acc"]), 6)) for r in rows)
    assert "epoch 1/1" in out.out and "test clean" in out.out


def test_a_diverging_trial_fails_alone_with_its_reason(ray_session, real_data, tmp_path, capsys):
    rc, out = run_search(["smd", "--budget", "smoke", "--samples", "4", "--concurrency", "2", "--epochs", "1",
                          "--inject-nan-if", "lam>1.5", "--data-dir", str(real_data), "--storage-path", str(tmp_path),
                          "--experiment", "nan"], capsys)
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


def test_fractional_gpus_run_sixteen_trials_at_once(ray_session, real_data, tmp_path, capsys):
    rc, out = run_search(["naive", "--budget", "smoke", "--samples", "16", "--epochs", "1", "--gpus", "8",
                          "--gpus-per-trial", "0.5", "--data-dir", str(real_data), "--storage-path", str(tmp_path),
                          "--experiment", "gpu", "--quiet"], capsys)
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
    p = subprocess.run([sys.executable, "-m", "tune_div.search", "smd", "--budget", "smoke", "--gpus", "8",
                        "--data-dir", str(real_data), "--storage-path", str(tmp_path / "out")],
                       capture_output=True, text=True, cwd=REPO, timeout=300)
    assert p.returncode == 2
    last = p.stderr.strip().splitlines()[-1]
    assert "asked for 8 GPUs but the cluster has 0 GPU(s)" in last and "Traceback" not in p.stderr
    assert not (tmp_path / "out").exists()


def test_interrupted_search_resumes_without_rerunning_finished_trials(real_data, tmp_path):
    exp = tmp_path / "res" / "sig"
    cmd = [sys.executable, "-m", "tune_div.search", "smd", "--budget", "smoke", "--samples", "3", "--concurrency", "1",
           "--epochs", "1", "--data-dir", str(real_data), "--storage-path", str(tmp_path / "res"), "--experiment", "sig"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
    first = None
    for line in p.stdout:
        if line.rstrip().endswith("] finished"):
            first = line.split("]")[0].lstrip("[")
            p.send_signal(signal.SIGINT)
            break
    rest = p.communicate(timeout=300)[0]
    assert first and p.returncode == 130, rest[-2000:]
    assert "--resume" in rest
    before = {d.name: len((d / "result.json").read_text().splitlines()) for d in exp.iterdir() if (d / "result.json").is_file()}
    q = subprocess.run([sys.executable, "-m", "tune_div.search", "--resume", str(exp)], capture_output=True, text=True,
                       cwd=REPO, timeout=600)
    assert q.returncode == 0, q.stdout[-2000:] + q.stderr[-2000:]
    rows = read_rows(exp)
    assert len(rows) == 3 and all(r["status"] == "TERMINATED" for r in rows)
    assert f"[{first}] epoch" not in q.stdout  # the finished trial did not train again
    first_dir = next(d for d in exp.iterdir() if first in d.name)
    assert len((first_dir / "result.json").read_text().splitlines()) == before[first_dir.name] == 1


@pytest.mark.parametrize("argv,needle", [
    (["bogus"], "unknown defense 'bogus'"),
    (["smd", "--samples", "-1"], "--samples must be at least 1"),
    (["smd", "--space", "SPACE"], "inverted range"),
    (["smd", "--data-dir", "/no/such/dir"], "does not exist"),
    (["smd", "--address", "127.0.0.1:1"], "cannot reach a Ray cluster at 127.0.0.1:1"),
    (["smd", "--gpus-per-trial", "0.5"], "needs --gpus > 0"),
    (["smd", "--gpus", "9"], "asked for 9 GPUs but the cluster has 8"),
    (["smd", "--clean-floor", "97"], "accuracy in [0, 1]"),
    (["smd", "--sampler", "cmaes"], "invalid choice"),
    (["smd", "--inject-nan-if", "gamma>1"], "not a searched hyperparameter"),
    (["--resume", "/no/such/experiment"], "not a tune_div experiment folder"),
    ([], "name the defense"),
])
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


def test_existing_experiment_is_not_overwritten(ray_session, tmp_path, capsys):
    exp = tmp_path / "keep"
    exp.mkdir()
    (exp / "precious.txt").write_text("x")
    with pytest.raises(SystemExit) as exc:
        search.main(["smd", "--storage-path", str(tmp_path), "--experiment", "keep"])
    assert exc.value.code == 2 and "--resume" in capsys.readouterr().err
    assert [p.name for p in exp.iterdir()] == ["precious.txt"]


def test_black_box_objective_uses_one_cached_surrogate(ray_session, real_data, tmp_path, capsys):
    rc, out = run_search(["smd", "--budget", "smoke", "--samples", "2", "--concurrency", "2", "--epochs", "1",
                          "--objective", "both", "--data-dir", str(real_data), "--storage-path", str(tmp_path),
                          "--experiment", "bb"], capsys)
    assert rc == 0, out.err
    rows = read_rows(tmp_path / "bb")
    assert all(0.0 <= float(r["val_blackbox_acc"]) <= 1.0 for r in rows)
    assert out.out.count("training the black-box surrogate once") <= 1  # by the driver, never per trial
    study = optuna.load_study(study_name="bb", storage=f"sqlite:///{tmp_path / 'bb' / 'optuna.db'}")
    assert all(len(t.values) == 3 for t in study.trials if t.values)
    surrogates = list((Path(os.environ["TUNE_DIV_CACHE"]) / "surrogates").iterdir())
    assert any((d / "model.pt").is_file() and list((d / "adv").iterdir()) for d in surrogates)
