"""Compare searches across defenses: one figure of all their Pareto fronts and a table of hypervolumes.

    python analysis/compare_fronts.py --experiments smd-mnist,gal-mnist,adp-mnist [--storage tune_div_results]
        [--tracking-uri URI] [--clean-floor 0.95] [--out comparison/]

Takes the latest search of each MLflow experiment (one per defense on the same dataset), recomputes each
front from its trial runs (finished, feasible, unflagged), writes ``fronts.png`` and ``hypervolumes.csv``
and logs both to MLflow in the experiment ``comparisons`` as one run tagged with the compared searches.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from tune_div import pareto, tracking
from tune_div.errors import UserError, cli_errors
from tune_div.export import find_parent, trial_rows


def compare(uri: str, experiments: list[str], out: Path, clean_floor: float | None = None) -> list[dict]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    client = tracking.client_for(uri)
    out.mkdir(parents=True, exist_ok=True)
    table, fig = [], plt.figure(figsize=(6.5, 4.8))
    ax = fig.add_subplot(111)
    for name in experiments:
        parent = find_parent(client, name, None)
        objectives = (parent.data.tags.get("objectives") or "val_clean_acc,val_robust_acc").split(",")[:2]
        rows = trial_rows(client, parent)
        t = pareto.pareto_table(rows, tuple(objectives), clean_floor=clean_floor)
        front = sorted(((r[objectives[0]], r[objectives[1]]) for r in t["front"]), key=lambda p: p[0])
        if front:
            ax.plot(*zip(*front), "-o", label=f"{parent.data.tags.get('defense', name)} (HV {t['hypervolume']:.3f})")
        table.append({"experiment": name, "defense": parent.data.tags.get("defense"), "parent_run_id": parent.info.run_id,
                      "trials": len(rows), "front_size": len(t["front"]), "hypervolume": round(t["hypervolume"], 6)})
    ax.set_xlabel("validation clean accuracy")
    ax.set_ylabel("validation robust accuracy")
    ax.set_title("Pareto fronts" + (f" (clean floor {clean_floor})" if clean_floor is not None else ""))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "fronts.png", dpi=120)
    plt.close(fig)
    with open(out / "hypervolumes.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(table[0]))
        w.writeheader()
        w.writerows(table)
    import mlflow

    mlflow.set_tracking_uri(uri)
    storage = Path(uri[len("sqlite:///"):]).parent if uri.startswith("sqlite:///") else None
    exp_id = tracking.get_or_create_experiment(client, "comparisons", str(storage / "mlartifacts") if storage else None)
    with mlflow.start_run(experiment_id=exp_id, run_name="compare-" + "-".join(experiments),
                          tags={"tune_div.role": "comparison", "compared": ",".join(experiments)}):
        for row in table:
            mlflow.log_metric(f"hypervolume_{row['defense']}", row["hypervolume"])
        mlflow.log_artifact(str(out / "fronts.png"))
        mlflow.log_artifact(str(out / "hypervolumes.csv"))
    return table


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--experiments", required=True, help="comma-separated MLflow experiments, e.g. smd-mnist,gal-mnist")
    p.add_argument("--storage", default="tune_div_results")
    p.add_argument("--tracking-uri")
    p.add_argument("--clean-floor", type=float)
    p.add_argument("--out", default="comparison")
    args = p.parse_args(argv)
    with cli_errors("analysis/compare_fronts.py"):
        uri = args.tracking_uri or tracking.default_uri(args.storage)
        names = [n for n in args.experiments.split(",") if n]
        if not names:
            raise UserError("--experiments needs at least one experiment name")
        for row in compare(uri, names, Path(args.out), args.clean_floor):
            print(f"{row['experiment']:<24} front {row['front_size']:>3}  hypervolume {row['hypervolume']:.4f}")
        print(f"written: {Path(args.out) / 'fronts.png'}, {Path(args.out) / 'hypervolumes.csv'} (also logged to MLflow)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
