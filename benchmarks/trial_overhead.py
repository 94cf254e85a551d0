"""Where a trial's wall time goes: training steps against everything else, as a search runs it.

    python benchmarks/trial_overhead.py [--data-dir ../shared/data] [--defense smd] [--budget small]
        [--audit fast] [--compare-with /path/to/another/checkout]

Runs a one-trial search (``tune-div search``, FIFO, the budget's sizes, one thread per trial) and splits
the trial's time (Ray's ``time_total_s``) into training steps (``epoch_time_s``), full evaluations (proxy
and sanity pass, ``eval_time_s``), the audit (``audit_time_s``) and the rest (validation accuracy,
checkpoints, reports, start-up). ``--compare-with`` runs the same search with the code of another
checkout (e.g. a worktree of an older commit) in the same invocation and prints both.
Issue target: everything but training <= 25% of a trial at the small budget on the 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(code: Path, args, storage: Path) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(code)}  # the trial workers import this checkout's tune_div too
    cmd = [
        sys.executable,
        "-m",
        "tune_div.search",
        args.defense,
        "--budget",
        args.budget,
        "--samples",
        "1",
        "--audit",
        args.audit,
        "--storage-path",
        str(storage),
        "--experiment",
        "overhead",
        "--quiet",
    ]
    if args.data_dir:
        cmd += ["--data-dir", args.data_dir]
    if (code / "tune_div" / "search" / "scheduler.py").is_file():
        cmd += ["--scheduler", "fifo"]
    subprocess.run(cmd, check=True, cwd=code, env=env, stdout=subprocess.DEVNULL)
    (result,) = [d / "result.json" for d in (storage / "overhead").iterdir() if (d / "result.json").is_file()]
    lines = [json.loads(line) for line in result.read_text().splitlines()]
    total = lines[-1]["time_total_s"]
    train = sum(r["epoch_time_s"] for r in lines)
    evals = sum(r.get("eval_time_s", 0.0) for r in lines)
    audit = sum(r.get("audit_time_s", 0.0) for r in lines)
    return {
        "total": total,
        "train": train,
        "eval": evals,
        "audit": audit,
        "rest": total - train - evals - audit,
        "epochs": len(lines),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=os.environ.get("TUNE_DIV_DATA"))
    p.add_argument("--defense", default="smd")
    p.add_argument("--budget", default="small")
    p.add_argument("--audit", default="fast")
    p.add_argument("--compare-with", help="another checkout of tune_div to run the same trial with")
    args = p.parse_args()
    args.data_dir = str(Path(args.data_dir).resolve()) if args.data_dir else None
    codes = [("this checkout", REPO)] + ([("other", Path(args.compare_with).resolve())] if args.compare_with else [])
    print(f"one {args.defense} trial, budget {args.budget}, audit {args.audit}, as run by tune-div search (1 thread)")
    print(
        f"{'code':<14} {'trial s':>8} {'train s':>8} {'eval s':>7} {'audit s':>8} {'rest s':>7} "
        f"{'non-train':>9} {'non-train w/o audit':>19}"
    )
    for name, code in codes:
        with tempfile.TemporaryDirectory() as tmp:
            t = run(code, args, Path(tmp))
        share = 1 - t["train"] / t["total"]
        share_no_audit = 1 - t["train"] / (t["total"] - t["audit"])
        print(
            f"{name:<14} {t['total']:>8.1f} {t['train']:>8.1f} {t['eval']:>7.1f} {t['audit']:>8.1f} {t['rest']:>7.1f} "
            f"{share:>9.2f} {share_no_audit:>19.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
