r"""Seed confirmation of a search's winners: ``--confirm K`` retrains front members with K fresh seeds.

Every trial of a search trains with the search's seed, so its front is one draw of the training
lottery, and the member picked as best is the luckiest draw. After the search (and its test-split
report), the members to confirm (:func:`members`: the knee and the best robust first, then the rest of
the front by robust accuracy, then the trials just off the front; ``--confirm-top T`` of them, 0: the
whole front) are retrained with the
seeds ``seed + 1 .. seed + K`` as Ray tasks with a trial's resources. A retrain keeps the search's data
(``TrainConfig.split_seed``): the same training images, the same validation points, the same test
points; only the initialisation, the shuffling and the augmentation change. Each retrained model is
measured as a trial is (proxy and audit on the validation points) and audited on the test split. The
naive baseline is retrained with the same seeds, so that every seed has its own paired lift.

Each confirmed member then reports, over its 1 + K seeds, the mean and the sample std of
:data:`CONFIRMED` (``confirmed_<metric>``, ``confirmed_<metric>_std``, ``confirmed_<metric>_values``),
and its lift over the naive baseline on the test split (:func:`lift_over_seeds`). The knee and the best
robust are chosen again on the confirmed validation means (:func:`tune_div.search.pareto.confirmed_choice`).

Each (member, seed) lives in ``<experiment>/confirm/<trial>/seed_<s>/``: its checkpoint while it trains
(resumed from there), then ``result.json`` once measured (the weights are then deleted). A ``--resume``
reads the finished ones back and retrains nothing that finished.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..eval.intervals import paired_lift, points_mask
from ..files import atomic_write_text
from .trial_config import TrialConfig

CONFIRMED = ("val_clean_acc", "val_robust_acc", "test_clean_acc", "test_robust_acc")
FOLDER = "confirm"
RESULT_FILE = "result.json"
NAIVE = "naive-baseline"  # the folder of the baseline's seeds
ALPHA = 0.05
# the row keys a confirmation adds (pareto.csv/json, trials.csv); ``*_values`` are lists, one per seed
COLUMNS = (
    "confirm_seeds",
    *(f"confirmed_{m}{suffix}" for m in CONFIRMED for suffix in ("", "_std")),
    "confirmed_lift",
    "confirmed_lift_std",
    "confirmed_lift_p",
    "confirmed_lift_significant",
    "confirmed_lift_verdict",
    *(f"confirmed_{m}_values" for m in CONFIRMED),
    "confirmed_lift_values",
    "confirm_errors",
)
# numbers logged as ``final_<key>`` on a member's MLflow run, and read back by the export
LOGGED = (
    *(f"confirmed_{m}{suffix}" for m in CONFIRMED for suffix in ("", "_std")),
    "confirmed_lift",
    "confirmed_lift_std",
    "confirmed_lift_p",
    "confirmed_seeds",
)


def seeds(search_seed: int, k: int) -> list[int]:
    """The K fresh training seeds of a search with seed ``search_seed``."""
    return [search_seed + j for j in range(1, k + 1)]


def seed_config(config: TrialConfig, seed: int) -> TrialConfig:
    """``config`` retrained with training seed ``seed`` on the same data, its test split measured at the end."""
    split = config.base.get("split_seed")
    base = {**config.base, "seed": seed, "split_seed": config.base["seed"] if split is None else split}
    return config.replace(base=base, test_report=True)


def members(
    table: dict[str, Any], top: int, objectives: Sequence[str], rows: Sequence[dict[str, Any]] = ()
) -> list[dict[str, Any]]:
    """The trials to confirm, in order: the knee, the best robust, the rest of the front by robust
    accuracy, then the eligible trials off the front by robust accuracy (a seed may have pushed them off
    it); the first ``top`` of them (0: the front alone). Only trials with a config can be retrained."""
    x, y = objectives

    def by_robust(rs):
        return sorted(rs, key=lambda r: (-float(r[y]), -float(r[x])))

    front = [r for r in table["front"] if r.get("config") is not None]
    off = [r for r in rows if r.get("eligibility") == "ok" and not r.get("pareto") and r.get("config") is not None]
    ordered = [r for r in front if r.get("knee")] + by_robust(front)
    out: list[dict[str, Any]] = []
    for r in ordered:
        if all(r is not o for o in out):
            out.append(r)
    return out if top == 0 else (out + by_robust(off))[:top]


def retrain(config: TrialConfig, folder: str) -> dict[str, Any]:
    """Train ``config`` (a :func:`seed_config`) in ``folder``, resuming from its checkpoint there; its final
    metrics (validation and test, with their per-point masks and ``time_s``), also written as
    ``result.json``. A folder that holds ``result.json`` is read, not trained again. Runs as a Ray task."""
    from .trainable import CHECKPOINT_FILE, METRICS_FILE, run_trial

    f = Path(folder)
    done = f / RESULT_FILE
    if done.is_file():
        return json.loads(done.read_text())
    f.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    def report(metrics: dict[str, Any], trainer) -> None:
        trainer.save_checkpoint(f / CHECKPOINT_FILE)  # atomic: a kill leaves the last whole epoch
        atomic_write_text(f / METRICS_FILE, json.dumps(metrics, default=float))

    last = run_trial(config, report, str(f))
    out = {k: v for k, v in last.items() if k.startswith(("val_", "test_", "proxy_")) or k in ("flags", "epoch")}
    out["time_s"] = time.perf_counter() - t0
    atomic_write_text(done, json.dumps(out, default=float))
    (f / CHECKPOINT_FILE).unlink(missing_ok=True)  # measured: no weights are kept
    return out


def _std(values: Sequence[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def lift_over_seeds(member: Sequence[str | None], naive: Sequence[str | None]) -> tuple[list[float], float | None]:
    """Per-seed test-split lifts over the naive baseline of the same seed, and the exact McNemar p-value
    pooled over every (seed, point) pair (``None`` where no seed has both masks). ``member`` and
    ``naive`` are the seeds' ``test_robust_points`` texts, in the same seed order."""
    lifts: list[float] = []
    a: list[bool] = []
    b: list[bool] = []
    for m, n in zip(member, naive):
        if not m or not n or len(m) != len(n):
            continue
        ma, mb = points_mask(m), points_mask(n)
        lifts.append((sum(ma) - sum(mb)) / len(ma))
        a += ma
        b += mb
    return lifts, (paired_lift(a, b).p_value if a else None)


def verdict(lifts: Sequence[float], p: float | None) -> str:
    """``better`` or ``worse`` than the baseline when the pooled p < 0.05 and every seed's lift has that
    sign; else ``not told apart``."""
    if not lifts or p is None or p >= ALPHA:
        return "not told apart"
    if min(lifts) > 0:
        return "better"
    if max(lifts) < 0:
        return "worse"
    return "not told apart"


def summarize(row: dict[str, Any], results: dict[int, dict[str, Any]], naive: dict[int, dict[str, Any]]) -> None:
    """Set the confirmed numbers on ``row`` from its per-seed ``results`` (the search's seed included) and
    the naive baseline's (same seeds). Significant (:func:`verdict` ``better``): pooled McNemar p < 0.05
    and a positive lift on every seed (a winner whose lift changes sign with the seed is not confirmed)."""
    order = sorted(results)
    row["confirm_seeds"] = order
    for m in CONFIRMED:
        values = [float(results[s][m]) for s in order if results[s].get(m) is not None]
        row[f"confirmed_{m}_values"] = values
        row[f"confirmed_{m}"] = statistics.fmean(values) if values else None
        row[f"confirmed_{m}_std"] = _std(values) if values else None
    paired = [s for s in order if s in naive]
    lifts, p = lift_over_seeds(
        [results[s].get("test_robust_points") for s in paired], [naive[s].get("test_robust_points") for s in paired]
    )
    row["confirmed_lift_values"] = lifts
    row["confirmed_lift"] = statistics.fmean(lifts) if lifts else None
    row["confirmed_lift_std"] = _std(lifts) if lifts else None
    row["confirmed_lift_p"] = p
    row["confirmed_lift_verdict"] = verdict(lifts, p)
    row["confirmed_lift_significant"] = row["confirmed_lift_verdict"] == "better"


@dataclass
class Confirmation:
    """What a confirmation did: the members confirmed, the trainings it ran (and found finished), their
    compute time, the failures; the knee and best robust before and after."""

    seeds: list[int]
    members: list[str] = field(default_factory=list)
    trained: int = 0
    reused: int = 0
    compute_s: float = 0.0
    wall_s: float = 0.0
    failures: list[str] = field(default_factory=list)
    search_knee: str | None = None
    knee: str | None = None
    search_best: str | None = None
    best: str | None = None
    interrupted: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


Logger = Callable[[str, int, dict[str, Any] | None, str], None]  # (trial, seed, metrics or None, error)


def run(
    jobs: dict[tuple[str, int], tuple[TrialConfig, Path]],
    task: Any,
    measure_naive: Callable[[int], Any] | None,
    naive_seeds: Sequence[int],
    log: Logger,
    say: Callable[[str], None],
) -> tuple[dict[tuple[str, int], dict[str, Any]], dict[int, dict[str, Any]], Confirmation]:
    """Run every (trial, seed) job not finished before, and the naive baseline's seeds, as Ray tasks.

    ``jobs`` maps (trial id, seed) to the config and the folder; ``task`` is the Ray remote of
    :func:`retrain`, ``measure_naive(seed)`` submits the baseline's task of a seed (its cache makes a
    measured one free). ``log`` records each finished (or failed) job; ``say`` prints. Returns the
    results by job, the baseline's by seed, and the :class:`Confirmation` (seeds, counts, times)."""
    import ray

    conf = Confirmation(seeds=sorted({s for _, s in jobs}))
    t0 = time.perf_counter()
    results: dict[tuple[str, int], dict[str, Any]] = {}
    pending: dict[Any, tuple[str, int]] = {}
    for key, (config, folder) in jobs.items():
        done = folder / RESULT_FILE
        if done.is_file():  # finished before the search was cut short: read, never retrained
            results[key] = json.loads(done.read_text())
            conf.reused += 1
            log(key[0], key[1], results[key], "")
            continue
        pending[task.remote(config, str(folder))] = key
    naive_refs = {measure_naive(s): s for s in naive_seeds} if measure_naive else {}
    if conf.reused:
        say(f"confirmation: {conf.reused} seed(s) finished before, read back (not retrained)")
    total = len(jobs)
    naive: dict[int, dict[str, Any]] = {}
    try:
        todo = list(pending) + list(naive_refs)
        while todo:
            ready, todo = ray.wait(todo, num_returns=1)
            ref = ready[0]
            if ref in naive_refs:
                seed = naive_refs[ref]
                try:
                    naive[seed] = ray.get(ref)
                except Exception as exc:
                    conf.failures.append(f"naive baseline seed {seed}: {_reason(exc)}")
                    say(f"confirmation: naive baseline seed {seed} failed: {_reason(exc)}")
                continue
            tid, seed = pending[ref]
            try:
                out = ray.get(ref)
            except Exception as exc:  # a member that diverges on a fresh seed: said, and confirmed without it
                conf.failures.append(f"{tid} seed {seed}: {_reason(exc)}")
                log(tid, seed, None, _reason(exc))
                say(f"[{tid}] seed {seed} failed: {_reason(exc)}")
                continue
            results[(tid, seed)] = out
            conf.trained += 1
            conf.compute_s += float(out.get("time_s") or 0.0)
            log(tid, seed, out, "")
            say(
                f"[{tid}] seed {seed}: val robust {_num(out.get('val_robust_acc'))}, test robust "
                f"{_num(out.get('test_robust_acc'))} (confirmation {len(results)} of {total})"
            )
    except KeyboardInterrupt:
        for ref in pending:
            ray.cancel(ref, force=True)
        conf.interrupted = True
    conf.wall_s = time.perf_counter() - t0
    return results, naive, conf


def _reason(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[-1] if lines else type(exc).__name__


def _num(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, (int, float)) and math.isfinite(v) else "-"


def noise_summary(doc: dict[str, Any]) -> dict[str, Any]:
    """What a confirmed search's ``pareto.json`` says about its noise (README, "How sure each number is"):

    - ``seed_std``: each confirmed member's std of validation robust accuracy over its seeds, against
      ``front_spread``, the range of validation robust accuracy along the search's front;
    - ``significant_before`` / ``significant_after``: confirmed members with a significant lift on the
      search's seed (validation, exact McNemar) and after confirmation (:func:`summarize`'s rule);
    - ``rank_correlation``: Spearman's rho between the search-time and the confirmed robust accuracy
      (scipy; None below 3 members); ``knee_changed``;
    - ``shared_seed_ratio``: over pairs of members, mean Var(a - b) / (Var(a) + Var(b)) of their per-seed
      validation robust accuracies: below 1, a seed moves configs alike, and trials that share it are
      compared paired; ``naive_pairing_ratio``: the same between each member and the naive baseline
      (test split), which says whether pairing the lift by seed helps.
    """
    from itertools import combinations

    from scipy.stats import spearmanr

    x, y = doc["objectives"]
    conf, confirmed = doc.get("confirmation"), doc.get("confirmed") or []
    if not conf or not confirmed:
        raise ValueError("the search was not seed-confirmed: run it with --confirm K (or --resume DIR --confirm K)")
    front = [float(r[y]) for r in doc["front"]]
    search = [float(r[y]) for r in confirmed]
    means = [float(r[f"confirmed_{y}"]) for r in confirmed]

    def ratio(pairs: list[tuple[list[float], list[float]]]) -> float | None:
        out = []
        for a, b in pairs:
            if len(a) == len(b) > 1:
                denom = statistics.variance(a) + statistics.variance(b)
                if denom > 0:
                    out.append(statistics.variance([u - v for u, v in zip(a, b)]) / denom)
        return statistics.fmean(out) if out else None

    values = [r[f"confirmed_{y}_values"] for r in confirmed]
    test_values = [r["confirmed_test_robust_acc_values"] for r in confirmed]
    naive_values = [
        [m - lift for m, lift in zip(t, r["confirmed_lift_values"])]
        for t, r in zip(test_values, confirmed)
        if len(r["confirmed_lift_values"]) == len(t)
    ]
    return {
        "members": [r["trial_id"] for r in confirmed],
        "seeds": [doc["settings"]["seed"], *conf["seeds"]],
        "seed_std": {r["trial_id"]: r[f"confirmed_{y}_std"] for r in confirmed},
        "front_spread": max(front) - min(front) if front else None,
        "search_robust": dict(zip((r["trial_id"] for r in confirmed), search)),
        "confirmed_robust": dict(zip((r["trial_id"] for r in confirmed), means)),
        "significant_before": sum(
            (r.get("audit_lift_p") or 1) < ALPHA and (r.get("audit_lift_over_naive") or 0) > 0 for r in confirmed
        ),
        "significant_after": sum(bool(r.get("confirmed_lift_significant")) for r in confirmed),
        "rank_correlation": float(spearmanr(search, means).statistic) if len(confirmed) >= 3 else None,
        "knee_changed": conf.get("knee") != conf.get("search_knee"),
        "knee": conf.get("knee"),
        "search_knee": conf.get("search_knee"),
        "shared_seed_ratio": ratio(list(combinations(values, 2))),
        "naive_pairing_ratio": ratio(list(zip(test_values, naive_values))),
        "compute_s": conf.get("compute_s"),
        "search_compute_s": conf.get("search_compute_s"),
    }
