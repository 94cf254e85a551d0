"""Pareto fronts of (clean accuracy, robust accuracy), both maximised.

- :func:`front` — the non-dominated points (a point is dominated if another is >= in both objectives
  and > in one); ties in both objectives are all kept.
- :func:`ranks` — non-dominated sorting: 0 for the front, 1 for the front of the rest, ...
- :func:`hypervolume` — the exact 2-D area dominated by the front and bounded below by the reference
  point, default (0, 0): both objectives are accuracies in [0, 1], so the hypervolume is the share of
  the unit square a front dominates (1.0 only for a model that is perfect clean and robust).

Non-dominated sorting and hypervolume come from ``moocore`` (the reference implementations of the
EAF/hypervolume literature, C-backed); the knee and the eligibility rules are ours.
- :func:`knee` — the front point farthest from the straight line through the front's two extremes
  (after scaling each objective to [0, 1] over the front): the best-balanced trade-off.
- :func:`eligible` — which trials may be on the default front: finished, feasible (clean accuracy at or
  above the floor) and not flagged for gradient masking.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import moocore
import numpy as np

from .states import TrialState

Point = tuple[float, float]
REFERENCE: Point = (0.0, 0.0)


def _finite(points: Sequence[Point]) -> list[int]:
    return [i for i, p in enumerate(points) if all(math.isfinite(v) for v in p)]


def ranks(points: Sequence[Point]) -> list[int]:
    """Non-dominated sorting rank of each point (both objectives maximised); non-finite points rank last."""
    ok = _finite(points)
    out = [len(points)] * len(points)
    if ok:
        for i, r in zip(ok, moocore.pareto_rank(np.array([points[i] for i in ok], dtype=float), maximise=True)):
            out[i] = int(r)
    return out


def front(points: Sequence[Point]) -> list[int]:
    """Indices of the non-dominated points (ties all kept), sorted by the first objective (descending)."""
    ok = _finite(points)
    if not ok:
        return []
    keep = moocore.is_nondominated(np.array([points[i] for i in ok], dtype=float), maximise=True, keep_weakly=True)
    return sorted((i for i, k in zip(ok, keep) if k), key=lambda i: (-points[i][0], -points[i][1]))


def hypervolume(points: Sequence[Point], reference: Point = REFERENCE) -> float:
    """Exact area dominated by ``points`` above ``reference`` (points below it in any objective count 0)."""
    pts = [p for p in points if all(math.isfinite(v) for v in p) and p[0] > reference[0] and p[1] > reference[1]]
    if not pts:
        return 0.0
    return float(moocore.hypervolume(np.array(pts, dtype=float), ref=np.array(reference, dtype=float), maximise=True))


def lift_hypervolume(points: Sequence[Point], baseline_robust: float, clean_floor: float | None = None) -> float:
    """The area the front dominates above the naive baseline: reference point (the clean floor, or 0; the
    baseline's robust accuracy). 0 when no point is more robust than the baseline: the number that says
    how much a search improved on no defense, where :func:`hypervolume` against (0, 0) also counts the
    robustness the undefended ensemble already has."""
    return hypervolume(points, (clean_floor if clean_floor is not None else 0.0, float(baseline_robust)))


def knee(points: Sequence[Point]) -> int | None:
    """Index (into ``points``) of the knee of their front, or None for no points."""
    idx = front(points)
    if not idx:
        return None
    if len(idx) <= 2:
        return max(idx, key=lambda i: points[i][0] + points[i][1])
    xs = [points[i][0] for i in idx]
    ys = [points[i][1] for i in idx]
    sx, sy = (max(xs) - min(xs)) or 1.0, (max(ys) - min(ys)) or 1.0
    norm = {i: ((points[i][0] - min(xs)) / sx, (points[i][1] - min(ys)) / sy) for i in idx}
    a = norm[max(idx, key=lambda i: (points[i][0], points[i][1]))]  # best clean
    b = norm[max(idx, key=lambda i: (points[i][1], points[i][0]))]  # best robust
    dx, dy = b[0] - a[0], b[1] - a[1]
    length = math.hypot(dx, dy) or 1.0
    return max(idx, key=lambda i: abs(dy * (norm[i][0] - a[0]) - dx * (norm[i][1] - a[1])) / length)


def eligible(row: dict[str, Any], clean_floor: float | None = None, include_flagged: bool = False) -> tuple[bool, str]:
    """(eligible, reason) for a trial row with ``status``, ``val_clean_acc``, ``val_robust_acc``, ``flags``."""
    if row.get("status") != TrialState.TERMINATED:
        status = row.get("status", TrialState.UNFINISHED)
        return False, "failed" if status == TrialState.ERROR else str(status).lower()
    clean, robust = row.get("val_clean_acc"), row.get("val_robust_acc")
    if clean is None or robust is None or not (math.isfinite(clean) and math.isfinite(robust)):
        return False, "no metrics"
    if clean_floor is not None and clean < clean_floor:
        return False, "infeasible"
    if row.get("flags") and not include_flagged:
        return False, "flagged"
    return True, "ok"


def pareto_table(
    rows: list[dict[str, Any]],
    objectives: tuple[str, str] = ("val_clean_acc", "val_robust_acc"),
    clean_floor: float | None = None,
    include_flagged: bool = False,
    reference: Point = REFERENCE,
) -> dict[str, Any]:
    """Mark each row ``pareto`` (and ``knee``), give each its ``eligibility``; return front and hypervolume."""
    ok = []
    for r in rows:
        good, why = eligible(r, clean_floor, include_flagged)
        r["eligibility"] = why
        r["pareto"] = False
        r["knee"] = False
        if good:
            ok.append(r)
    points = [(float(r[objectives[0]]), float(r[objectives[1]])) for r in ok]
    members = [ok[i] for i in front(points)]
    for r in members:
        r["pareto"] = True
    k = knee(points)
    if k is not None:
        ok[k]["knee"] = True
    return {
        "front": members,
        "hypervolume": hypervolume([points[i] for i in front(points)], reference),
        "reference": list(reference),
        "knee": ok[k] if k is not None else None,
        "objectives": list(objectives),
    }


def confirmed_choice(
    rows: Sequence[dict[str, Any]], objectives: Sequence[str] = ("val_clean_acc", "val_robust_acc")
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(knee, best robust) among the seed-confirmed rows, chosen on their confirmed means
    (``confirmed_<objective>``, search/confirm.py) as :func:`knee` and the highest robust mean; None when
    no row is confirmed. The search itself and the export choose so, once a search is confirmed."""
    x, y = objectives
    done = [r for r in rows if r.get(f"confirmed_{x}") is not None and r.get(f"confirmed_{y}") is not None]
    if not done:
        return None
    points = [(float(r[f"confirmed_{x}"]), float(r[f"confirmed_{y}"])) for r in done]
    k = knee(points)
    best = max(range(len(done)), key=lambda i: (points[i][1], points[i][0]))
    return done[k if k is not None else best], done[best]
