"""``tune-div list [KIND] [PATTERN]``: what is registered, optionally one kind and a wildcard.

Kinds: defenses (with their paper hyperparameters), datasets (with their default architecture, epochs
and objective ε), architectures, attacks (with their library), samplers, budgets, protocols (paper
reproductions).
"""

from __future__ import annotations

from .. import attacks, data, defenses, models, reproduce
from ..search.settings import BUDGETS, SAMPLERS
from .common import ArgumentParser, cli_errors

PROG = "tune-div list"


def _entries(kind: str, pattern: str | None) -> list[str]:
    if kind == "defenses":
        return [f"{n} {defenses.defaults(n) or ''}".strip() for n in defenses.names(pattern)]
    if kind == "datasets":
        return [
            f"{n} ({data.info(n).default_arch}, {data.info(n).epochs} epochs, "
            f"objective eps {data.info(n).objective_eps})"
            for n in data.names(pattern)
        ]
    if kind == "architectures":
        return models.names(pattern)
    if kind == "attacks":
        return [f"{n} ({attacks.ATTACKS.get(n).source})" for n in attacks.names(pattern)]
    if kind == "samplers":
        return [s + (" (default, constant liar)" if s == "tpe" else "") for s in SAMPLERS]
    if kind == "protocols":
        return [f"{n} ({reproduce.get(n).summary})" for n in reproduce.names(pattern)]
    return [b + (" (default)" if b == "small" else "") for b in BUDGETS]


KINDS = ("defenses", "datasets", "architectures", "attacks", "samplers", "budgets", "protocols")


def build_parser(prog: str = PROG) -> ArgumentParser:
    p = ArgumentParser(prog=prog, description="What tune_div has registered.")
    p.add_argument("kind", nargs="?", choices=KINDS, help="one kind only (default: all)")
    p.add_argument("pattern", nargs="?", help="a shell wildcard on the names, e.g. 'apgd*'")
    return p


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    args = build_parser(prog).parse_args(argv)
    with cli_errors(prog):
        for kind in [args.kind] if args.kind else KINDS:
            print(f"{kind + ':':<15}" + ", ".join(_entries(kind, args.pattern)))
    return 0
