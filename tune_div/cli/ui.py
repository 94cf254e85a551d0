"""Browse searches: ``tune-div ui [--storage tune_div_results] [--experiment NAME] [--open]``.

Starts the MLflow UI for the project's tracking store on 127.0.0.1 and prints the URL of the most recent
search's experiment (``--experiment`` for another) in MLflow's Model-training view; ``--open`` opens it
in a browser. ``--optuna [SEARCH_DIR]`` serves a search's Optuna study with optuna-dashboard instead
(the latest search under ``--storage`` when no folder is named). Ctrl-C, SIGTERM (``kill``, systemd, a
batch scheduler's job end) and SIGHUP (a closed terminal) stop the server and its whole process tree.
For a remote machine, see the README (``--host 0.0.0.0 --allowed-hosts``, or an SSH tunnel).
"""

from __future__ import annotations

import argparse
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from .. import tracking
from ..domains import COUNT, POSITIVE, Int, check
from ..errors import UserError
from ..tracking import browse, dashboard
from ..tracking.server import stop_group, ui_command, wait_until_up
from .common import ArgumentParser, add_store_options, cli_errors, store_uri

PROG = "tune-div ui"
PORTS = {"mlflow": 5000, "optuna": 8080}


def build_parser(prog: str = PROG) -> ArgumentParser:
    p = ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    add_store_options(p)
    p.add_argument("--experiment", help="open this experiment (MLflow) or search (--optuna) instead of the latest")
    p.add_argument("--open", action="store_true", help="open the printed URL in a browser")
    p.add_argument(
        "--optuna",
        nargs="?",
        const="",
        metavar="SEARCH_DIR",
        help="serve a search's Optuna study with optuna-dashboard (default: the latest search under --storage)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, help="port (default 5000; 8080 with --optuna)")
    p.add_argument("--allowed-hosts", help="Host headers to accept when serving other machines, e.g. 'myhost:5000'")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="MLflow UI server processes (default 1: enough for one person; more for a shared server)",
    )
    p.add_argument("--startup-timeout", type=float, default=120, help="seconds to wait for the server to answer")
    return p


@dataclass(frozen=True)
class Server:
    """What to start, where it answers when it is up, and the page to print."""

    name: str
    command: list[str]
    base: str  # http://host:port
    health: str  # a path that answers 200 once the server is up
    page: str  # the URL printed (and opened)
    what: str  # what it serves, for the printed line


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


def mlflow_server(args: argparse.Namespace, base: str, port: int) -> Server:
    uri = store_uri(args, "run a search first or pass --storage")
    with tracking.quiet_mlflow():
        client = tracking.client_for(uri)
        if args.experiment:
            exp = client.get_experiment_by_name(args.experiment)
            if exp is None:
                names = ", ".join(e.name for e in client.search_experiments()) or "none"
                raise UserError(f"no experiment '{args.experiment}' in {uri}; experiments: {names}")
            target: tuple[str, str] | None = (exp.experiment_id, exp.name)
        else:
            target = browse.latest_search(client)
    page = browse.experiment_url(base, target[0]) if target else base
    what = f"{uri}, experiment {target[1]}" if target else uri
    command = ui_command(uri, tracking.artifact_root(args.storage), args.host, port, args.allowed_hosts, args.workers)
    return Server("MLflow UI", command, base, "/health", page, what)


def optuna_server(args: argparse.Namespace, base: str, port: int) -> Server:
    study = dashboard.study_file(args.storage, args.experiment, args.optuna or None)
    page = base + dashboard.study_page(study)
    return Server("optuna-dashboard", dashboard.command(study, args.host, port), base, "/api/meta", page, str(study))


def serve(server: Server, startup_timeout: float, open_page: bool) -> None:
    """Run ``server`` until Ctrl-C, SIGTERM or SIGHUP, then stop its whole process group."""
    with stop_signals():
        # its own process group: the server's workers are stopped together, by the group, on any signal
        proc = subprocess.Popen(
            server.command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        try:
            wait_until_up(server.base, proc, startup_timeout, server.health, server.name)
            print(f"{server.name} for {server.what}: {server.page}  (Ctrl-C to stop)", flush=True)
            if open_page:
                import webbrowser

                webbrowser.open(server.page)
            proc.wait()
        except KeyboardInterrupt:
            pass
        finally:
            stop_group(proc)
    print(f"{server.name} stopped")


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    args = build_parser(prog).parse_args(argv)
    with cli_errors(prog):
        kind = "optuna" if args.optuna is not None else "mlflow"
        port = PORTS[kind] if args.port is None else args.port
        check("--port", "port", port, Int(1, 65535))
        check("--startup-timeout", "seconds", args.startup_timeout, POSITIVE)
        check("--workers", "workers", args.workers, COUNT)
        base = f"http://{'127.0.0.1' if args.host in ('0.0.0.0', '::') else args.host}:{port}"
        server = (optuna_server if kind == "optuna" else mlflow_server)(args, base, port)
        serve(server, args.startup_timeout, args.open)
    return 0
