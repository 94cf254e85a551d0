"""Browse searches: ``python -m tune_div.ui [--storage tune_div_results] [--port 5000]``.

Starts the MLflow UI for the project's tracking store on 127.0.0.1, prints the URL, and stops cleanly on
Ctrl-C. For a remote machine, see the README (``--host 0.0.0.0 --allowed-hosts``, or an SSH tunnel).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from . import tracking
from .cli import ArgumentParser
from .errors import UserError, cli_errors

PROG = "python -m tune_div.ui"


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    p.add_argument("--storage", default="tune_div_results", help="the searches' --storage-path")
    p.add_argument("--tracking-uri", help="any MLflow backend store URI (default sqlite:///<storage>/mlflow.db)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--allowed-hosts", help="Host headers to accept when serving other machines, e.g. 'myhost:5000'")
    p.add_argument("--startup-timeout", type=float, default=120, help="seconds to wait for the server to answer")
    return p


def command(uri: str, storage: Path, host: str, port: int, allowed_hosts: str | None) -> list[str]:
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port),
           "--default-artifact-root", (storage / "mlartifacts").resolve().as_uri()]
    if allowed_hosts:
        cmd += ["--allowed-hosts", allowed_hosts]
    return cmd


def wait_until_up(url: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise UserError(f"the MLflow UI exited with code {proc.returncode}; is port {url.rsplit(':', 1)[1]} in use?")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise UserError(f"the MLflow UI did not answer at {url} within {timeout:.0f} s")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with cli_errors(PROG):
        storage = Path(args.storage)
        uri = args.tracking_uri or tracking.default_uri(storage)
        if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file():
            raise UserError(f"no MLflow store at {uri[len('sqlite:///'):]}; run a search first or pass --storage")
        proc = subprocess.Popen(command(uri, storage, args.host, args.port, args.allowed_hosts),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        url = f"http://{'127.0.0.1' if args.host in ('0.0.0.0', '::') else args.host}:{args.port}"
        try:
            wait_until_up(url, proc, args.startup_timeout)
            print(f"MLflow UI for {uri}: {url}  (Ctrl-C to stop)", flush=True)
            proc.wait()
        except KeyboardInterrupt:
            pass
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
        print("MLflow UI stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
