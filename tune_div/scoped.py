"""Process settings that last only as long as a block: environment variables, restored afterwards."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping

# MLflow's info lines (database migrations, run links) and upload progress bars off the terminal; here,
# not in tracking/, so that every command can set them without importing MLflow or torch.
MLFLOW_QUIET = {"MLFLOW_LOGGING_LEVEL": "WARNING", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}


@contextlib.contextmanager
def environ(defaults: Mapping[str, str], force: Mapping[str, str] | None = None) -> Iterator[None]:
    """Set ``defaults`` where the variable is unset and ``force`` always, for the block; then put every
    one of them back as it was (unset again, or its earlier value)."""
    force = force or {}
    saved = {k: os.environ.get(k) for k in {*defaults, *force}}
    try:
        for key, value in defaults.items():
            os.environ.setdefault(key, value)
        os.environ.update(force)
        yield
    finally:
        for key, before in saved.items():
            if before is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = before
