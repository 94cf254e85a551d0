"""Export the best configs of a search from MLflow alone: ``tune-div export --experiment smd-mnist
--out configs/`` (``--run-id PARENT`` for one search, ``--clean-floor X`` to keep only trials above it).

Writes ``pareto_<trial>.yaml`` per front trial, ``best_robust.yaml`` and ``knee.yaml``
(``tune_div.tracking.export``); retrain one with ``tune-div train --config FILE``.
"""

from __future__ import annotations

from pathlib import Path

from .. import tracking
from ..errors import UserError
from .common import ArgumentParser, add_store_options, cli_errors, store_uri

PROG = "tune-div export"


def build_parser(prog: str = PROG) -> ArgumentParser:
    p = ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--experiment", help="MLflow experiment, e.g. smd-mnist (its latest search)")
    which.add_argument("--run-id", help="the search's parent run id")
    p.add_argument("--clean-floor", type=float, help="only trials at or above this clean accuracy")
    add_store_options(p, "the search's --storage-path")
    p.add_argument("--out", required=True, help="folder for the YAML files")
    return p


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    args = build_parser(prog).parse_args(argv)
    with cli_errors(prog):
        if Path(args.out).exists() and not Path(args.out).is_dir():
            raise UserError(f"--out {args.out} is a file; name a folder for the YAML files")
        if args.clean_floor is not None and not 0 <= args.clean_floor <= 1:
            raise UserError(f"--clean-floor is an accuracy in [0, 1], got {args.clean_floor}")
        uri = store_uri(args, "pass the search's --storage or --tracking-uri")
        written = tracking.export_from_tracking(uri, args.out, args.experiment, args.run_id, args.clean_floor)
        print(f"{len(written['front'])} Pareto configs, best_robust.yaml and knee.yaml written to {args.out}")
        print(f"retrain one with: tune-div train --config {written['best_robust']}")
    return 0
