"""What the audit costs a search: audit time / trial time at a budget, in the same run.

    python benchmarks/audit_cost.py [--data-dir ../shared/data] [--defenses smd,naive] [--budget small]
        [--threads 1] [--preset fast]

Runs one trial per defense exactly as the search does (``tune_div.search.trainable.run_trial``, the
budget's epochs, images and evaluation sizes, one thread as ``--cpus-per-trial 1`` gives each trial),
with the audit on. Prints the trial's wall time, the audit's share of it (the validation audit after
the last epoch, which every trial runs), and the audit of the test split, which only the front's
members get once the search is over (timed here on the same model). Issue target: audit / trial <= 0.25
at the small budget on the 2-core development CPU.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

from tune_div import data
from tune_div.search.settings import BUDGETS, OBJECTIVE_DEFAULTS
from tune_div.search.trainable import SubsetAttack, run_trial
from tune_div.search.trial_config import Objective, TrialConfig


def trial_config(defense: str, budget: dict, data_dir: str | None, threads: int, preset: str) -> TrialConfig:
    return TrialConfig(
        defense=defense,
        base={
            "dataset": "mnist",
            "arch": "lenet5",
            "n_members": 3,
            "epochs": budget["epochs"],
            "seed": 0,
            "subset": budget["subset"],
            "val_subset": budget["val_subset"],
            "data_dir": data_dir,
            "num_threads": threads,
        },
        objective=Objective.from_dict(
            {**OBJECTIVE_DEFAULTS, "eps": data.info("mnist").objective_eps, "n": budget["objective_n"], "audit": preset}
        ),
        sanity_n=budget["sanity_n"],
        test_n=budget["test_n"],
        rungs=(),
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=os.environ.get("TUNE_DIV_DATA"))
    p.add_argument("--defenses", default="smd,naive")
    p.add_argument("--budget", choices=[b for b in BUDGETS if BUDGETS[b]["epochs"]], default="small")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--preset", default="fast")
    args = p.parse_args()
    warnings.simplefilter("ignore")
    budget = BUDGETS[args.budget]
    print(
        f"budget {args.budget}: {budget['epochs']} epochs on {budget['subset']} MNIST images, proxy and audit on "
        f"{budget['objective_n']} validation points, test audit on {budget['test_n']}; 3 x lenet5; "
        f"{args.threads} thread(s); audit preset {args.preset}"
    )
    print(
        f"{'defense':<10} {'trial s':>8} {'audit s':>8} {'audit/trial':>11} {'val proxy':>10} {'val audit':>10} "
        f"{'front test audit s':>19}"
    )
    for defense in args.defenses.split(","):
        config = trial_config(defense, budget, args.data_dir, args.threads, args.preset)
        kept = {}
        t0 = time.perf_counter()
        last = run_trial(config, lambda metrics, trainer, kept=kept: trainer and kept.update(model=trainer.ensemble))
        trial_s = time.perf_counter() - t0
        test = SubsetAttack(config.train_config(), config.objective.to_dict(), split="test", n=budget["test_n"])
        t1 = time.perf_counter()
        test.audit(kept["model"].eval(), args.preset)
        test_s = time.perf_counter() - t1
        print(
            f"{defense:<10} {trial_s:>8.1f} {last['audit_time_s']:>8.1f} {last['audit_time_s'] / trial_s:>11.2f} "
            f"{last['val_proxy_acc']:>10.3f} {last['val_audit_acc']:>10.3f} {test_s:>19.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
