"""Browse searches: ``tune-div ui [--storage tune_div_results] [--port 5000]``.

Starts the MLflow UI for the project's tracking store on 127.0.0.1, prints the URL, and stops cleanly on
Ctrl-C. For a remote machine, see the README (``--host 0.0.0.0 --allowed-hosts``, or an SSH tunnel).
"""

from __future__ import annotations

import signal
import subprocess

from .. import tracking
from ..domains import POSITIVE, Int, check
from ..tracking.server import ui_command, wait_until_up
from .common import ArgumentParser, add_store_options, cli_errors, store_uri

PROG = "tune-div ui"


def build_parser(prog: str = PROG) -> ArgumentParser:
    p = ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    add_store_options(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--allowed-hosts", help="Host headers to accept when serving other machines, e.g. 'myhost:5000'")
    p.add_argument("--startup-timeout", type=float, default=120, help="seconds to wait for the server to answer")
    return p


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    args = build_parser(prog).parse_args(argv)
    with cli_errors(prog):
        check("--port", "port", args.port, Int(1, 65535))
        check("--startup-timeout", "seconds", args.startup_timeout, POSITIVE)
        uri = store_uri(args, "run a search first or pass --storage")
        proc = subprocess.Popen(
            ui_command(uri, tracking.artifact_root(args.storage), args.host, args.port, args.allowed_hosts),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
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
