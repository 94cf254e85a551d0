"""Valid values of options, checked where they enter (docs/errors.md).

Every option of every attack, defense, training config, search space and command is given a domain
here; :func:`check` turns a value outside it into one :class:`~tune_div.errors.UserError` naming the
option, the value and what is valid. Integers must be integers (``3.0`` is refused where a count is
meant, ``True`` is not a number), floats must be finite, strings are not numbers.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .errors import UserError


class Domain(abc.ABC):
    @abc.abstractmethod
    def accepts(self, value: Any) -> bool:
        """Whether ``value`` is valid."""

    @abc.abstractmethod
    def describe(self) -> str:
        """What is valid, for an error message ("an integer >= 1")."""


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class Int(Domain):
    min: int | None = None
    max: int | None = None

    def accepts(self, value: Any) -> bool:
        return (
            isinstance(value, int)
            and not isinstance(value, bool)
            and (self.min is None or value >= self.min)
            and (self.max is None or value <= self.max)
        )

    def describe(self) -> str:
        if self.min is not None and self.max is not None:
            return f"an integer in [{self.min}, {self.max}]"
        if self.min is not None:
            return f"an integer >= {self.min}"
        return "an integer" if self.max is None else f"an integer <= {self.max}"


@dataclass(frozen=True)
class Float(Domain):
    """A finite number in an interval; ``open_low`` / ``open_high`` exclude the bounds."""

    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False

    def accepts(self, value: Any) -> bool:
        if not _number(value) or not math.isfinite(value):
            return False
        if self.low is not None and (value < self.low or (self.open_low and value == self.low)):
            return False
        return not (self.high is not None and (value > self.high or (self.open_high and value == self.high)))

    def describe(self) -> str:
        if self.low is None and self.high is None:
            return "a finite number"
        if self.high is None:
            return f"a number {'>' if self.open_low else '>='} {self.low:g}"
        if self.low is None:
            return f"a number {'<' if self.open_high else '<='} {self.high:g}"
        return f"a number in {'(' if self.open_low else '['}{self.low:g}, {self.high:g}{')' if self.open_high else ']'}"


@dataclass(frozen=True)
class Bool(Domain):
    def accepts(self, value: Any) -> bool:
        return isinstance(value, bool)

    def describe(self) -> str:
        return "true or false"


@dataclass(frozen=True)
class OneOf(Domain):
    choices: tuple[Any, ...]

    def accepts(self, value: Any) -> bool:
        return any(value == c and type(value) is type(c) for c in self.choices)

    def describe(self) -> str:
        return "one of " + ", ".join(map(str, self.choices))


@dataclass(frozen=True)
class Maybe(Domain):
    """``None`` (meaning: the documented default) or a value of ``inner``."""

    inner: Domain

    def accepts(self, value: Any) -> bool:
        return value is None or self.inner.accepts(value)

    def describe(self) -> str:
        return f"{self.inner.describe()} (or unset)"


@dataclass(frozen=True)
class Text(Domain):
    def accepts(self, value: Any) -> bool:
        return isinstance(value, str) and bool(value)

    def describe(self) -> str:
        return "a non-empty string"


@dataclass(frozen=True)
class ListOf(Domain):
    inner: Domain

    def accepts(self, value: Any) -> bool:
        return isinstance(value, (list, tuple)) and all(self.inner.accepts(v) for v in value)

    def describe(self) -> str:
        return f"a list of {self.inner.describe()}s"


COUNT = Int(min=1)  # steps, queries, restarts, epochs, members, points
NON_NEGATIVE = Float(low=0.0)
POSITIVE = Float(low=0.0, open_low=True)
PROBABILITY = Float(low=0.0, high=1.0)
LINF_EPS = Float(low=0.0, high=1.0, open_low=True)  # an L∞ radius in [0, 1] pixel space
SEED = Int(min=0)


def check(what: str, name: str, value: Any, domain: Domain) -> Any:
    """``value`` if ``domain`` accepts it, else a one-line UserError: ``<what>: <name>=<value> is not valid;
    expected <domain>``."""
    if not domain.accepts(value):
        raise UserError(f"{what}: {name}={value!r} is not valid; expected {domain.describe()}")
    return value


def check_all(what: str, values: dict[str, Any], domains: dict[str, Domain]) -> dict[str, Any]:
    """Every entry of ``values`` checked against its domain; an unknown key is an error naming the valid ones."""
    unknown = sorted(set(values) - set(domains))
    if unknown:
        raise UserError(f"{what}: unknown option(s) {unknown}; valid: {', '.join(sorted(domains)) or 'none'}")
    return {k: check(what, k, v, domains[k]) for k, v in values.items()}


def sorted_unique(values: Sequence) -> bool:
    return all(a < b for a, b in zip(values, values[1:]))
