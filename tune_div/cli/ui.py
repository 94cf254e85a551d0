"""Browse searches: ``tune-div ui [--storage tune_div_results] [--port 5000]``.

Starts the MLflow UI for the project's tracking store on 127.0.0.1 and prints the URL. Ctrl-C, SIGTERM
(``kill``, systemd, a batch scheduler's job end) and SIGHUP (a closed terminal) stop it and its whole
process tree. For a remote machine, see the README (``--host 0.0.0.0 --allowed-hosts``, or an SSH tunnel).
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .. import tracking
from ..domains import POSITIVE, Int, check
from ..tracking.server import stop_group, ui_command, wait_until_up
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


@contextmanager
def stop_signals() -> Iterator[None]:
    """SIGTERM and SIGHUP end the block as Ctrl-C does (KeyboardInterrupt); the handlers are restored."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    saved = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    args = build_parser(prog).parse_args(argv)
    with cli_errors(prog):
        check("--port", "port", args.port, Int(1, 65535))
        check("--startup-timeout", "seconds", args.startup_timeout, POSITIVE)
        uri = store_uri(args, "run a search first or pass --storage")
        url = f"http://{'127.0.0.1' if args.host in ('0.0.0.0', '::') else args.host}:{args.port}"
        with stop_signals():
            # its own process group: the server's workers are stopped together, by the group, on any signal
            proc = subprocess.Popen(
                ui_command(uri, tracking.artifact_root(args.storage), args.host, args.port, args.allowed_hosts),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            try:
                wait_until_up(url, proc, args.startup_timeout)
                print(f"MLflow UI for {uri}: {url}  (Ctrl-C to stop)", flush=True)
                proc.wait()
            except KeyboardInterrupt:
                pass
            finally:
                stop_group(proc)
        print("MLflow UI stopped")
    return 0
