"""Compare searches across defenses: one figure of all their Pareto fronts and a table of hypervolumes.

    python analysis/compare_fronts.py --experiments smd-mnist,gal-mnist,adp-mnist [--storage tune_div_results]
        [--tracking-uri URI] [--clean-floor 0.95] [--out comparison/]

Takes the latest search of each MLflow experiment (one per defense on the same dataset), recomputes each
front from its trial runs (finished, feasible, unflagged), writes ``fronts.png`` and ``hypervolumes.csv``
and logs both to MLflow in the experiment ``comparisons`` (``tune_div.tracking.compare``). Beside each
hypervolume against (0, 0) it gives the hypervolume above that search's naive baseline (reference: the
clean floor or 0, and the baseline's robust accuracy): how much the search improved on no defense.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tune_div.cli.common import ArgumentParser, add_store_options, cli_errors, store_uri
from tune_div.errors import UserError
from tune_div.tracking.compare import compare

PROG = "analysis/compare_fronts.py"


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    p.add_argument("--experiments", required=True, help="comma-separated MLflow experiments, e.g. smd-mnist,gal-mnist")
    add_store_options(p)
    p.add_argument("--clean-floor", type=float)
    p.add_argument("--out", default="comparison")
    args = p.parse_args(argv)
    with cli_errors(PROG):
        uri = store_uri(args, "pass the searches' --storage or --tracking-uri")
        names = [n for n in args.experiments.split(",") if n]
        if not names:
            raise UserError("--experiments needs at least one experiment name")
        for row in compare(uri, names, Path(args.out), args.clean_floor):
            lift = row["lift_hypervolume"]
            print(
                f"{row['experiment']:<24} front {row['front_size']:>3}  hypervolume {row['hypervolume']:.4f}  "
                f"above naive {'-' if lift is None else f'{lift:.4f}'}"
            )
        print(
            f"written: {Path(args.out) / 'fronts.png'}, {Path(args.out) / 'hypervolumes.csv'} (also logged to MLflow)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
