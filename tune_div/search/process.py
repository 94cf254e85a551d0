"""What a search changes in its own process, and only while it runs.

The Tune controller runs in the driver's process, so the variables it reads are set there, by
:func:`search_process`. So are Ray's and MLflow's log handlers and levels, and Optuna's verbosity. All of
them are restored when the block ends, also after an error or Ctrl-C, so calling a search from a notebook
leaves the notebook as it was.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..scoped import environ
from ..tracking.uri import quiet_mlflow

# Variables the Tune controller reads, set for the search only (the user's value wins for the defaults).
TUNE_DEFAULTS = {
    # One snapshot per epoch is by design here (every report carries a checkpoint): no warning about it.
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    # Ray's snapshot of the experiment at most 1 s old: after a kill -9 of the driver a trial continues
    # from the checkpoint of its last reported epoch.
    "TUNE_GLOBAL_CHECKPOINT_S": "1",
}
TUNE_FORCED = {
    # The proxy is measured at rungs and at the end, not every epoch: results between rungs do not carry
    # the robust objective, which Ray would otherwise refuse.
    "TUNE_DISABLE_STRICT_METRIC_CHECKING": "1",
    # Ray Tune's new output engine prints its config table, TensorBoard hint and per-trial tables even at
    # verbose=0; the legacy one is silent at verbose=0. The search prints its own lines.
    "RAY_AIR_NEW_OUTPUT": "0",
}


@dataclass
class _LoggerState:
    handlers: list[logging.Handler]
    level: int
    propagate: bool
    disabled: bool


def _existing() -> list[logging.Logger]:
    return [lg for lg in list(logging.root.manager.loggerDict.values()) if isinstance(lg, logging.Logger)]


def _loggers(prefixes: tuple[str, ...]) -> list[logging.Logger]:
    names = [n for n in list(logging.root.manager.loggerDict) if n.split(".")[0] in prefixes]
    return [logging.getLogger(n) for n in {*prefixes, *names}]


class ProcessState:
    """A snapshot of the variables and loggers a search touches, and how to put them back."""

    PREFIXES = ("ray", "optuna")

    def __init__(self) -> None:
        self.environ = dict(os.environ)
        self.loggers: dict[str, _LoggerState] = {}
        self.added: list[logging.Handler] = []

    def snapshot_loggers(self) -> None:
        """Record the loggers, once the libraries have configured their own on import."""
        # Every logger that exists now: libraries add their own handlers during a search (MLflow's store
        # adds one to alembic's logger per connection), and those must not outlive it either.
        for lg in [logging.root, *_loggers(self.PREFIXES), *_existing()]:
            self._remember(lg)

    def _remember(self, lg: logging.Logger) -> logging.Logger:
        """Record ``lg`` as it is before the search first changes it."""
        self.loggers.setdefault(lg.name, _LoggerState(list(lg.handlers), lg.level, lg.propagate, lg.disabled))
        return lg

    def restore(self) -> None:
        # The whole environment, not only the variables set here: libraries imported during the search
        # set their own (torch's inductor cache folder, a checksum mode), and those must not outlive it.
        for key in set(os.environ) - set(self.environ):
            del os.environ[key]
        for key, value in self.environ.items():
            if os.environ.get(key) != value:
                os.environ[key] = value
        for name, before in self.loggers.items():
            lg = logging.getLogger(name) if name != "root" else logging.root
            lg.handlers[:] = before.handlers
            lg.setLevel(before.level)
            lg.propagate = before.propagate
            lg.disabled = before.disabled
        for handler in self.added:
            handler.close()

    def quiet(self, log_file: Path | None) -> None:
        """Ray's banners, hints and tracebacks go to ``log_file``, not the terminal (dropped while it does
        not exist yet: nothing may be written before the checks pass); MLflow and Optuna at WARNING."""
        for lg in _loggers(("ray",)):
            self._remember(lg).handlers[:] = []
        ray_logger = logging.getLogger("ray")
        ray_logger.propagate = False
        handler: logging.Handler = logging.FileHandler(log_file) if log_file else logging.NullHandler()
        self.added.append(handler)
        ray_logger.addHandler(handler)
        ray_logger.setLevel(logging.INFO if log_file else logging.ERROR)
        import optuna

        self._remember(logging.getLogger("optuna"))
        optuna.logging.set_verbosity(optuna.logging.WARNING)


@contextlib.contextmanager
def search_process() -> Iterator[ProcessState]:
    """Set what the search needs (the Tune variables, quiet loggers) for the block, restore it after."""
    state = ProcessState()
    with environ(TUNE_DEFAULTS, TUNE_FORCED), quiet_mlflow():
        # Imported first (after the variables they read at import): what Ray and Optuna configure on
        # import is theirs, and the search's quieting must come after it to hold.
        import optuna  # noqa: F401
        import ray.tune  # noqa: F401

        state.snapshot_loggers()
        try:
            state.quiet(None)
            yield state
        finally:
            state.restore()
