"""A small name -> factory registry shared by datasets, models, defenses and attacks (timm style)."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from typing import Generic, TypeVar

from .errors import UserError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to factories. ``kind`` is used in error messages ("unknown defense 'x'").

    An unknown name raises :class:`~tune_div.errors.UserError` (a ``ValueError``) naming the choices.
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._entries[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise UserError(f"unknown {self.kind} '{name}'; choose one of: {', '.join(self.names())}") from None

    def names(self, pattern: str | None = None) -> list[str]:
        """Registered names, sorted; ``pattern`` is a shell wildcard such as ``'resnet*'``."""
        names = sorted(self._entries)
        if pattern is not None:
            names = [n for n in names if fnmatch.fnmatch(n, pattern)]
        return names

    def __contains__(self, name: str) -> bool:
        return name in self._entries
