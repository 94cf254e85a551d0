"""How a trial ended, as the search's rows, files and MLflow tags spell it.

A row's ``status`` is a :class:`TrialState`, or ``STOPPED@<epoch>`` for a trial the scheduler stopped
at a rung (:func:`stopped`). Both are plain strings in ``trials.csv`` and ``pareto.json``.
"""

from __future__ import annotations

import enum

STOPPED_PREFIX = "STOPPED@"


class TrialState(str, enum.Enum):
    TERMINATED = "TERMINATED"  # ran to its last epoch: a candidate for the front
    ERROR = "ERROR"  # its own code failed (a divergence, a bug), or it was lost beyond its retries
    UNFINISHED = "UNFINISHED"  # the search was interrupted while it ran (resume continues it)

    def __str__(self) -> str:
        return self.value


def stopped(epoch: int | str) -> str:
    """The status of a trial the scheduler stopped after ``epoch``."""
    return f"{STOPPED_PREFIX}{epoch}"


def is_stopped(status: object) -> bool:
    return str(status).startswith(STOPPED_PREFIX)


def stopped_epoch(status: str) -> str:
    """The epoch of a ``STOPPED@<epoch>`` status, as written."""
    return status[len(STOPPED_PREFIX) :]


def mlflow_end(status: str) -> str:
    """The MLflow run status of a trial that ended so: a scheduler stop is a normal end, not a kill."""
    if is_stopped(status) or status == TrialState.TERMINATED:
        return "FINISHED"
    return "FAILED" if status == TrialState.ERROR else "KILLED"
