"""Framework overhead: a search of K trials against the same K trainings run directly, same settings.

    python benchmarks/search_overhead.py [--data-dir ../shared/data] [--k 4] [--epochs 2] [--subset 10000]

Direct: the K configurations the search ran (read back from its results), each trained with
``tune_div.search.trainable.run_trial`` in this process one after another, with the same per-epoch evaluation
(proxy PGD, sanity checks, test split) but no Ray and no checkpoints. Search: ``python -m tune_div.search``
in a fresh process (Ray start-up, Optuna, checkpoints, reporting included), K trials, as many at once
as there are cores. Prints both wall times and their ratio (target at most 1.25x on the 2-core CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from tune_div import data
from tune_div.search.settings import BUDGETS
from tune_div.search.trainable import run_trial
from tune_div.search.trial_config import TrialConfig

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=os.environ.get("TUNE_DIV_DATA"))
    p.add_argument("--defense", default="smd")
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--subset", type=int, default=10000)
    args = p.parse_args()
    data_dir = str(Path(args.data_dir).resolve()) if args.data_dir else None
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable,
            "-m",
            "tune_div.search",
            args.defense,
            "--budget",
            "smoke",
            "--samples",
            str(args.k),
            "--epochs",
            str(args.epochs),
            "--subset",
            str(args.subset),
            "--storage-path",
            tmp,
            "--experiment",
            "bench",
            "--quiet",
        ]
        if data_dir:
            cmd += ["--data-dir", data_dir]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
        search_s = time.perf_counter() - t0
        configs = []
        for d in sorted(Path(tmp, "bench").iterdir()):
            if (d / "params.json").is_file():
                configs.append(json.loads((d / "params.json").read_text()))
    smoke = BUDGETS["smoke"]
    t0 = time.perf_counter()
    torch.set_num_threads(os.cpu_count() or 1)
    for cfg in configs:
        run_trial(TrialConfig.from_dict(cfg), lambda metrics, trainer: None)
    direct_s = time.perf_counter() - t0
    print(
        f"{args.k} x {args.defense}, {args.epochs} epochs on {args.subset} MNIST images (smoke evaluation sizes: "
        f"proxy {smoke['objective_n']} pts at eps {data.info('mnist').objective_eps}), {os.cpu_count()} cores"
    )
    print(f"direct, one after another: {direct_s:8.1f} s")
    print(f"tune_div.search (Ray):     {search_s:8.1f} s")
    print(f"overhead ratio:            {search_s / direct_s:8.2f}x")


if __name__ == "__main__":
    main()
