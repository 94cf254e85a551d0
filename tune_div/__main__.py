"""``python -m tune_div list``: what is registered (defenses, datasets, architectures, attacks, samplers)."""

from __future__ import annotations

import sys

from . import attacks, data, defenses, models
from .cli import ArgumentParser


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m tune_div", description="tune_div registries")
    p.add_argument("command", choices=["list"])
    p.parse_args(argv)
    print("defenses:      " + ", ".join(f"{n} {defenses.defaults(n) or ''}".strip() for n in defenses.names()))
    print("datasets:      " + ", ".join(data.names()))
    print("architectures: " + ", ".join(models.names()))
    print("attacks:       " + ", ".join(f"{n} ({attacks.ATTACKS.get(n).source})" for n in attacks.names()))
    print("samplers:      tpe (constant liar, default), nsga2, gp, random")
    print("budgets:       smoke, small (default), paper")
    return 0


if __name__ == "__main__":
    sys.exit(main())
