"""Export the best configs of a search from MLflow alone (no Ray results needed).

    python -m tune_div.export --experiment smd-mnist | --run-id PARENT_RUN_ID [--clean-floor 0.98]
        [--storage tune_div_results | --tracking-uri URI] --out configs/

Writes one ``pareto_<trial>.yaml`` per trial on the front, ``best_robust.yaml`` (the highest robust
accuracy among eligible trials at or above the floor) and ``knee.yaml``, in the exported-config format
of DESIGN.md, with provenance (experiment, parent and trial run ids, tracking URI). ``--experiment``
takes the most recent search of that experiment. Retrain any of them with
``python -m tune_div.train --config FILE``.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from . import pareto, tracking
from .cli import ArgumentParser
from .errors import UserError, cli_errors

PROG = "python -m tune_div.export"
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
STATUS = {"FINISHED": "TERMINATED", "FAILED": "ERROR"}
METRICS = ("val_clean_acc", "val_robust_acc", "val_blackbox_acc", "test_clean_acc", "test_robust_acc")


def find_parent(client, experiment: str | None, run_id: str | None):
    if run_id:
        try:
            run = client.get_run(run_id)
        except Exception:
            raise UserError(f"no MLflow run {run_id} in this tracking store") from None
        if run.data.tags.get("tune_div.role") != tracking.PARENT_ROLE:
            raise UserError(f"run {run_id} is not a tune_div search (parent) run")
        return run
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = [e.name for e in client.search_experiments()]
        raise UserError(f"no MLflow experiment '{experiment}'; experiments here: {', '.join(names) or 'none'}")
    runs = client.search_runs([exp.experiment_id], f"tags.`tune_div.role` = '{tracking.PARENT_ROLE}'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        raise UserError(f"experiment '{experiment}' has no tune_div search runs")
    return runs[0]


def trial_rows(client, parent) -> list[dict[str, Any]]:
    runs = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
                              max_results=5000)
    rows = []
    for r in runs:
        m = r.data.metrics
        rows.append({"trial_id": r.data.tags.get("tune_div.trial_id"), "run_id": r.info.run_id,
                     "status": STATUS.get(r.info.status, r.info.status), "flags": r.data.tags.get("flags", ""),
                     **{k: m.get(f"final_{k}", m.get(k)) for k in METRICS}})
    return sorted(rows, key=lambda row: str(row["trial_id"]))


def config_doc(client, row: dict[str, Any], parent, uri: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as d:
        path = client.download_artifacts(row["run_id"], "config.yaml", d)
        doc = yaml.safe_load(Path(path).read_text())
    doc.pop("source", None)
    doc["metrics"] = {k: row[k] for k in METRICS if row.get(k) is not None}
    exp = client.get_experiment(parent.info.experiment_id)
    doc["source"] = {"experiment": exp.name, "parent_run_id": parent.info.run_id, "run_id": row["run_id"],
                     "trial_id": row["trial_id"], "tracking_uri": uri}
    return doc


def export_from_tracking(uri: str, out: str | Path, experiment: str | None = None, parent_run_id: str | None = None,
                         clean_floor: float | None = None) -> dict[str, Any]:
    """Write the exported configs; returns ``{"front": [...], "best_robust": path, "knee": path}``."""
    client = tracking.client_for(uri)
    parent = find_parent(client, experiment, parent_run_id)
    rows = trial_rows(client, parent)
    objectives = (parent.data.tags.get("objectives") or "val_clean_acc,val_robust_acc").split(",")[:2]
    table = pareto.pareto_table(rows, objectives=tuple(objectives), clean_floor=clean_floor)
    if not table["front"]:
        raise UserError(f"search {parent.info.run_id} has no finished, feasible, unflagged trial to export"
                        + (f" at --clean-floor {clean_floor}" if clean_floor is not None else ""))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Any] = {"front": []}
    for row in table["front"]:
        path = out / f"pareto_{row['trial_id']}.yaml"
        path.write_text(yaml.safe_dump(config_doc(client, row, parent, uri), sort_keys=False))
        written["front"].append(str(path))
    best = max(table["front"], key=lambda r: (r[objectives[1]], r[objectives[0]]))
    for name, row in (("best_robust", best), ("knee", table["knee"])):
        path = out / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config_doc(client, row, parent, uri), sort_keys=False))
        written[name] = str(path)
    return written


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--experiment", help="MLflow experiment, e.g. smd-mnist (its latest search)")
    which.add_argument("--run-id", help="the search's parent run id")
    p.add_argument("--clean-floor", type=float, help="only trials at or above this clean accuracy")
    p.add_argument("--storage", default="tune_div_results", help="the search's --storage-path (for the default URI)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default sqlite:///<storage>/mlflow.db)")
    p.add_argument("--out", required=True, help="folder for the YAML files")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with cli_errors(PROG):
        uri = args.tracking_uri or tracking.default_uri(args.storage)
        if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file():
            raise UserError(f"no MLflow store at {uri[len('sqlite:///'):]}; pass the search's --storage or --tracking-uri")
        if args.clean_floor is not None and not 0 <= args.clean_floor <= 1:
            raise UserError(f"--clean-floor is an accuracy in [0, 1], got {args.clean_floor}")
        written = export_from_tracking(uri, args.out, args.experiment, args.run_id, args.clean_floor)
        print(f"{len(written['front'])} Pareto configs, best_robust.yaml and knee.yaml written to {args.out}")
        print(f"retrain one with: python -m tune_div.train --config {written['best_robust']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
