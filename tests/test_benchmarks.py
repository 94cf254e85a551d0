"""The speed benchmarks of the fused path still run and print every row (their figures are in the README)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(*argv: str) -> list[str]:
    p = subprocess.run([sys.executable, *argv], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert p.returncode == 0, p.stderr
    return p.stdout.splitlines()


def test_step_time_prints_looped_and_fused_for_every_defense_asked():
    lines = run(
        "benchmarks/step_time.py",
        "--synthetic",
        "--batch",
        "16",
        "--repeats",
        "1",
        "--warmup",
        "0",
        "--defenses",
        "naive,smd,dverge",
    )
    rows = [line.split() for line in lines[2:]]
    assert [(r[1], r[2]) for r in rows] == [(e, d) for e in ("looped", "fused") for d in ("naive", "smd", "dverge")]
    assert all(float(r[3]) > 0 for r in rows)
    assert [float(r[6]) for r in rows[:3]] == [1.0, 1.0, 1.0]  # the looped rows are the baseline of the last column


def test_trial_packing_runs_k_workers_and_compares_with_one(real_data):
    lines = run(
        "benchmarks/trial_packing.py",
        "--trials",
        "1,2",
        "--seconds",
        "0.5",
        "--warmup",
        "1",
        "--defenses",
        "naive",
        "--execution",
        "fused",
        "--data-dir",
        str(real_data),
    )
    rows = [line.split() for line in lines[2:]]
    assert [(r[0], r[1], r[2]) for r in rows] == [("naive", "fused", "1"), ("naive", "fused", "2")]
    assert float(rows[0][5]) == 1.0 and float(rows[1][3]) > 0
