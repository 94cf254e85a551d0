"""Pareto front, hypervolume and knee against brute force and hand-computed values."""

from __future__ import annotations

import random

import pytest

from tune_div.search import pareto


def brute_front(points):
    return {i for i, p in enumerate(points) if not any(q[0] >= p[0] and q[1] >= p[1] and q != p for q in points)}


@pytest.mark.parametrize("seed", range(5))
def test_front_matches_brute_force(seed):
    rng = random.Random(seed)
    points = [(round(rng.random(), 2), round(rng.random(), 2)) for _ in range(40)]
    assert set(pareto.front(points)) == brute_front(points)


def test_hypervolume_by_hand_and_by_grid():
    pts = [(0.99, 0.1), (0.98, 0.3), (0.95, 0.5), (0.8, 0.6)]
    assert pareto.hypervolume(pts) == pytest.approx(0.99 * 0.1 + 0.98 * 0.2 + 0.95 * 0.2 + 0.8 * 0.1)
    rng = random.Random(3)
    rand = [(rng.random(), rng.random()) for _ in range(15)]
    n = 400  # independent check: share of grid cell centres dominated by some point
    cells = sum(any(px >= (i + 0.5) / n and py >= (j + 0.5) / n for px, py in rand) for i in range(n) for j in range(n))
    assert pareto.hypervolume(rand) == pytest.approx(cells / n**2, abs=5e-3)
    assert pareto.hypervolume(rand) == pytest.approx(pareto.hypervolume([rand[i] for i in pareto.front(rand)]))
    assert pareto.hypervolume([(1.0, 1.0)]) == 1.0 and pareto.hypervolume([]) == 0.0


def test_knee_is_the_balanced_point():
    pts = [(0.99, 0.05), (0.97, 0.40), (0.90, 0.45), (0.60, 0.50), (0.5, 0.3)]
    assert pareto.knee(pts) == 1


def test_table_excludes_failed_infeasible_and_flagged_trials():
    rows = [
        {"trial_id": "a", "status": "TERMINATED", "val_clean_acc": 0.99, "val_robust_acc": 0.2, "flags": ""},
        {
            "trial_id": "b",
            "status": "TERMINATED",
            "val_clean_acc": 0.97,
            "val_robust_acc": 0.9,
            "flags": "vanishing_input_gradients",
        },
        {"trial_id": "c", "status": "ERROR", "val_clean_acc": 0.99, "val_robust_acc": 0.99, "flags": ""},
        {"trial_id": "d", "status": "TERMINATED", "val_clean_acc": 0.70, "val_robust_acc": 0.8, "flags": ""},
        {"trial_id": "e", "status": "TERMINATED", "val_clean_acc": 0.95, "val_robust_acc": 0.5, "flags": ""},
    ]
    t = pareto.pareto_table(rows, clean_floor=0.9)
    assert [r["trial_id"] for r in t["front"]] == ["a", "e"]
    assert {r["trial_id"]: r["eligibility"] for r in rows} == {
        "a": "ok",
        "b": "flagged",
        "c": "failed",
        "d": "infeasible",
        "e": "ok",
    }
    with_flagged = pareto.pareto_table([dict(r) for r in rows], clean_floor=0.9, include_flagged=True)
    assert [r["trial_id"] for r in with_flagged["front"]] == ["a", "b"]
