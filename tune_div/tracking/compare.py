"""Comparing searches across defenses: their fronts in one figure and a table of hypervolumes, logged to
the MLflow experiment ``comparisons`` (``analysis/compare_fronts.py`` is the command)."""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path
from typing import Any

from ..files import atomic_write_text
from ..search import pareto
from .export import find_parent, trial_rows
from .plots import fronts_plot
from .tracker import metric
from .uri import artifact_root_for, client_for, get_or_create_experiment

COMPARISON_ROLE = "comparison"


def compare(uri: str, experiments: list[str], out: Path, clean_floor: float | None = None) -> list[dict[str, Any]]:
    """The latest search of each experiment, its front recomputed from its trial runs (finished, feasible,
    unflagged); writes ``fronts.png`` and ``hypervolumes.csv`` under ``out`` and logs both to MLflow."""
    client = client_for(uri)
    out.mkdir(parents=True, exist_ok=True)
    table, fronts = [], []
    for name in experiments:
        parent = find_parent(client, name, None)
        objectives = (parent.data.tags.get("objectives") or "val_clean_acc,val_robust_acc").split(",")[:2]
        rows = trial_rows(client, parent)
        t = pareto.pareto_table(rows, tuple(objectives), clean_floor=clean_floor)
        defense = parent.data.tags.get("defense", name)
        points = [(r[objectives[0]], r[objectives[1]]) for r in t["front"]]
        fronts.append((defense, points, t["hypervolume"]))
        base = parent.data.metrics.get(f"baseline_{objectives[1]}")  # the naive baseline of that search
        lift_hv = pareto.lift_hypervolume(points, base, clean_floor) if base is not None else None
        table.append(
            {
                "experiment": name,
                "defense": defense,
                "parent_run_id": parent.info.run_id,
                "trials": len(rows),
                "front_size": len(t["front"]),
                "hypervolume": round(t["hypervolume"], 6),
                "baseline_robust": base,
                "lift_hypervolume": None if lift_hv is None else round(lift_hv, 6),
            }
        )
    title = "Pareto fronts" + (f" (clean floor {clean_floor})" if clean_floor is not None else "")
    plot = fronts_plot(fronts, out / "fronts.png", title)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(table[0]))
    w.writeheader()
    w.writerows(table)
    csv_path = atomic_write_text(out / "hypervolumes.csv", buf.getvalue())
    exp_id = get_or_create_experiment(client, "comparisons", artifact_root_for(uri))
    run = client.create_run(
        exp_id,
        run_name="compare-" + "-".join(experiments),
        tags={"tune_div.role": COMPARISON_ROLE, "compared": ",".join(experiments)},
    )
    ts = int(time.time() * 1000)
    client.log_batch(
        run.info.run_id,
        metrics=[metric(f"hypervolume_{r['defense']}", r["hypervolume"], 0, ts) for r in table]
        + [
            metric(f"lift_hypervolume_{r['defense']}", r["lift_hypervolume"], 0, ts)
            for r in table
            if r["lift_hypervolume"] is not None
        ],
    )
    for f in (plot, csv_path):
        client.log_artifact(run.info.run_id, str(f))
    client.set_terminated(run.info.run_id, "FINISHED")
    return table
