"""User-facing errors: a CLI prints them as one line and exits with code 2, without a traceback."""

from __future__ import annotations

import sys
from contextlib import contextmanager


class UserError(ValueError):
    """Bad input that the user can fix; the message says what is wrong and what to do."""


class DataError(UserError):
    """A dataset is missing or corrupt."""


class DivergenceError(RuntimeError):
    """A loss became NaN or Inf; the trial that raised it is failed with this reason."""


def read_yaml(path, what: str, hint: str = ""):
    """Parse a YAML file; a missing file or bad YAML is a one-line :class:`UserError` naming ``what``."""
    from pathlib import Path

    import yaml

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} {path} does not exist{'; ' + hint if hint else ''}")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None


def fail(prog: str, message: str) -> None:
    """Print ``prog: error: message`` on one line to stderr and exit with code 2."""
    first_line = " ".join(str(message).split())
    print(f"{prog}: error: {first_line}", file=sys.stderr)
    raise SystemExit(2)


@contextmanager
def cli_errors(prog: str):
    """Turn bad-input exceptions raised inside a CLI into a one-line error and exit code 2."""
    try:
        yield
    except (UserError, ValueError, FileNotFoundError) as exc:
        fail(prog, str(exc))
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        raise SystemExit(130)
