"""The project's exceptions. A CLI prints a :class:`UserError` as one line and exits with code 2.

Only :class:`UserError` (and its subclasses) is bad input: anything else that escapes is a bug and
keeps its traceback. Registries, configs, attack options and file readers raise :class:`UserError`
for mistakes a user can fix; it subclasses ``ValueError`` so the contracts of docs/design.md ("unknown name:
``ValueError`` naming the valid choices") hold.
"""

from __future__ import annotations


class UserError(ValueError):
    """Bad input that the user can fix; the message says what is wrong and what to do."""


class DataError(UserError):
    """A dataset is missing or corrupt."""


class MissingFileError(UserError, FileNotFoundError):
    """A file the user named does not exist."""


class DivergenceError(RuntimeError):
    """A loss became NaN or Inf; the trial that raised it is failed with this reason (never retried)."""
