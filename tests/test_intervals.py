"""Intervals, the paired lift and the lift hypervolume, each against values worked out in the test:
Wilson's bounds from the score equation, Clopper–Pearson's from the binomial tails, McNemar from a
hand-counted 2×2 table, the hypervolume from a brute-force count of grid cells."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binom, norm

from tune_div.eval.intervals import Interval, accuracy_interval, annotate, interval_of, paired_lift, wilson
from tune_div.search.pareto import hypervolume, lift_hypervolume


@pytest.mark.parametrize("k, n", [(117, 200), (0, 50), (50, 50), (3, 500), (341, 500), (1, 1)])
def test_wilson_bounds_solve_the_score_equation(k, n):
    """Wilson's interval is every p with |k − n p| <= z sqrt(n p (1 − p)): its bounds are the roots of
    (k − n p)² = z² n p (1 − p), a quadratic in p, solved here on its own."""
    z = norm.ppf(0.975)
    a, b, c = n * n + z * z * n, -(2 * k * n + z * z * n), k * k  # a p² + b p + c = 0
    disc = math.sqrt(b * b - 4 * a * c)
    low, high = (-b - disc) / (2 * a), (-b + disc) / (2 * a)
    ci = wilson(k, n)
    assert ci.value == k / n and ci.n == n
    assert ci.low == pytest.approx(max(0.0, low), abs=1e-9) and ci.high == pytest.approx(min(1.0, high), abs=1e-9)


def test_the_issues_examples():
    """0.68 on 500 points (the ``small`` objective): a 95% interval of about ±0.04. 0.585 on 200 (the
    smoke search's knee): one standard error is 0.035, so the 95% half-width is about twice that."""
    assert accuracy_interval(0.68, 500).half_width == pytest.approx(0.041, abs=0.001)
    ci = accuracy_interval(0.585, 200)
    assert ci.half_width == pytest.approx(1.96 * math.sqrt(0.585 * 0.415 / 200), abs=0.002)
    assert str(ci) == "0.585 ±0.068"
    assert str(accuracy_interval(0.012, 500)).startswith("0.012 [")  # lopsided near 0: the bounds


def test_accuracies_must_be_proportions():
    with pytest.raises(ValueError):
        accuracy_interval(1.2, 10)
    with pytest.raises(ValueError):
        accuracy_interval(0.5, 0)


def masks(table: dict[tuple[bool, bool], int]) -> tuple[list[bool], list[bool]]:
    """Per-point correctness of A and B from a 2×2 table of counts."""
    a, b = [], []
    for (ra, rb), count in table.items():
        a += [ra] * count
        b += [rb] * count
    return a, b


def test_mcnemar_and_the_paired_interval_from_a_hand_counted_table():
    # 40 points: both right 25, A only 7, B only 1, both wrong 7
    a, b = masks({(True, True): 25, (True, False): 7, (False, True): 1, (False, False): 7})
    lift = paired_lift(a, b)
    assert (lift.n, lift.b, lift.c) == (40, 7, 1)
    assert lift.lift == pytest.approx((7 - 1) / 40)
    # exact McNemar: two-sided binomial test of 1 in 8 at 1/2 = 2 (C(8,0) + C(8,1)) / 2^8
    assert lift.p_value == pytest.approx(2 * (math.comb(8, 0) + math.comb(8, 1)) / 2**8)
    assert not lift.significant
    # the interval: Clopper–Pearson bounds of 7/8, each found from a binomial tail, mapped to the lift
    lo = next(p for p in np.linspace(0, 1, 200001) if binom.sf(6, 8, p) >= 0.025)  # P(X >= 7 | p) = 0.025
    hi = next(p for p in np.linspace(1, 0, 200001) if binom.cdf(7, 8, p) >= 0.025)  # P(X <= 7 | p) = 0.025
    assert lift.low == pytest.approx(8 / 40 * (2 * lo - 1), abs=1e-4)
    assert lift.high == pytest.approx(8 / 40 * (2 * hi - 1), abs=1e-4)
    assert lift.low < 0 < lift.high  # agrees with the test: not significant, the interval holds 0


def test_a_clear_lift_is_significant_and_its_interval_excludes_zero():
    a, b = masks({(True, True): 20, (True, False): 9, (False, False): 11})
    lift = paired_lift(a, b)
    assert lift.p_value == pytest.approx(2 / 2**9) and lift.significant
    # no point favours B, so the share's upper bound is 1 and the lift's upper bound is the lift itself
    assert lift.lift == pytest.approx(9 / 40) and 0 < lift.low < lift.lift == pytest.approx(lift.high)
    assert "*" in str(lift)


def test_identical_models_have_no_lift():
    a, b = masks({(True, True): 10, (False, False): 5})
    lift = paired_lift(a, b)
    assert (lift.lift, lift.low, lift.high, lift.p_value) == (0.0, 0.0, 0.0, 1.0)
    with pytest.raises(ValueError):
        paired_lift([True], [True, False])


def test_annotate_writes_n_and_bounds_beside_each_accuracy():
    row = annotate(
        {"val_robust_acc": 0.585, "val_clean_acc": None, "epoch": 3}, {"val_robust_acc": 200, "val_clean_acc": 10}
    )
    assert row["val_robust_acc_n"] == 200 and row["epoch"] == 3 and "val_clean_acc_n" not in row
    assert (row["val_robust_acc_ci_low"], row["val_robust_acc_ci_high"]) == pytest.approx(
        (wilson(117, 200).low, wilson(117, 200).high)
    )
    assert interval_of(row, "val_robust_acc") == Interval(
        0.585, row["val_robust_acc_ci_low"], row["val_robust_acc_ci_high"], 200
    )
    assert interval_of(row, "val_clean_acc") is None


def brute_force_area(points, reference, cells=800):
    """The share of grid cells above ``reference`` that some point dominates, times the box's area."""
    xs = np.linspace(reference[0], 1, cells, endpoint=False) + (1 - reference[0]) / cells / 2
    ys = np.linspace(reference[1], 1, cells, endpoint=False) + (1 - reference[1]) / cells / 2
    gx, gy = np.meshgrid(xs, ys)
    covered = np.zeros_like(gx, dtype=bool)
    for px, py in points:
        covered |= (gx <= px) & (gy <= py)
    return covered.mean() * (1 - reference[0]) * (1 - reference[1])


@pytest.mark.parametrize("floor", [None, 0.8])
def test_the_lift_hypervolume_is_the_area_above_the_baseline(floor):
    front = [(0.97, 0.42), (0.95, 0.55), (0.90, 0.61), (0.82, 0.70)]
    base = 0.5  # the naive baseline's robust accuracy
    reference = (floor or 0.0, base)
    assert lift_hypervolume(front, base, floor) == pytest.approx(brute_force_area(front, reference), abs=2e-3)
    assert lift_hypervolume(front, base, floor) < hypervolume(front)
    assert lift_hypervolume(front, 0.75, floor) == 0.0  # no member above the baseline: no lift at all
