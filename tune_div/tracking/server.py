"""Serving a tracking store: the MLflow UI (or optuna-dashboard) as a child process in its own process
group, waiting for it to answer, and stopping the whole group."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request

from ..errors import UserError


def ui_command(
    uri: str, artifact_root: str, host: str, port: int, allowed_hosts: str | None, workers: int = 1
) -> list[str]:
    """``mlflow ui`` for the store ``uri`` (artifacts under ``artifact_root``, a folder), with ``workers``
    server processes: one person browsing needs one (each answers requests on its own threads), and each
    more is another MLflow import before the page answers (MLflow's default is 4)."""
    from pathlib import Path

    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "ui",
        "--backend-store-uri",
        uri,
        "--host",
        host,
        "--port",
        str(port),
        "--default-artifact-root",
        Path(artifact_root).resolve().as_uri(),
        "--workers",
        str(workers),
    ]
    if allowed_hosts:
        cmd += ["--allowed-hosts", allowed_hosts]
    return cmd


def wait_until_up(
    url: str, proc: subprocess.Popen, timeout: float, health: str = "/health", name: str = "the MLflow server"
) -> None:
    """Poll ``url + health`` until it answers 200; a one-line error if the process dies or time runs out."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise UserError(f"{name} exited with code {proc.returncode}; is port {url.rsplit(':', 1)[1]} in use?")
        try:
            with urllib.request.urlopen(f"{url}{health}", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise UserError(f"{name} did not answer at {url} within {timeout:.0f} s")


def stop_group(proc: subprocess.Popen, grace: float = 15.0) -> None:
    """Stop ``proc``'s whole process group (it was started with ``start_new_session``): SIGTERM, then
    SIGKILL for whatever is left after ``grace`` seconds, and wait until none is left. (Not SIGINT: a
    server started from a background job inherits SIGINT ignored.)"""
    pgid = proc.pid
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        deadline = time.time() + wait
        while time.time() < deadline and _group_alive(pgid, proc):
            time.sleep(0.1)
    proc.wait()


def _group_alive(pgid: int, proc: subprocess.Popen) -> bool:
    proc.poll()  # reap the leader, so that it does not count as alive
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
