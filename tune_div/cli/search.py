"""Search a defense's hyperparameters: ``tune-div search smd [--budget smoke] [--gpus 8]``.

Ray Tune runs the trials, Optuna samples them against two objectives (validation clean accuracy and
validation robust accuracy), both maximised; the paper's values are evaluated first. At the end the
Pareto table is printed and written to ``<experiment>/pareto.json|csv``, every trial to ``trials.csv``.
Ctrl-C stops cleanly; ``--resume <experiment dir>`` continues without re-running finished trials.
"""

from __future__ import annotations

import argparse
import inspect
import sys

from .. import data, defenses, models
from ..errors import UserError
from ..search.settings import AUDITS, BUDGETS, CLI, OBJECTIVES, SAMPLERS, SCHEDULERS, Settings
from .common import ArgumentParser, cli_errors

PROG = "tune-div search"


def build_parser(prog: str = PROG) -> ArgumentParser:
    p = ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    p.add_argument("defense", nargs="?", help=f"one of: {', '.join(defenses.names())}")
    p.add_argument("--budget", choices=list(BUDGETS), default="small", help="preset sizes (default small)")
    p.add_argument("--dataset", default="mnist", help=f"one of: {', '.join(data.names())}")
    p.add_argument("--arch", help=f"one of: {', '.join(models.names())} (default: the dataset's)")
    p.add_argument("--members", type=int, default=3)
    p.add_argument("--epochs", type=int, help="epochs per trial (default: the budget's)")
    p.add_argument("--samples", type=int, help="number of trials (default: the budget's)")
    p.add_argument("--subset", type=int, help="train each trial on N images (default: the budget's)")
    p.add_argument("--space", help="search-space YAML (default: the defense's shipped space)")
    p.add_argument("--sampler", choices=SAMPLERS, default="tpe", help="tpe (constant liar, default), nsga2, gp, random")
    p.add_argument(
        "--objective",
        dest="objectives",
        choices=list(OBJECTIVES),
        default="robust",
        help="robust: white-box proxy (default); blackbox: transfer instead; both: three objectives",
    )
    p.add_argument(
        "--audit",
        choices=AUDITS,
        default="fast",
        help="audit every trial's robust accuracy after its last epoch (docs/audit.md): fast (default), "
        "standard, or off (the front is then the proxy's, labelled so)",
    )
    p.add_argument(
        "--scheduler",
        choices=SCHEDULERS,
        help="moasha: stop trials dominated at rungs (default when a trial has >= 4 epochs); fifo: none",
    )
    p.add_argument("--grace-period", type=int, default=1, help="first rung, in epochs (default 1)")
    p.add_argument("--reduction-factor", type=int, default=3, help="eta: rungs at grace x eta^k, the top 1/eta go on")
    p.add_argument(
        "--max-retries",
        type=int,
        default=2,
        help="retries of a trial whose worker or node is lost, from its last checkpoint (default 2); "
        "an error of the trial itself (divergence) is never retried",
    )
    p.add_argument(
        "--confirm",
        type=int,
        metavar="K",
        help="retrain the front's winners with K fresh seeds after the search, audited on the test split, and "
        "choose the knee and best robust on the means (default: the budget's, smoke 0, small and paper 2); "
        "with --resume, confirms a finished search",
    )
    p.add_argument(
        "--confirm-top",
        type=top_count,
        metavar="T",
        help="confirm the first T front members, the knee and best robust first (default 2; paper: all); "
        "0 or all: the whole front",
    )
    p.add_argument("--clean-floor", type=float, help="constraint: trials below this clean accuracy are infeasible")
    p.add_argument("--gpus", type=float, default=0, help="GPUs for the whole search (0: CPU)")
    p.add_argument(
        "--gpus-per-trial",
        type=float,
        help="fractional allowed (default with --gpus: the measured "
        "default of tune_div/device_defaults.py, 1 until a device check sets it; else 0)",
    )
    p.add_argument(
        "--execution",
        choices=models.EXECUTIONS,
        help="run each trial's members fused (one batched "
        "computation), looped, or auto (default: fused where it is measured faster, the CPU)",
    )
    p.add_argument("--cpus-per-trial", type=float, default=1)
    p.add_argument("--concurrency", type=int, help="trials at once (default: what the resources allow)")
    p.add_argument("--address", help="join a running Ray cluster (host:port or auto)")
    p.add_argument("--storage-path", default="tune_div_results", help="results folder (shared storage on a cluster)")
    p.add_argument("--experiment", help="experiment name (default <defense>-<dataset>-<time>)")
    p.add_argument("--resume", metavar="PATH", help="continue the experiment in this folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", help="dataset folder (else $TUNE_DIV_DATA)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default sqlite:///<storage-path>/mlflow.db)")
    p.add_argument(
        "--inject-nan-if",
        metavar="PARAM>VALUE",
        help="fault injection for testing: trials with hparams PARAM above VALUE get a NaN loss in epoch 1",
    )
    p.add_argument("--quiet", action="store_true")
    return p


def top_count(text: str) -> int:
    """``--confirm-top``: a count, or ``all`` (stored as 0, the whole front)."""
    if text.strip().lower() == "all":
        return 0
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of front members or 'all', got {text!r}") from None


def settings_from(args: argparse.Namespace) -> Settings:
    """The new search's settings from the parsed command line (the options that are settings)."""
    names = set(inspect.signature(Settings.create).parameters) - {"defense"}
    return Settings.create(args.defense, **{k: v for k, v in vars(args).items() if k in names})


def confirm_on_resume(s: Settings, args: argparse.Namespace) -> None:
    """``--resume DIR --confirm K [--confirm-top T]``: confirm (more of) a search; saved with its settings."""
    changed = {k: getattr(args, k) for k in ("confirm", "confirm_top") if getattr(args, k) is not None}
    if not changed:
        return
    for k, v in changed.items():
        setattr(s, k, v)
    s.check(CLI)
    s.save()


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    args = build_parser(prog).parse_args(argv)
    with cli_errors(prog):
        from ..search import runner
        from ..search.results import print_table

        if args.resume:
            s = Settings.load(args.resume)
            confirm_on_resume(s, args)
        else:
            s = settings_from(args)
            if s.path.exists() and any(s.path.iterdir()):
                raise UserError(
                    f"experiment folder {s.path} exists already; use --resume {s.path} or another --experiment"
                )
        result = runner.run(s, args.address, bool(args.resume), args.quiet)
        if result.all_failed:
            rows, first = result.rows, result.all_failed
            for r in rows:
                print(f"  {r['trial_id']}: {r['status']}  {r['error']}")
            print(
                f"every trial failed ({len(rows)}), nothing to put on a front; the first: [{first['trial_id']}] "
                f"{first['error']}  (all in {s.path / 'trials.csv'}, Ray's log in {s.path / runner.RAY_LOG})",
                file=sys.stderr,
            )
            return 1
        print_table(s, result.rows, result.table, result.baseline)
        if result.interrupted:
            print("nothing exported yet: the resumed search exports its front when it ends", file=sys.stderr)
        elif not result.table["front"]:
            print(
                f"nothing exported: no trial finished feasible and unflagged (each one's state in "
                f"{s.path / 'trials.csv'})",
                file=sys.stderr,
            )
        if result.interrupted:
            print(f"interrupted: continue with  {prog} --resume {s.path}", file=sys.stderr)
            return 130
    return 0
