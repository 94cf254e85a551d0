"""How sure an accuracy is: binomial intervals, and the paired lift of one model over another.

An accuracy measured on ``n`` points is ``k / n`` for ``k`` correct points, a binomial proportion; its
95% interval is Wilson's score interval (scipy's ``binomtest(...).proportion_ci(method="wilson")``),
which stays inside [0, 1] and keeps close to its nominal coverage at small ``n`` and near 0 or 1, where
the normal (Wald) interval does not.

Two models measured **on the same points** are compared pointwise (:func:`paired_lift`). Only the
discordant points carry information: ``b`` where the first is right and the second wrong, ``c`` the
reverse. The lift is ``(b - c) / n``. Its exact McNemar test is the two-sided binomial test of ``b``
successes in ``b + c`` trials at 1/2. Its interval is conditional on ``m = b + c``: the Clopper–Pearson
interval ``[L, U]`` of ``b / m``, mapped through ``lift = (m / n)(2 share - 1)``, so the interval
excludes 0 exactly when the exact test rejects at the same level.

Records carry an accuracy ``X`` with ``X_n``, ``X_ci_low`` and ``X_ci_high`` beside it (:func:`annotate`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

CONFIDENCE = 0.95
SUFFIXES = ("_n", "_ci_low", "_ci_high")


@dataclass(frozen=True)
class Interval:
    """A proportion ``value = k / n`` with its interval ``[low, high]`` at ``confidence``."""

    value: float
    low: float
    high: float
    n: int
    confidence: float = CONFIDENCE

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def __str__(self) -> str:
        """``0.585 ±0.068`` (the half-width) when the interval is symmetric to within 0.005, else the bounds:
        ``0.012 [0.006, 0.026]``."""
        if abs((self.high - self.value) - (self.value - self.low)) <= 0.005:
            return f"{self.value:.3f} ±{self.half_width:.3f}"
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}]"


def correct_count(accuracy: float, n: int) -> int:
    """``k`` of an accuracy measured on ``n`` points (accuracies are stored as floats of ``k / n``)."""
    if not 0 <= accuracy <= 1 or n < 1:
        raise ValueError(f"an accuracy in [0, 1] on n >= 1 points, got {accuracy} on {n}")
    return int(round(accuracy * n))


def wilson(k: int, n: int, confidence: float = CONFIDENCE) -> Interval:
    """Wilson's score interval of ``k`` successes in ``n`` trials (scipy)."""
    from scipy.stats import binomtest

    ci = binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    return Interval(k / n, float(ci.low), float(ci.high), n, confidence)


def accuracy_interval(accuracy: float, n: int, confidence: float = CONFIDENCE) -> Interval:
    return wilson(correct_count(accuracy, n), n, confidence)


@dataclass(frozen=True)
class PairedLift:
    """The lift of model A over model B on the same ``n`` points: ``b`` points only A gets right, ``c``
    only B; ``lift = (b - c) / n`` in ``[low, high]``; ``p_value`` of the exact McNemar test."""

    lift: float
    low: float
    high: float
    p_value: float
    n: int
    b: int
    c: int
    confidence: float = CONFIDENCE

    @property
    def significant(self) -> bool:
        """Whether the lift differs from 0 at ``1 - confidence`` (the exact McNemar test)."""
        return self.p_value < 1 - self.confidence

    def __str__(self) -> str:
        star = "*" if self.significant else ""
        return f"{self.lift:+.3f}{star} [{self.low:+.3f}, {self.high:+.3f}] p={self.p_value:.2g}"


def paired_lift(a: Sequence[bool], b: Sequence[bool], confidence: float = CONFIDENCE) -> PairedLift:
    """A's lift over B from their per-point correctness on the same points (two equal-length masks)."""
    from scipy.stats import binomtest

    if len(a) != len(b) or not len(a):
        raise ValueError(f"two masks over the same points, got {len(a)} and {len(b)}")
    n = len(a)
    only_a = sum(1 for x, y in zip(a, b) if x and not y)
    only_b = sum(1 for x, y in zip(a, b) if y and not x)
    m = only_a + only_b
    lift = (only_a - only_b) / n
    if m == 0:  # the two agree on every point: no evidence of any difference
        return PairedLift(0.0, 0.0, 0.0, 1.0, n, 0, 0, confidence)
    test = binomtest(only_a, m, 0.5)
    share = test.proportion_ci(confidence_level=confidence, method="exact")
    scale = m / n
    return PairedLift(
        lift,
        scale * (2 * share.low - 1),
        scale * (2 * share.high - 1),
        float(test.pvalue),
        n,
        only_a,
        only_b,
        confidence,
    )


def points_text(mask: Sequence[bool]) -> str:
    """A per-point mask as a string of ``0`` and ``1`` (how results carry it through Ray and JSON)."""
    return "".join("1" if bool(v) else "0" for v in mask)


def points_mask(text: str) -> list[bool]:
    return [c == "1" for c in text]


def annotate(record: Mapping[str, Any], counts: Mapping[str, int]) -> dict[str, Any]:
    """``record`` with ``X_n``, ``X_ci_low`` and ``X_ci_high`` beside every accuracy ``X`` that
    ``counts`` gives a point count for (and that the record holds as a finite number)."""
    out = dict(record)
    for key, n in counts.items():
        value = record.get(key)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or not n:
            continue
        ci = accuracy_interval(float(value), int(n))
        out[f"{key}_n"], out[f"{key}_ci_low"], out[f"{key}_ci_high"] = int(n), ci.low, ci.high
    return out


def nested(tree: Any, n: int, confidence: float = CONFIDENCE) -> Any:
    """The same nesting of dicts with every accuracy leaf replaced by its ``[low, high]`` interval."""
    if isinstance(tree, Mapping):
        return {k: nested(v, n, confidence) for k, v in tree.items()}
    ci = accuracy_interval(float(tree), n, confidence)
    return [ci.low, ci.high]


def interval_of(record: Mapping[str, Any], key: str) -> Interval | None:
    """The interval an annotated record holds for ``key``; None where it has no point count."""
    value, n = record.get(key), record.get(f"{key}_n")
    low, high = record.get(f"{key}_ci_low"), record.get(f"{key}_ci_high")
    if not isinstance(value, (int, float)) or not n or low is None or high is None:
        return None
    return Interval(float(value), float(low), float(high), int(n))
