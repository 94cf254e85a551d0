"""Reproduce a paper's table next to the paper's numbers: ``tune-div reproduce smd-table --dataset mnist
[--methods naive,smd] [--seeds 5] [--epochs 50] [--budget smoke|full] [--out reproductions/]``; and
``tune-div reproduce claims`` writes the claims ledger from the results.

Prints progress and the table's path; writes ``<out>/<protocol>_<dataset>.{md,csv,json,png}`` and logs
them to an MLflow run (experiment ``reproduce-<protocol>``; ``--no-mlflow`` to skip). Trained ensembles
and their evaluations are cached (``$TUNE_DIV_CACHE/reproduce``): a rerun only does what is new.
"""

from __future__ import annotations

import os
import shlex
import sys
import time
from pathlib import Path

from .. import reproduce
from ..errors import DivergenceError, UserError
from .common import ArgumentParser, cli_errors, fail

PROG = "tune-div reproduce"
CLAIMS = "claims"
CLAIMS_HELP = "the claims ledger (docs/claims.md): each paper's headline claims checked against the results"


def build_parser(prog: str = PROG) -> ArgumentParser:
    p = ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="protocol", metavar="protocol", required=True, parser_class=ArgumentParser)
    for name in reproduce.names():
        cls = reproduce.get(name)
        sp = sub.add_parser(name, help=cls.summary, description=cls.summary)
        cls.add_arguments(sp)
        sp.add_argument("--out", default="reproductions", help="folder for the table files (default reproductions/)")
        sp.add_argument("--data-dir", help="dataset folder (else $TUNE_DIV_DATA, else ~/.cache/tune_div/data)")
        sp.add_argument("--tracking-uri", help="MLflow store (default sqlite:///<out>/mlflow.db)")
        sp.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    cp = sub.add_parser(CLAIMS, help=CLAIMS_HELP, description=CLAIMS_HELP)
    cp.add_argument("--from", dest="source", default="reproductions", help="folder of reproduction results (JSON)")
    cp.add_argument("--out", default="docs/claims.md", help="the ledger's Markdown (its rows beside it, .json)")
    cp.add_argument("--readme", help="also rewrite the ledger's block between the markers of this README")
    cp.add_argument("--tracking-uri", help="MLflow store to log the ledger to (default: none)")
    return p


def claims_main(args) -> int:
    """``tune-div reproduce claims``: the claims ledger from the results under ``--from``."""
    from ..reproduce import claims

    source, out = Path(args.source), Path(args.out)
    if not source.is_dir():
        raise UserError(f"--from {source} is not a folder; name the folder of the reproduction results")
    if out.suffix != ".md":
        raise UserError(f"--out {out} should name a Markdown file (.md)")
    readme = Path(args.readme) if args.readme else None
    if readme is not None:
        claims.readme_span(readme)  # before anything is written
    rows = claims.write(source, out)
    counts = ", ".join(f"{sum(r['verdict'] == v for r in rows)} {v}" for v in claims.VERDICTS)
    print(f"written: {out} and {out.with_suffix('.json')} ({len(rows)} claims: {counts})")
    if readme is not None:
        link = os.path.relpath(out.resolve(), readme.resolve().parent)
        claims.update_readme(readme, rows, Path(link).as_posix())
        print(f"updated the ledger in {readme}")
    if args.tracking_uri:
        from ..tracking.reproduction import log_claims

        run_id = log_claims(args.tracking_uri, rows, [out, out.with_suffix(".json")])
        print(f"logged to MLflow ({args.tracking_uri}): experiment reproduce-claims, run {run_id}")
    return 0


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(prog).parse_args(argv)
    args.command_line = shlex.join(["tune-div", "reproduce", *argv])
    with cli_errors(prog):
        if args.protocol == CLAIMS:
            return claims_main(args)
        out = Path(args.out)
        if out.exists() and not out.is_dir():
            raise UserError(f"--out {out} is a file; name a folder for the table files")
        uri = None
        if not args.no_mlflow:
            from .. import tracking

            uri = args.tracking_uri or tracking.default_uri(out)
            db = tracking.sqlite_path(uri)
            if db is None or db.is_file():
                tracking.check_store(uri)  # before hours of training, not after
        started = time.perf_counter()
        protocol = reproduce.get(args.protocol)()
        try:
            doc = protocol.run(args, out, log=lambda s: print(s, flush=True))
        except DivergenceError as exc:
            fail(prog, str(exc))
        stem = out / f"{args.protocol}_{doc['settings']['dataset']}"
        print(Path(stem.with_suffix(".md")).read_text())
        print(f"written: {stem}.md, .csv, .json, .png ({(time.perf_counter() - started) / 60:.1f} min)")
        if uri:
            from ..tracking.reproduction import log_reproduction

            run_id = log_reproduction(
                uri, args.protocol, doc, [stem.with_suffix(e) for e in (".md", ".csv", ".json", ".png")]
            )
            print(f"logged to MLflow ({uri}): experiment reproduce-{args.protocol}, run {run_id}")
    return 0
