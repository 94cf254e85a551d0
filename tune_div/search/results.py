"""A search's results: one row per trial, the files ``trials.csv`` / ``pareto.csv`` / ``pareto.json``,
and the table printed at the end.

Row keys: ``trial_id``, ``status`` (TERMINATED, ERROR, UNFINISHED), ``error`` (the one-line reason of
a failed trial), ``hparams``, ``train``, ``epoch``, ``flags``, the validation and test metrics (robust:
the audit, with the proxy as its own column), and after :func:`~tune_div.search.pareto.pareto_table`
``pareto``, ``knee``, ``eligibility``, after :func:`~tune_div.search.baseline.lift`
``audit_lift_over_naive``. The naive baseline is printed under the front as a reference row.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..eval.intervals import SUFFIXES, interval_of
from ..files import atomic_write_text
from ..progress import duration
from ..tracking.tracker import FINAL_METRICS as METRICS
from ..tracking.tracker import LIFT_METRICS
from . import ray_layout, states
from .baseline import BASELINE_ID, significant_lift
from .confirm import COLUMNS as CONFIRM_COLUMNS
from .settings import BUDGET_CHECKS, FINAL, Settings
from .states import TrialState
from .trial_config import TrialConfig

# beside each accuracy X: X_n (its points), X_ci_low and X_ci_high (its 95% Wilson interval)
INTERVALS = [f"{m}{suffix}" for m in METRICS for suffix in SUFFIXES]
# the lift over the naive baseline on the same points: value, 95% paired interval, exact McNemar p
LIFT = list(LIFT_METRICS)
COLUMNS = [
    "trial_id",
    "status",
    "pareto",
    "knee",
    "eligibility",
    *METRICS,
    *INTERVALS,
    *LIFT,
    *CONFIRM_COLUMNS,
    "flags",
    "hparams",
    "train",
    "error",
]


def hparams_text(hparams: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in hparams.items()) or "defaults"


def trial_error(trial_or_result) -> str:
    """The one-line reason of a failed trial (the DivergenceError message when it diverged)."""
    err = getattr(trial_or_result, "error", None)
    text = str(err) if err is not None else ""
    path = getattr(trial_or_result, "error_file", None)
    if path and Path(path).is_file():
        text = Path(path).read_text()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if "Error" in ln and ":" in ln:
            return ln.split("Error: ", 1)[-1] if "DivergenceError" in ln else ln
    return lines[-1] if lines else "unknown error"


def collect(grid, stopped: dict[str, int] | None = None) -> list[dict[str, Any]]:
    """Rows from a Ray ``ResultGrid``, sorted by trial id; ``stopped`` maps the trials the scheduler stopped
    to their rung (status ``STOPPED@<epoch>``)."""
    rows = []
    for r in grid:
        m = r.metrics or {}  # a trial interrupted before its first report has neither metrics nor config
        config = TrialConfig.from_dict(r.config) if r.config else None
        tid = m.get("trial_id") or ray_layout.trial_id(r.path)
        # Ray reports a trial stopped before its first result as a FileNotFoundError about its result files
        never_reported = isinstance(r.error, FileNotFoundError) and not m
        status: str = (
            TrialState.ERROR
            if r.error and not never_reported
            else (TrialState.TERMINATED if m.get(FINAL) else TrialState.UNFINISHED)
        )
        if status == TrialState.UNFINISHED and stopped and tid in stopped:
            status = states.stopped(stopped[tid])
        rows.append(
            {
                "trial_id": tid,
                "status": status,
                "error": trial_error(r) if status == TrialState.ERROR else "",
                "hparams": dict(config.hparams) if config else {},
                "train": dict(config.train) if config else {},
                "epoch": m.get("epoch"),
                "time_total_s": m.get("time_total_s"),
                "flags": m.get("flags", ""),
                **{k: m.get(k) for k in (*METRICS, *INTERVALS, "val_robust_points")},
                "path": r.path,
                "config": config,
                "checkpoint": r.checkpoint,
            }
        )
    return sorted(rows, key=lambda row: str(row["trial_id"]))


def _csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        lists = {k: json.dumps(r[k]) for k in CONFIRM_COLUMNS if isinstance(r.get(k), list)}
        w.writerow({**r, **lists, "hparams": json.dumps(r["hparams"]), "train": json.dumps(r["train"])})
    return buf.getvalue()


def robust_label(s: Settings) -> str:
    """What the robust numbers of a search are: audited (and how), or the proxy."""
    return f"audited ({s.audit} preset, docs/audit.md)" if s.audit != "off" else "PROXY, not audited (--audit off)"


def write_results(
    s: Settings, rows: list[dict[str, Any]], table: dict[str, Any], base: dict[str, Any] | None = None
) -> list[Path]:
    """``trials.csv`` (every trial), ``pareto.csv`` and ``pareto.json`` (the front, the naive baseline),
    written atomically."""
    doc = {
        "settings": asdict(s),
        "objectives": table["objectives"],
        "robust": robust_label(s),
        "hypervolume": table["hypervolume"],
        "reference": table["reference"],
        "lift_hypervolume": table.get("lift_hypervolume"),
        "knee": table["knee"]["trial_id"] if table["knee"] else None,
        "front": [{k: r.get(k) for k in COLUMNS} for r in table["front"]],
        "naive_baseline": {k: v for k, v in base.items() if not k.endswith("_points")} if base else None,
        "significant_lift": sum(significant_lift(r) for r in table["front"]) if base else None,
        # with --confirm: the seeds, members, costs, and the knee and best robust before and after
        "confirmation": table.get("confirmation"),
        "confirmed": [{k: r.get(k) for k in COLUMNS} for r in table.get("confirmed", [])],
    }
    return [
        atomic_write_text(s.path / "trials.csv", _csv(rows)),
        atomic_write_text(s.path / "pareto.csv", _csv(table["front"])),
        atomic_write_text(s.path / "pareto.json", json.dumps(doc, indent=2, default=str)),
    ]


def _fmt(v) -> str:
    return f"{v:.4f}" if isinstance(v, (int, float)) and math.isfinite(v) else "-"


def _fmt_ci(r: dict[str, Any], key: str) -> str:
    """``0.4950±0.069`` (the 95% half-width), the value alone where the row has no point count."""
    ci = interval_of(r, key)
    return f"{ci.value:.4f}±{ci.half_width:.3f}" if ci is not None else _fmt(r.get(key))


def print_table(
    s: Settings, rows: list[dict[str, Any]], table: dict[str, Any], base: dict[str, Any] | None = None
) -> None:
    failed = [r for r in rows if r["status"] == TrialState.ERROR]
    n_stopped = sum(states.is_stopped(r["status"]) for r in rows)
    conf = table.get("confirmation")
    print(
        f"\n{len(rows)} trials: {sum(r['status'] == 'TERMINATED' for r in rows)} finished, "
        f"{n_stopped} stopped at a rung, {len(failed)} failed, "
        f"{sum(r['eligibility'] == 'flagged' for r in rows)} flagged, "
        f"{sum(r['eligibility'] == 'infeasible' for r in rows)} infeasible"
        + (
            f"; seed confirmation: {len(conf['members'])} member(s) x {len(conf['seeds'])} seed(s), "
            f"{duration(conf['compute_s'])} of compute"
            if conf
            else ""
        )
    )
    for r in failed:
        print(f"  failed {r['trial_id']}: {r['error']}")
    for r in rows:
        if r["eligibility"] == "flagged":
            print(f"  flagged {r['trial_id']}: {r['flags']} (docs/flags.md)")
    x, y = table["objectives"]
    lift_hv = table.get("lift_hypervolume")
    print(
        f"Pareto front ({x} vs {y}; robust accuracy {robust_label(s)}), hypervolume {table['hypervolume']:.4f} "
        f"(reference {tuple(table['reference'])})"
        + (f", above the naive baseline {lift_hv:.4f}" if lift_hv is not None else "")
        + ":"
    )
    print(
        f"  {'trial':<15} {'clean':>7} {'robust ±95%':>12} {'proxy':>7} {'test clean':>10} {'test robust ±95%':>16} "
        f"{'lift':>8}  hyperparameters"
    )

    def line(tid, r, tail):
        lift = r.get("audit_lift_over_naive")
        print(
            f"  {str(tid):<15} {_fmt(r.get(x)):>7} {_fmt_ci(r, y):>12} {_fmt(r.get('val_proxy_acc')):>7} "
            f"{_fmt(r.get('test_clean_acc')):>10} {_fmt_ci(r, 'test_robust_acc'):>16} "
            f"{'-' if lift is None else f'{lift:+.4f}' + ('*' if significant_lift(r) else ' '):>8}  {tail}"
        )

    for r in table["front"]:
        line(r["trial_id"], r, hparams_text({**r["hparams"], **r["train"]}) + ("  <- knee" if r["knee"] else ""))
    if base:
        line(
            BASELINE_ID,
            base,
            "undefended ensemble, same budget (reference; lift = robust minus its robust)"
            + (f"  FLAGS {base['flags']}" if base.get("flags") else ""),
        )
        tested = [r for r in table["front"] if r.get("audit_lift_p") is not None]
        if tested:
            n_sig = sum(significant_lift(r) for r in tested)
            print(
                f"  * lift over naive significant at 0.05 (exact McNemar on the same {tested[0][f'{y}_n']} points): "
                + (
                    f"{n_sig} of {len(tested)} front members"
                    if n_sig
                    else f"no front member beats the naive baseline significantly ({s.defense} at this budget)"
                )
            )
    else:
        print("  (no naive baseline: the search was interrupted or the baseline failed)")
    if table.get("confirmation"):
        print_confirmation(s, table)
    note = BUDGET_CHECKS.get((s.budget, s.dataset, s.defense))
    if note:
        print(f"budget check ({s.budget} budget, reproduce budget-check): {note}")
    print(
        f"written: {s.path / 'pareto.csv'}, {s.path / 'pareto.json'}, {s.path / 'trials.csv'}, "
        f"Optuna study {s.study_path} (tune-div ui --optuna)"
    )


def _mean_std(r: dict[str, Any], key: str) -> str:
    mean, std = r.get(f"confirmed_{key}"), r.get(f"confirmed_{key}_std")
    return f"{mean:.4f}±{std:.3f}" if isinstance(mean, float) and isinstance(std, float) else "-"


def print_confirmation(s: Settings, table: dict[str, Any]) -> None:
    """The seed confirmation under the front: each member's mean ± std over its seeds, the per-seed test
    robust accuracies, the lift over naive per seed; which knee and best robust the means chose; the cost."""
    c = table["confirmation"]
    x, y = table["objectives"]
    seeds = [s.seed, *c["seeds"]]
    print(
        f"Seed confirmation: {len(c['members'])} member(s) retrained with seeds {', '.join(map(str, c['seeds']))} "
        f"(same data and points as seed {s.seed}); mean ± std over seeds {', '.join(map(str, seeds))}:"
    )
    print(
        f"  {'trial':<15} {'clean':>12} {'robust':>12} {'test robust':>12} {'test lift':>13} {'p':>6}  "
        "per seed (test robust)"
    )
    by_id = {str(r["trial_id"]): r for r in table.get("confirmed", [])}
    for tid in c["members"]:
        r = by_id.get(tid, {})
        lift, std, p = r.get("confirmed_lift"), r.get("confirmed_lift_std"), r.get("confirmed_lift_p")
        sig = "*" if r.get("confirmed_lift_significant") else " "
        lift_text = "-" if lift is None else f"{lift:+.4f}±{std:.3f}{sig}"
        values = " ".join(f"{v:.3f}" for v in r.get("confirmed_test_robust_acc_values") or [])
        print(
            f"  {tid:<15} {_mean_std(r, x):>12} {_mean_std(r, y):>12} {_mean_std(r, 'test_robust_acc'):>12} "
            f"{lift_text:>13} {'-' if p is None else f'{p:.3g}':>6}  {values}"
            + ("  <- knee" if r.get("knee") else "")
            + ("" if r.get("pareto") else "  (off the search's front)")
        )
    verdicts = [by_id.get(t, {}).get("confirmed_lift_verdict") for t in c["members"]]
    print(
        f"  * confirmed lift over naive (pooled exact McNemar p < 0.05 on the test split, one sign on every seed): "
        f"{verdicts.count('better')} of {len(c['members'])} better than naive, {verdicts.count('worse')} worse"
    )
    if c.get("knee"):
        same = "unchanged" if c["knee"] == c["search_knee"] else f"was {c['search_knee']} on the search's seed"
        best = "unchanged" if c["best"] == c["search_best"] else f"was {c['search_best']}"
        print(
            f"  chosen on the confirmed means: knee {c['knee']} ({same}), best robust {c['best']} ({best}); "
            "these are what the export writes"
        )
    for f in c.get("failures") or []:
        print(f"  failed: {f}")
    ratio = c["compute_s"] / c["search_compute_s"] if c.get("search_compute_s") else None
    print(
        f"  confirmation cost: {c['trained']} retraining(s) run"
        + (f", {c['reused']} read back from before" if c.get("reused") else "")
        + f", {duration(c['compute_s'])} of compute, {duration(c['wall_s'])} wall with the naive baseline's seeds"
        + (f"; {ratio:.2f}x the trials' {duration(c['search_compute_s'])}" if ratio is not None else "")
    )
