"""The command line: ``tune-div <command> [options]`` (``python -m tune_div <command>`` too).

One module per command, each with ``build_parser(prog)`` and ``main(argv, prog) -> exit code``; the
old entry points ``python -m tune_div.search|train|evaluate|export|ui`` are thin shims onto them.
Bad input is one line on stderr and exit code 2 (``common.cli_errors``).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .common import ArgumentParser

COMMANDS = {
    "list": ("listing", "what is registered: defenses, datasets, architectures, attacks, samplers, budgets"),
    "search": ("search", "search a defense's hyperparameters (Ray Tune + Optuna, tracked in MLflow)"),
    "train": ("train", "train one ensemble, or retrain an exported config"),
    "evaluate": ("evaluate", "robust accuracy of a saved ensemble under the threat models, with sanity flags"),
    "export": ("export", "write a search's Pareto, best-robust and knee configs from MLflow"),
    "ui": ("ui", "browse the searches in the MLflow UI"),
    "reproduce": ("reproduce", "reproduce a paper's table (smd-table) next to the paper's numbers"),
}


def build_parser() -> ArgumentParser:
    listing = "\n".join(f"  {name:<10} {summary}" for name, (_, summary) in COMMANDS.items())
    p = ArgumentParser(
        prog="tune-div",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Search, train and evaluate adversarially robust deep-ensemble defenses.",
        epilog=f"commands:\n{listing}\n\n`tune-div <command> --help` for a command's options.",
    )
    p.add_argument("command", choices=list(COMMANDS), metavar="command", help="one of: " + ", ".join(COMMANDS))
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        build_parser().parse_args(argv[:1])  # --help, or a one-line error naming the commands
        return 2
    module = importlib.import_module(f"{__name__}.{COMMANDS[argv[0]][0]}")
    return module.main(argv[1:], prog=f"tune-div {argv[0]}")
