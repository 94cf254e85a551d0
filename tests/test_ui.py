"""``tune-div ui`` stops its whole server tree on SIGTERM and SIGHUP, as on Ctrl-C: a real MLflow server,
real signals, and a look at every process of the server's group afterwards."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group ``pgid``, from /proc."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            out.append(int(stat.parent.name))
    return out


def children(pid: int) -> list[int]:
    kids = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids += [int(k) for k in (task / "children").read_text().split()]
    return kids


def port_free(port: int) -> bool:
    """Whether a new server could listen on ``port`` (as servers do, with SO_REUSEADDR: the closed
    health-check connections' TIME_WAIT does not count, a listener does)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            s.listen()
        except OSError:
            return False
    return True


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads the process tree from /proc")
# SIGHUP goes the same way as SIGTERM (one handler); its run is kept out of the default run's time
@pytest.mark.parametrize("sig", [signal.SIGTERM, pytest.param(signal.SIGHUP, marks=pytest.mark.slow)])
def test_a_stop_signal_leaves_no_server_process_and_frees_the_port(sig, tmp_path, free_port):
    from mlflow import MlflowClient

    MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}").create_experiment("e")
    cli = subprocess.Popen(
        [sys.executable, "-m", "tune_div", "ui", "--storage", str(tmp_path), "--port", str(free_port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
    )
    try:
        line = cli.stdout.readline()
        assert f"http://127.0.0.1:{free_port}" in line, line
        (server,) = children(cli.pid)
        assert os.getpgid(server) == server  # the server leads a group of its own
        assert len(group_members(server)) > 1  # the server and its workers
        assert not port_free(free_port)
        t0 = time.monotonic()
        cli.send_signal(sig)
        rest = cli.communicate(timeout=60)[0]
        print(f"stopped in {time.monotonic() - t0:.1f} s")
    finally:
        if cli.poll() is None:
            cli.kill()
    assert cli.returncode == 0 and "MLflow UI stopped" in rest, rest
    deadline = time.time() + 10
    while group_members(server) and time.time() < deadline:
        time.sleep(0.2)
    assert group_members(server) == []
    assert port_free(free_port)
