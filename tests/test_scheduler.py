"""MOASHA's promotion rule on hand-made rung records, and its persistence across a restore."""

from __future__ import annotations

import itertools
import pickle
import random

import pytest

from tune_div.search.pareto import ranks
from tune_div.search.scheduler import MOASHA, eps_net_order, promoted, selection_order
from tune_div.search.settings import rung_epochs


def test_rungs_sit_at_grace_times_eta_powers_below_the_last_epoch():
    assert rung_epochs(5, 1, 3) == [1, 3]
    assert rung_epochs(50, 1, 3) == [1, 3, 9, 27]
    assert rung_epochs(50, 2, 2) == [2, 4, 8, 16, 32]
    assert rung_epochs(1, 1, 3) == [] and rung_epochs(3, 1, 3) == [1]


def test_a_dominated_trial_stops_and_the_non_dominated_one_goes_on():
    rung = {"a": (0.90, 0.50), "b": (0.80, 0.40), "c": (0.85, 0.45)}  # a dominates both others
    assert [t for t in rung if promoted(t, rung, 3)] == ["a"]  # top ceil(3/3) = 1


def test_the_first_trials_at_a_rung_go_on_alone_then_the_top_third():
    rung: dict = {}
    decisions = []
    for tid, point in [("a", (0.5, 0.1)), ("b", (0.9, 0.6)), ("c", (0.6, 0.2)), ("d", (0.95, 0.3))]:
        rung[tid] = point
        decisions.append(promoted(tid, rung, 3))
    # a: alone, kept (k = 1); b: better than a, kept; c: dominated by b, stopped;
    # d: n = 4 -> k = 2, front {b, d}: kept
    assert decisions == [True, True, False, True]


def test_ties_inside_a_front_are_cut_evenly_by_the_eps_net():
    # Five mutually non-dominated points along a front; keep 2 of 5 (eta 3: ceil(5/3) = 2).
    front = {"p0": (0.99, 0.10), "p1": (0.97, 0.30), "p2": (0.95, 0.50), "p3": (0.93, 0.52), "p4": (0.90, 0.60)}
    kept = {t for t in front if promoted(t, front, 3)}
    # The best robust point first, then the one farthest from it in scaled objectives: the other extreme.
    assert kept == {"p4", "p0"}
    points = list(front.values())
    assert eps_net_order(points, list(range(5)))[:3] == [4, 0, 2]  # then the middle of the front


def test_identical_points_are_kept_by_id_deterministically():
    rung = {"x": (0.9, 0.5), "y": (0.9, 0.5), "z": (0.9, 0.5)}
    assert [t for t in rung if promoted(t, rung, 3)] == ["x"]


@pytest.mark.parametrize("seed", range(5))
def test_selection_order_is_front_by_front(seed):
    rng = random.Random(seed)
    points = [(round(rng.random(), 2), round(rng.random(), 2)) for _ in range(25)]
    order = selection_order(points)
    assert sorted(order) == list(range(25))
    r = ranks(points)
    assert [r[i] for i in order] == sorted(r)  # never a worse front before a better one
    # ranks against brute-force non-dominated sorting
    left, level, brute = set(range(25)), 0, {}
    while left:
        top = {
            i
            for i in left
            if not any(
                points[j][0] >= points[i][0] and points[j][1] >= points[i][1] and points[j] != points[i] for j in left
            )
        }
        brute.update({i: level for i in top})
        left -= top
        level += 1
    assert r == [brute[i] for i in range(25)]


class FakeTrial:
    def __init__(self, trial_id):
        self.trial_id = trial_id


def test_decisions_are_recorded_on_disk_and_survive_an_unpickle(tmp_path):
    sched = MOASHA(["val_clean_acc", "val_robust_acc"], epochs=9, record_dir=tmp_path)
    results = {"a": (0.9, 0.5), "b": (0.8, 0.4), "c": (0.95, 0.3)}
    pickled_at_start = pickle.dumps(sched)  # Tuner pickles the scheduler when the search starts
    got = {
        t: sched.on_trial_result(None, FakeTrial(t), {"epoch": 1, "val_clean_acc": c, "val_robust_acc": r})
        for t, (c, r) in results.items()
    }
    # b is dominated by a; c is on the front with a, but n = 3 keeps one, and a has the better robust value
    assert got == {"a": "CONTINUE", "b": "STOP", "c": "STOP"}
    assert sched.on_trial_result(None, FakeTrial("a"), {"epoch": 2, "val_clean_acc": 0.1}) == "CONTINUE"  # no rung
    restored = pickle.loads(pickled_at_start)  # what Tuner.restore gives back after a driver kill
    assert restored.stopped == {"b": 1, "c": 1} and restored.records["1"] == {k: list(v) for k, v in results.items()}
    # A trial that restarts from an earlier checkpoint and reports the rung again gets the same answer.
    assert (
        restored.on_trial_result(None, FakeTrial("b"), {"epoch": 1, "val_clean_acc": 0.99, "val_robust_acc": 0.99})
        == "STOP"
    )
    assert list(itertools.islice(restored.records["1"], 3)) == ["a", "b", "c"]  # arrival order kept
