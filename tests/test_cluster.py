"""Cluster-grade reliability with real processes: a real multi-node Ray cluster whose worker node is
removed mid-trial, a real ``kill -9`` of a real driver, a real ``mlflow server``, bad data before Ray.

Every test bounds its processes in time and stops what it started (the cluster, the server, the driver).
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("real_data")


def rows_of(exp: Path) -> dict[str, dict]:
    with open(exp / "trials.csv") as fh:
        return {r["trial_id"]: r for r in csv.DictReader(fh)}


def results_of(exp: Path, tid: str) -> list[dict]:
    """Every result line Ray wrote for trial ``tid`` (several folders if it was retried elsewhere)."""
    return [
        json.loads(line)
        for d in exp.glob(f"trainable_{tid}_*")
        if (d / "result.json").is_file()
        for line in (d / "result.json").read_text().splitlines()
    ]


def search_cmd(real_data: Path, storage: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "tune_div.search",
        "smd",
        "--budget",
        "smoke",
        "--audit",
        "off",
        "--data-dir",
        str(real_data),
        "--storage-path",
        str(storage),
        "--experiment",
        "x",
        *extra,
    ]


def assert_nothing_left_open(exp: Path, uri: str, rows: dict[str, dict], epochs: int = 2) -> None:
    """No Optuna trial RUNNING, every trial finished once in Optuna, every active MLflow child belongs to
    a trial and ended, no epoch logged twice."""
    study = optuna.load_study(study_name="x", storage=f"sqlite:///{exp / 'optuna.db'}")
    states = [t.state.name for t in study.trials]
    assert "RUNNING" not in states
    finished = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert sorted(t.user_attrs["ray_trial_id"] for t in finished) == sorted(
        tid for tid, r in rows.items() if r["status"] == "TERMINATED"
    )
    assert all("lost" in t.user_attrs for t in study.trials if t.state.name == "FAIL")
    client = MlflowClient(uri)
    exp_id = client.get_experiment_by_name("smd-mnist").experiment_id
    runs = client.search_runs([exp_id])
    parents = [r for r in runs if r.data.tags.get("tune_div.role") == "search"]
    children = [r for r in runs if r.data.tags.get("tune_div.role") == "trial"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted(c.data.tags["tune_div.trial_id"] for c in children) == sorted(rows)
    assert all(c.info.status == "FINISHED" for c in children)
    for c in children:
        steps = [m.step for m in client.get_metric_history(c.info.run_id, "val_clean_acc")]
        assert steps == list(range(1, epochs + 1)), steps  # every epoch once


def run_until(p: subprocess.Popen, predicate, timeout: float) -> list[str]:
    """Read ``p``'s output lines until ``predicate(line)``; the lines read."""
    lines, t0 = [], time.monotonic()
    for line in p.stdout:
        lines.append(line)
        if predicate(line):
            return lines
        assert time.monotonic() - t0 < timeout, "".join(lines)[-2000:]
    raise AssertionError("the search ended before the moment to act:\n" + "".join(lines)[-2000:])


def kill_mid_epoch_then_after_a_trial(real_data: Path, tmp_path: Path, *extra: str) -> tuple[Path, list[str]]:
    """First kill: mid-epoch of a trial whose epoch 1 is checkpointed. Second: right after a trial
    finished, when the next trial has just been asked from Optuna (Ray may not have recorded it yet).
    Returns the experiment folder and the resume command."""
    exp = tmp_path / "x"
    cmd = search_cmd(real_data, tmp_path, "--samples", "3", "--concurrency", "1", "--epochs", "2", *extra)
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
    try:
        first = run_until(p, lambda ln: "epoch 1/2" in ln, 240)[-1]
        killed_mid = first.split("]")[0].lstrip("[")
        time.sleep(2.5)  # its epoch-1 checkpoint is in Ray's snapshot (at most 1 s old), epoch 2 is running
        p.send_signal(signal.SIGKILL)
    finally:
        p.kill()
        p.wait(timeout=30)
    resume = [sys.executable, "-m", "tune_div.search", "--resume", str(exp)]
    q = subprocess.Popen(resume, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
    try:
        lines = run_until(q, lambda ln: ln.rstrip().endswith("] finished"), 240)
        time.sleep(0.3)
        q.send_signal(signal.SIGKILL)
    finally:
        q.kill()
        q.wait(timeout=30)
    assert not any(f"[{killed_mid}]" in ln and "epoch 1/2" in ln for ln in lines)  # continued from epoch 1
    assert any(f"[{killed_mid}]" in ln and "epoch 2/2" in ln for ln in lines), "".join(lines)
    return exp, resume


def resume_to_the_end(exp: Path, resume: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    """The last resume: it finishes every trial, cleanly, and leaves nothing open."""
    r = subprocess.run(resume, capture_output=True, text=True, cwd=REPO, timeout=400)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "Traceback" not in r.stdout + r.stderr
    rows = rows_of(exp)
    assert len(rows) == 3 and all(row["status"] == "TERMINATED" for row in rows.values())
    assert_nothing_left_open(exp, f"sqlite:///{tmp_path / 'mlflow.db'}", rows)
    return r


@pytest.mark.slow  # two minutes; its every step is the first part of the three-moment test below, also slow
def test_kill_9_of_the_driver_at_two_moments_then_resume_leaves_nothing_open(real_data, tmp_path):
    exp, resume = kill_mid_epoch_then_after_a_trial(real_data, tmp_path)
    resume_to_the_end(exp, resume, tmp_path)


@pytest.mark.slow
def test_kill_9_of_the_driver_at_three_moments_then_resume_leaves_nothing_open(real_data, tmp_path):
    """The two kills above, then a third during the seed confirmation (``--confirm 1`` of two members),
    once its first retrain has finished."""
    exp, resume = kill_mid_epoch_then_after_a_trial(real_data, tmp_path, "--confirm", "1", "--confirm-top", "2")
    c = subprocess.Popen(resume, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
    try:
        lines = run_until(c, lambda ln: "(confirmation 1 of " in ln, 400)
        c.send_signal(signal.SIGKILL)
    finally:
        c.kill()
        c.wait(timeout=30)
    done = {
        f"{p.parent.parent.name}/{p.parent.name}": p.stat().st_mtime_ns for p in exp.glob("confirm/*/*/result.json")
    }
    assert done, "".join(lines)[-2000:]  # at least the seed that said so had finished
    r = resume_to_the_end(exp, resume, tmp_path)
    # the confirmation went on where it was cut: a finished seed is read back, never trained again
    # a retrain that finished while the driver died also counts (its worker can outlive the driver briefly)
    reused = re.search(r"confirmation: (\d+) seed\(s\) finished before, read back \(not retrained\)", r.stdout)
    assert reused and int(reused.group(1)) >= len(done), r.stdout[-2000:]
    for key, stamp in done.items():
        tid, seed = key.split("/seed_")
        assert not any(f"[{tid}] seed {seed}:" in ln for ln in r.stdout.splitlines()), r.stdout[-2000:]
        assert (exp / "confirm" / key / "result.json").stat().st_mtime_ns == stamp
    confirmed = json.loads((exp / "pareto.json").read_text())["confirmed"]
    assert confirmed and all(m["confirm_seeds"] == [0, 1] for m in confirmed)
    assert not list(exp.glob("confirm/*/*/state.pt"))
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("smd-mnist").experiment_id])
    retrains = [r for r in runs if r.data.tags.get("tune_div.role") == "confirmation"]
    assert len(retrains) == len(confirmed)  # one run per (member, seed): none logged twice across the kill
    assert all(r.data.tags["tune_div.confirm_seed"] == "1" for r in retrains)
    assert all(r.info.status == "FINISHED" for r in retrains)


@pytest.fixture
def mlflow_server(tmp_path, free_port):
    """A real ``mlflow server`` on 127.0.0.1 and a free port, stopped (with its workers) at the end."""
    port = free_port
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            f"sqlite:///{tmp_path / 'server.db'}",
            "--artifacts-destination",
            str(tmp_path / "server-artifacts"),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2).read()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "mlflow server did not start"
                time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def test_search_and_export_against_a_real_mlflow_server(mlflow_server, real_data, tmp_path):
    cmd = search_cmd(
        real_data,
        tmp_path / "res",
        "--samples",
        "2",
        "--concurrency",
        "2",
        "--epochs",
        "1",
        "--subset",
        "1000",
        "--tracking-uri",
        mlflow_server,
    )
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=400)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert not (tmp_path / "res" / "mlflow.db").exists()  # the server is the store
    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name("smd-mnist")
    assert exp.artifact_location.startswith("mlflow-artifacts:")  # the server keeps the artifacts
    runs = client.search_runs([exp.experiment_id])
    children = [c for c in runs if c.data.tags.get("tune_div.role") == "trial"]
    assert len(children) == 2 and all(c.info.status == "FINISHED" for c in children)
    parent = next(c for c in runs if c.data.tags.get("tune_div.role") == "search")
    assert "pareto.json" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    out = tmp_path / "exported"
    e = subprocess.run(
        [
            sys.executable,
            "-m",
            "tune_div.export",
            "--tracking-uri",
            mlflow_server,
            "--experiment",
            "smd-mnist",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert e.returncode == 0, e.stdout[-2000:] + e.stderr[-2000:]
    front = json.loads((tmp_path / "res" / "x" / "pareto.json").read_text())["front"]
    exported = sorted(f.name for f in out.glob("pareto_*.yaml"))
    assert exported == sorted(f"pareto_{r['trial_id']}.yaml" for r in front) and (out / "knee.yaml").is_file()


def test_missing_dataset_fails_before_ray_in_one_line(tmp_path):
    empty = tmp_path / "data"
    empty.mkdir()
    t0 = time.monotonic()
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "tune_div.search",
            "smd",
            "--dataset",
            "cifar10",
            "--data-dir",
            str(empty),
            "--storage-path",
            str(tmp_path / "res"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        env={**os.environ, "TUNE_DIV_OFFLINE": "1"},
    )
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "dataset 'cifar10' not found" in r.stderr and "--data-dir" in r.stderr
    assert "ray" not in (r.stdout + r.stderr).lower().replace("--data-dir", "")  # Ray never started
    assert not (tmp_path / "res").exists() and time.monotonic() - t0 < 60


def test_unwritable_storage_fails_before_ray_in_one_line(real_data, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    r = subprocess.run(search_cmd(real_data, blocker / "res"), capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "is not a writable folder" in r.stderr and blocker.read_text() == "not a folder"


def test_every_trial_failing_says_so_with_the_first_reason(real_data, tmp_path):
    r = subprocess.run(
        search_cmd(
            real_data,
            tmp_path,
            *("--samples", "2", "--concurrency", "2", "--epochs", "1", "--subset", "1000"),
            *("--inject-nan-if", "lam>0.1"),
        ),
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert r.returncode == 1, r.stdout[-2000:] + r.stderr[-2000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("every trial failed (2)") and "became nan at epoch 1" in last
    assert "Traceback" not in r.stdout + r.stderr and "export" not in last
    for banner in ("Configuration for experiment", "TensorBoard", "Token authentication", "View detailed results"):
        assert banner not in r.stdout + r.stderr
    rows = rows_of(tmp_path / "x")
    assert len(rows) == 2 and all(row["status"] == "ERROR" for row in rows.values())
    for tid in rows:  # failed at once, never retried, although --max-retries is 2
        assert len([x for x in results_of(tmp_path / "x", tid) if "trial_error" in x]) == 1
        (err,) = (tmp_path / "x").glob(f"trainable_{tid}_*/error.txt")
        assert "Failure # 2" not in err.read_text()


@pytest.fixture
def cluster(tmp_path):
    """A real multi-node Ray cluster on this machine: a head with no CPU for trials and two 1-CPU worker
    nodes, each its own raylet; shut down at the end."""
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    try:
        for _ in range(2):
            c.add_node(num_cpus=1)
        c.wait_for_nodes()
        yield c
    finally:
        c.shutdown()


def trial_worker_nodes(cluster) -> dict[int, object]:
    """Worker pid -> the cluster node whose raylet spawned it, for every trial process running now."""
    import psutil

    raylets = {n.all_processes["raylet"][0].process.pid: n for n in cluster.worker_nodes}
    return {
        p.pid: raylets[p.ppid()]
        for p in psutil.process_iter(["cmdline"])
        if "ImplicitFunc" in " ".join(p.info["cmdline"] or []) and p.ppid() in raylets
    }


def test_search_on_a_multi_node_cluster_survives_losing_a_worker_node(cluster, real_data, tmp_path):
    exp = tmp_path / "x"
    cmd = search_cmd(
        real_data, tmp_path, "--samples", "3", "--concurrency", "2", "--epochs", "3", "--address", cluster.address
    )
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
    try:
        seen: set[str] = set()

        # An epoch line is printed once Ray registered that epoch's checkpoint (callbacks.TrialProgress).
        def both_checkpointed(line: str) -> bool:  # two trials, one per node, each past its first epoch
            if "epoch 1/3" in line:
                seen.add(line.split("]")[0])
            return len(seen) == 2

        lines = run_until(p, both_checkpointed, 300)
        workers = trial_worker_nodes(cluster)
        assert len(set(map(id, workers.values()))) == 2  # the two trials run on two different nodes
        node = next(iter(workers.values()))
        cluster.remove_node(node)  # its raylet and the trial's worker die, as on a preempted node
        cluster.add_node(num_cpus=1)
        out, _ = p.communicate(timeout=400)
    finally:
        p.kill()
        p.wait(timeout=30)
    out = "".join(lines) + out
    assert p.returncode == 0, out[-3000:]
    lost = [ln for ln in out.splitlines() if "worker lost" in ln]
    assert len(lost) == 1 and "retry 1/2 from the checkpoint of epoch" in lost[0], out[-3000:]
    victim = lost[0].split("]")[0].lstrip("[")
    first_epoch_lines = [ln for ln in out.splitlines() if ln.startswith(f"[{victim}]") and "epoch 1/3" in ln]
    assert len(first_epoch_lines) == 1  # epoch 1 was not trained again
    rows = rows_of(exp)
    assert len(rows) == 3 and all(row["status"] == "TERMINATED" for row in rows.values())
    epochs = [r["epoch"] for r in results_of(exp, victim) if "epoch" in r]
    assert epochs == [1, 2, 3]  # at most the epoch in progress was lost, none reported twice
    nodes = {r["node_id"] for tid in rows for r in results_of(exp, tid) if "node_id" in r}
    assert len(nodes) >= 2 and node.node_id in nodes  # results from several nodes, the removed one included
    assert_nothing_left_open(exp, f"sqlite:///{tmp_path / 'mlflow.db'}", rows, epochs=3)
