"""A search's results: one row per trial, the files ``trials.csv`` / ``pareto.csv`` / ``pareto.json``,
and the table printed at the end.

Row keys: ``trial_id``, ``status`` (TERMINATED, ERROR, UNFINISHED), ``error`` (the one-line reason of
a failed trial), ``hparams``, ``train``, ``epoch``, ``flags``, the validation and test metrics, and
after :func:`~tune_div.search.pareto.pareto_table` ``pareto``, ``knee``, ``eligibility``.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..files import atomic_write_text
from ..tracking.tracker import FINAL_METRICS as METRICS
from .settings import Settings

COLUMNS = ["trial_id", "status", "pareto", "knee", "eligibility", *METRICS, "flags", "hparams", "train", "error"]


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


def collect(grid) -> list[dict[str, Any]]:
    """Rows from a Ray ``ResultGrid``, sorted by trial id."""
    rows = []
    for r in grid:
        m = r.metrics or {}
        status = "ERROR" if r.error else ("TERMINATED" if m.get("done") else "UNFINISHED")
        rows.append({"trial_id": m.get("trial_id"), "status": status, "error": trial_error(r) if r.error else "",
                     "hparams": dict(r.config.get("hparams") or {}), "train": dict(r.config.get("train") or {}),
                     "epoch": m.get("epoch"), "flags": m.get("flags", ""), **{k: m.get(k) for k in METRICS},
                     "path": r.path})
    return sorted(rows, key=lambda row: str(row["trial_id"]))


def _csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({**r, "hparams": json.dumps(r["hparams"]), "train": json.dumps(r["train"])})
    return buf.getvalue()


def write_results(s: Settings, rows: list[dict[str, Any]], table: dict[str, Any]) -> list[Path]:
    """``trials.csv`` (every trial), ``pareto.csv`` and ``pareto.json`` (the front), written atomically."""
    doc = {"settings": asdict(s), "objectives": table["objectives"], "hypervolume": table["hypervolume"],
           "reference": table["reference"], "knee": table["knee"]["trial_id"] if table["knee"] else None,
           "front": [{k: r.get(k) for k in COLUMNS} for r in table["front"]]}
    return [atomic_write_text(s.path / "trials.csv", _csv(rows)),
            atomic_write_text(s.path / "pareto.csv", _csv(table["front"])),
            atomic_write_text(s.path / "pareto.json", json.dumps(doc, indent=2, default=str))]


def _fmt(v) -> str:
    return f"{v:.4f}" if isinstance(v, (int, float)) and math.isfinite(v) else "-"


def print_table(s: Settings, rows: list[dict[str, Any]], table: dict[str, Any]) -> None:
    failed = [r for r in rows if r["status"] == "ERROR"]
    print(f"\n{len(rows)} trials: {sum(r['status'] == 'TERMINATED' for r in rows)} finished, {len(failed)} failed, "
          f"{sum(r['eligibility'] == 'flagged' for r in rows)} flagged, "
          f"{sum(r['eligibility'] == 'infeasible' for r in rows)} infeasible")
    for r in failed:
        print(f"  failed {r['trial_id']}: {r['error']}")
    x, y = table["objectives"]
    print(f"Pareto front ({x} vs {y}), hypervolume {table['hypervolume']:.4f} (reference {tuple(table['reference'])}):")
    print(f"  {'trial':<12} {'clean':>8} {'robust':>8} {'test clean':>11} {'test robust':>12}  hyperparameters")
    for r in table["front"]:
        print(f"  {str(r['trial_id']):<12} {_fmt(r[x]):>8} {_fmt(r[y]):>8} {_fmt(r['test_clean_acc']):>11} "
              f"{_fmt(r['test_robust_acc']):>12}  {hparams_text({**r['hparams'], **r['train']})}"
              f"{'  <- knee' if r['knee'] else ''}")
    print(f"written: {s.path / 'pareto.csv'}, {s.path / 'pareto.json'}, {s.path / 'trials.csv'}, "
          f"Optuna study {s.path / 'optuna.db'}")
