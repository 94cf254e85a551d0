"""Pieces shared by the commands: an argparse that errors on one line, the error boundary, key=value
parsing, output checks.

The error boundary (:func:`cli_errors`) turns a :class:`~tune_div.errors.UserError` into one line on
stderr and exit code 2; any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys
from contextlib import contextmanager
from pathlib import Path

from ..errors import UserError
from ..scoped import MLFLOW_QUIET, environ


def fail(prog: str, message: str) -> None:
    """Print ``prog: error: message`` on one line to stderr and exit with code 2."""
    first_line = " ".join(str(message).split())
    print(f"{prog}: error: {first_line}", file=sys.stderr)
    raise SystemExit(2)


@contextmanager
def cli_errors(prog: str):
    """User mistakes become a one-line error and exit code 2; Ctrl-C exits with 130. MLflow stays quiet
    (:data:`tune_div.scoped.MLFLOW_QUIET`) while the command runs, without importing it."""
    try:
        with environ(MLFLOW_QUIET):
            yield
    except UserError as exc:
        fail(prog, str(exc))
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        raise SystemExit(130) from None


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one line (``prog: error: ...``) with exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        fail(self.prog, f"{message} (see --help)")


def parse_scalar(text: str):
    """'0.5' -> 0.5, '3' -> 3, 'true' -> True, anything else stays a string."""
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_key_values(items: list[str] | None, what: str = "--hparam") -> dict:
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"{what} expects key=value, got {item!r}")
        out[key.strip()] = parse_scalar(value.strip())
    return out


def add_store_options(p: argparse.ArgumentParser, storage_help: str = "the searches' --storage-path") -> None:
    """``--storage`` and ``--tracking-uri``: where a command reads the MLflow records of searches."""
    p.add_argument("--storage", default="tune_div_results", help=f"{storage_help} (for the default tracking URI)")
    p.add_argument("--tracking-uri", help="any MLflow tracking URI (default sqlite:///<storage>/mlflow.db)")


def store_uri(args: argparse.Namespace, hint: str) -> str:
    """The tracking URI the store options name; a missing sqlite store is a one-line error with ``hint``."""
    from .. import tracking

    uri = args.tracking_uri or tracking.default_uri(args.storage)
    tracking.require_store(uri, hint)
    return uri


def check_outputs_writable(*paths: str | None) -> None:
    """Fail before any work if an output file's folder does not exist, or the path is a folder."""
    for p in paths:
        if p and Path(p).is_dir():
            raise UserError(f"cannot write {p}: it is a folder; name a file")
        if p and not Path(p).resolve().parent.is_dir():
            raise UserError(f"cannot write {p}: folder {Path(p).parent} does not exist")
