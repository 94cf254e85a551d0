"""Reading and writing the project's files: YAML with one-line errors, atomic writes.

A file that can be interrupted while written (a checkpoint, a results file, a cached model) is
written to a temporary file in the same folder and renamed over the target, so a reader sees either
the old complete file or the new complete file, never half of one.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import MissingFileError, UserError


def cache_root() -> Path:
    """The user cache (``$TUNE_DIV_CACHE``, default ``~/.cache/tune_div``): datasets, surrogates, baselines."""
    return Path(os.environ.get("TUNE_DIV_CACHE", Path.home() / ".cache" / "tune_div"))


def read_yaml(path: str | os.PathLike, what: str, hint: str = "") -> Any:
    """Parse a YAML file; a missing file or bad YAML is a one-line :class:`UserError` naming ``what``."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{what} {path} does not exist{'; ' + hint if hint else ''}")
    try:
        return yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """``write(tmp)`` then rename ``tmp`` over ``path``; the folder is created if needed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    def write(tmp: Path) -> None:
        tmp.write_text(text)

    return atomic_write(path, write)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    import torch

    return atomic_write(path, lambda tmp: torch.save(obj, tmp))
