"""Export the best configs of a search from MLflow alone (no Ray results needed).

Writes one ``pareto_<trial>.yaml`` per trial on the front, ``best_robust.yaml`` (the highest robust
accuracy among eligible trials at or above the floor) and ``knee.yaml``; in a seed-confirmed search
(``--confirm``) both are chosen among the confirmed members on their confirmed means, and every
confirmed member's ``metrics`` carry ``confirmed_*`` (mean and std over its seeds, the lift over
naive). The format is docs/design.md's exported config, with provenance (experiment, parent and trial
run ids, tracking URI). An experiment name stands for its most recent search. Retrain any of them with
``tune-div train --config FILE``; the command is ``tune-div export`` (``tune_div.cli.export``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import yaml

from ..errors import UserError
from ..eval.intervals import SUFFIXES
from ..files import atomic_write_text
from ..search import pareto, states
from ..search.confirm import LOGGED as CONFIRMED
from ..search.states import TrialState
from ..train import config_file
from .tracker import FINAL_METRICS as METRICS
from .tracker import LIFT_METRICS, PARENT_ROLE, STOPPED_TAG
from .uri import client_for

# what an exported config says beside each accuracy: its points, its 95% interval, the paired lift
# and, for a seed-confirmed member, its confirmed means, stds, lift and number of seeds
SHOWN = (*(f"{m}{s}" for m in METRICS for s in SUFFIXES), *LIFT_METRICS, *CONFIRMED)

STATUS = {"FINISHED": TrialState.TERMINATED, "FAILED": TrialState.ERROR}  # MLflow run status -> trial state


def find_parent(client, experiment: str | None, run_id: str | None):
    if run_id:
        try:
            run = client.get_run(run_id)
        except Exception:
            raise UserError(f"no MLflow run {run_id} in this tracking store") from None
        if run.data.tags.get("tune_div.role") != PARENT_ROLE:
            raise UserError(f"run {run_id} is not a tune_div search (parent) run")
        return run
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = [e.name for e in client.search_experiments()]
        raise UserError(f"no MLflow experiment '{experiment}'; experiments here: {', '.join(names) or 'none'}")
    runs = client.search_runs(
        [exp.experiment_id],
        f"tags.`tune_div.role` = '{PARENT_ROLE}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        raise UserError(f"experiment '{experiment}' has no tune_div search runs")
    return runs[0]


def trial_rows(client, parent) -> list[dict[str, Any]]:
    runs = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'", max_results=5000
    )
    rows = []
    for r in runs:
        m = r.data.metrics
        status = STATUS.get(r.info.status, r.info.status)
        if STOPPED_TAG in r.data.tags:
            status = states.stopped(r.data.tags[STOPPED_TAG])
        rows.append(
            {
                "trial_id": r.data.tags.get("tune_div.trial_id"),
                "run_id": r.info.run_id,
                "status": status,
                "flags": r.data.tags.get("flags", ""),
                **{k: m.get(f"final_{k}", m.get(k)) for k in METRICS},
                **{k: m[f"final_{k}"] for k in SHOWN if f"final_{k}" in m},  # n, interval, paired lift
            }
        )
    return sorted(rows, key=lambda row: str(row["trial_id"]))


def config_doc(client, row: dict[str, Any], parent, uri: str) -> dict[str, Any]:
    """The trial's ``config.yaml`` with the metrics it reached and its provenance."""
    with tempfile.TemporaryDirectory() as d:
        path = client.download_artifacts(row["run_id"], "config.yaml", d)
        doc = yaml.safe_load(Path(path).read_text())
    doc["metrics"] = {k: row[k] for k in (*METRICS, *SHOWN) if row.get(k) is not None}
    for key in doc["metrics"]:
        if key.endswith("_n") or key == "confirmed_seeds":
            doc["metrics"][key] = int(doc["metrics"][key])
    exp = client.get_experiment(parent.info.experiment_id)
    doc["source"] = config_file.provenance(exp.name, parent.info.run_id, row["run_id"], row["trial_id"], uri)
    return doc


def export_from_tracking(
    uri: str,
    out: str | Path,
    experiment: str | None = None,
    parent_run_id: str | None = None,
    clean_floor: float | None = None,
) -> dict[str, Any]:
    """Write the exported configs; returns ``{"front": [...], "best_robust": path, "knee": path}``."""
    client = client_for(uri)
    parent = find_parent(client, experiment, parent_run_id)
    rows = trial_rows(client, parent)
    objectives = (parent.data.tags.get("objectives") or "val_clean_acc,val_robust_acc").split(",")[:2]
    table = pareto.pareto_table(rows, objectives=tuple(objectives), clean_floor=clean_floor)
    if not table["front"]:
        raise UserError(
            f"search {parent.info.run_id} has no finished, feasible, unflagged trial to export"
            + (f" at --clean-floor {clean_floor}" if clean_floor is not None else "")
        )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Any] = {"front": []}
    for row in table["front"]:
        path = atomic_write_text(
            out / f"pareto_{row['trial_id']}.yaml",
            yaml.safe_dump(config_doc(client, row, parent, uri), sort_keys=False),
        )
        written["front"].append(str(path))
    best = max(table["front"], key=lambda r: (r[objectives[1]], r[objectives[0]]))
    knee = table["knee"]
    eligible = [r for r in rows if r.get("eligibility") == "ok"]  # confirmed trials may be off the front
    confirmed = pareto.confirmed_choice(eligible, objectives)
    if confirmed is not None:  # a seed-confirmed search: chosen on the confirmed means, as the search did
        knee, best = confirmed
    for name, row in (("best_robust", best), ("knee", knee)):
        path = atomic_write_text(
            out / f"{name}.yaml", yaml.safe_dump(config_doc(client, row, parent, uri), sort_keys=False)
        )
        written[name] = str(path)
    return written
