"""MOASHA: multi-objective asynchronous successive halving as a Ray Tune ``TrialScheduler``.

Schmucker et al. 2021 ("Multi-objective asynchronous successive halving"), whose implementation lives
in syne-tune and does not run on Ray; Ray's own ASHA is single-objective. Rungs sit at
``grace_period × η^k`` epochs below a trial's last epoch (grace 1, η 3, 5 epochs: rungs 1 and 3). When a
trial reports at a rung, its objective vector (validation clean accuracy, proxy robust accuracy) is
recorded there, and the trial continues only if it is among the top ``max(1, ⌈n/η⌉)`` of the ``n``
trials recorded at that rung so far (itself included). The order is non-dominated sorting (moocore)
and, inside a front, an ε-net as in MOASHA: the point with the best robust accuracy first, then
repeatedly the one farthest (in objectives scaled to [0, 1]) from those already chosen, so a front is
cut evenly rather than at one end. Decisions are asynchronous (no waiting for a rung to fill) and are
only ever CONTINUE or STOP, never PAUSE: Ray cannot resume the scheduler into a state it did not decide.
A stopped trial keeps the checkpoint of its last report.

The rung records and decisions are written atomically to ``<experiment>/scheduler.yaml`` at every
decision and read back when the scheduler is unpickled by ``Tuner.restore``: a resumed search (after
Ctrl-C or ``kill -9`` of the driver) neither forgets a rung nor restarts a stopped trial.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from ..files import atomic_write_text
from .pareto import ranks
from .settings import rung_epochs

# Not .json: on restore Ray copies every top-level *.json / *.pkl of the experiment folder into its driver
# staging folder and uploads that copy back at each snapshot, which would put a stale record over this one.
RECORD_FILE = "scheduler.yaml"


def eps_net_order(points: Sequence[tuple[float, float]], idx: list[int]) -> list[int]:
    """``idx`` (points of one front) in ε-net order: the best second objective first, then each time the
    point farthest from those chosen, distances in objectives scaled to [0, 1] over ``idx``."""
    if len(idx) <= 1:
        return list(idx)
    lo = [min(points[i][d] for i in idx) for d in (0, 1)]
    span = [(max(points[i][d] for i in idx) - lo[d]) or 1.0 for d in (0, 1)]
    scaled = {i: tuple((points[i][d] - lo[d]) / span[d] for d in (0, 1)) for i in idx}
    chosen = [max(idx, key=lambda i: (points[i][1], points[i][0], -i))]
    rest = [i for i in idx if i != chosen[0]]
    while rest:
        far = max(rest, key=lambda i: (min(math.dist(scaled[i], scaled[c]) for c in chosen), -i))
        chosen.append(far)
        rest.remove(far)
    return chosen


def selection_order(points: Sequence[tuple[float, float]]) -> list[int]:
    """All points in promotion order: front by front (non-dominated sorting), ε-net inside each."""
    r = ranks(points)
    order: list[int] = []
    for level in sorted(set(r)):
        order += eps_net_order(points, [i for i, v in enumerate(r) if v == level])
    return order


def promoted(candidate: str, records: dict[str, list[float]], reduction_factor: int) -> bool:
    """Whether ``candidate`` (recorded in ``records``) is in the top ``max(1, ⌈n/η⌉)`` of the rung."""
    ids = sorted(records)
    order = selection_order([(records[t][0], records[t][1]) for t in ids])
    keep = max(1, math.ceil(len(ids) / reduction_factor))
    return candidate in {ids[i] for i in order[:keep]}


class MOASHA(FIFOScheduler):
    """Ray Tune scheduler; ``objectives`` are two result keys, both maximised."""

    def __init__(
        self,
        objectives: Sequence[str],
        epochs: int,
        grace_period: int = 1,
        reduction_factor: int = 3,
        record_dir: str | Path | None = None,
        time_attr: str = "epoch",
    ):
        super().__init__()
        self.objectives = list(objectives)
        self.rungs = rung_epochs(epochs, grace_period, reduction_factor)
        self.reduction_factor = reduction_factor
        self.time_attr = time_attr
        self.record_path = str(Path(record_dir) / RECORD_FILE) if record_dir else None
        self.records: dict[str, dict[str, list[float]]] = {str(r): {} for r in self.rungs}
        self.decisions: dict[str, dict[str, str]] = {}  # trial id -> {rung: CONTINUE | STOP}
        self.stopped: dict[str, int] = {}  # trial id -> epoch it was stopped at
        self._load()

    # -- persistence: the records survive a killed driver ----------------------------------------------
    def _load(self) -> None:
        if self.record_path and Path(self.record_path).is_file():
            doc = yaml.safe_load(Path(self.record_path).read_text())
            self.records.update(doc["records"])
            self.decisions, self.stopped = doc["decisions"], doc["stopped"]

    def _save(self) -> None:
        if self.record_path:
            atomic_write_text(
                self.record_path,
                yaml.safe_dump(
                    {
                        "rungs": self.rungs,
                        "reduction_factor": self.reduction_factor,
                        "objectives": self.objectives,
                        "records": self.records,
                        "decisions": self.decisions,
                        "stopped": self.stopped,
                    },
                    sort_keys=False,
                ),
            )

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._load()  # Tuner.restore unpickles the scheduler as it was at the start: read what it decided since

    def set_search_properties(self, metric, mode, **spec) -> bool:
        return True  # the objectives are its own, not the searcher's

    # -- decisions ---------------------------------------------------------------------------------------
    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        epoch = result.get(self.time_attr)
        if epoch is None or str(epoch) not in self.records:
            return TrialScheduler.CONTINUE
        rung, tid = str(epoch), trial.trial_id
        earlier = self.decisions.get(tid, {}).get(rung)
        if earlier is not None:  # a resumed trial re-reporting a rung: the decision stands
            return earlier
        if any(result.get(k) is None or not math.isfinite(result[k]) for k in self.objectives):
            return TrialScheduler.CONTINUE  # nothing to compare: decided at the next rung
        self.records[rung][tid] = [float(result[k]) for k in self.objectives]
        decision = (
            TrialScheduler.CONTINUE if promoted(tid, self.records[rung], self.reduction_factor) else TrialScheduler.STOP
        )
        self.decisions.setdefault(tid, {})[rung] = decision
        if decision == TrialScheduler.STOP:
            self.stopped[tid] = int(epoch)
        self._save()
        return decision

    def debug_string(self) -> str:
        return f"MOASHA: rungs {self.rungs}, eta {self.reduction_factor}, stopped {len(self.stopped)}"
