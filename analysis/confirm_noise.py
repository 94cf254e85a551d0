"""What seed confirmation says about a search's noise: one row per confirmed search.

    python analysis/confirm_noise.py EXPERIMENT_DIR [EXPERIMENT_DIR ...] [--out noise.json]

Reads each experiment's ``pareto.json`` (a search run with ``--confirm K``) and prints, per search: the
seed std of each confirmed member against the spread of robust accuracy along the front, how many
members keep a significant lift after confirmation, the rank correlation between search-time and
confirmed robust accuracy, whether the knee changed, and whether a seed moves configs alike
(``tune_div.search.confirm.noise_summary`` defines each number).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tune_div.cli.common import ArgumentParser, cli_errors
from tune_div.errors import UserError
from tune_div.files import atomic_write_text
from tune_div.search.confirm import noise_summary

PROG = "analysis/confirm_noise.py"


def _num(v, fmt=".3f") -> str:
    return "-" if v is None else format(v, fmt)


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    p.add_argument("experiments", nargs="+", help="experiment folders of confirmed searches")
    p.add_argument("--out", help="also write the numbers as JSON here")
    args = p.parse_args(argv)
    with cli_errors(PROG):
        out = {}
        for folder in args.experiments:
            path = Path(folder) / "pareto.json"
            if not path.is_file():
                raise UserError(f"{folder} holds no pareto.json: pass the folder of a finished search")
            try:
                out[folder] = noise_summary(json.loads(path.read_text()))
            except ValueError as exc:
                raise UserError(f"{folder}: {exc}") from None
        print(
            "| search | members | seed std of robust (each) | front spread | significant lift before → after "
            "| rank corr. | knee | Var(a-b)/(Var a+Var b), members | same, member vs naive |"
        )
        print("|---|---:|---|---:|---|---:|---|---:|---:|")
        for folder, n in out.items():
            stds = ", ".join(_num(v) for v in n["seed_std"].values())
            knee = f"{n['search_knee']} → {n['knee']}" if n["knee_changed"] else f"{n['knee']} (unchanged)"
            print(
                f"| {Path(folder).name} | {len(n['members'])} | {stds} | {_num(n['front_spread'])} | "
                f"{n['significant_before']} → {n['significant_after']} | {_num(n['rank_correlation'], '.2f')} | "
                f"{knee} | {_num(n['shared_seed_ratio'], '.2f')} | {_num(n['naive_pairing_ratio'], '.2f')} |"
            )
        if args.out:
            atomic_write_text(Path(args.out), json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
