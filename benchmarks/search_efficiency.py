"""What MOASHA saves: the same search with the FIFO scheduler and with MOASHA, hypervolume against the
training epochs spent.

    python benchmarks/search_efficiency.py [--data-dir ../shared/data] [--defense smd] [--samples 16]
        [--epochs 9] [--subset 2000] [--png docs/images/search_efficiency.png]

Both searches use the same seed, sampler (TPE), number of trials, budget and audit; they run one after
the other as separate ``tune-div search`` processes. From every trial's results (Ray's ``result.json``,
one line per epoch with its timestamp) the epochs of all trials are put in time order: each adds one to
the cumulative epochs, and each trial that finishes (all its epochs, unflagged) adds its point
(clean, audited robust accuracy) to the front whose hypervolume is tracked. Printed: both curves'
final values, the ratio ``epochs MOASHA needs to reach 95% of FIFO's final hypervolume / epochs FIFO
used`` (issue target <= 0.4) and the wall-time ratio of the two searches; the curves go to ``--png``.
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

from tune_div.search.pareto import hypervolume

REPO = Path(__file__).resolve().parents[1]


def curve(exp: Path) -> list[tuple[int, float]]:
    """(cumulative epochs, hypervolume of the finished unflagged trials) after every epoch, in time order."""
    lines = []
    for d in exp.iterdir():
        if (d / "result.json").is_file():
            trial = [json.loads(line) for line in (d / "result.json").read_text().splitlines()]
            start = trial[0]["timestamp"] - trial[0]["time_total_s"]  # Ray's timestamp is whole seconds
            lines += [(start + r["time_total_s"], r) for r in trial]
    lines = [r for _, r in sorted(lines, key=lambda tr: tr[0])]
    points, out = [], []
    for i, r in enumerate(lines, 1):
        if r.get("final") and not r.get("flags"):
            points.append((r["val_clean_acc"], r["val_robust_acc"]))
        out.append((i, hypervolume(points)))
    return out


def search(args, scheduler: str, storage: Path) -> tuple[list[tuple[int, float]], float]:
    cmd = [
        sys.executable,
        "-m",
        "tune_div.search",
        args.defense,
        "--budget",
        "smoke",
        "--samples",
        str(args.samples),
        "--epochs",
        str(args.epochs),
        "--subset",
        str(args.subset),
        "--scheduler",
        scheduler,
        "--seed",
        "0",
        "--storage-path",
        str(storage),
        "--experiment",
        scheduler,
        "--quiet",
    ]
    if args.data_dir:
        cmd += ["--data-dir", args.data_dir]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    return curve(storage / scheduler), time.perf_counter() - t0


def epochs_to_reach(c: list[tuple[int, float]], target: float) -> int | None:
    return next((e for e, hv in c if hv >= target), None)


def plot(curves: dict[str, list[tuple[int, float]]], target: float, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, c in curves.items():
        ax.step([e for e, _ in c], [hv for _, hv in c], where="post", label=name)
    ax.axhline(target, color="0.5", linestyle=":", label="95% of FIFO's final hypervolume")
    ax.set_xlabel("cumulative training epochs (all trials)")
    ax.set_ylabel("hypervolume of the audited front")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=os.environ.get("TUNE_DIV_DATA"))
    p.add_argument("--defense", default="smd")
    p.add_argument("--samples", type=int, default=16)
    p.add_argument("--epochs", type=int, default=9)
    p.add_argument("--subset", type=int, default=2000)
    p.add_argument("--png", default=str(REPO / "docs" / "images" / "search_efficiency.png"))
    args = p.parse_args()
    args.data_dir = str(Path(args.data_dir).resolve()) if args.data_dir else None
    curves, walls = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for scheduler in ("fifo", "moasha"):
            curves[scheduler], walls[scheduler] = search(args, scheduler, Path(tmp))
    fifo_epochs, fifo_hv = curves["fifo"][-1]
    target = 0.95 * fifo_hv
    needed = epochs_to_reach(curves["moasha"], target)
    print(
        f"{args.samples} x {args.defense} trials, {args.epochs} epochs on {args.subset} MNIST images, TPE seed 0, "
        f"audit fast; {os.cpu_count()} cores"
    )
    for name in curves:
        print(
            f"{name:<7} epochs {curves[name][-1][0]:>4}  final hypervolume {curves[name][-1][1]:.4f}  "
            f"wall {walls[name]:7.1f} s"
        )
    if needed is None:
        print(f"moasha never reached 95% of fifo's final hypervolume ({target:.4f})")
    else:
        print(
            f"epochs moasha needs to reach 95% of fifo's final hypervolume / epochs fifo used: "
            f"{needed} / {fifo_epochs} = {needed / fifo_epochs:.2f}"
        )
    print(
        f"wall time moasha / fifo: {walls['moasha'] / walls['fifo']:.2f}; at the end moasha has "
        f"{curves['moasha'][-1][1] / fifo_hv:.3f} of fifo's hypervolume for "
        f"{curves['moasha'][-1][0] / fifo_epochs:.2f} of its epochs"
    )
    plot(
        curves,
        target,
        Path(args.png),
        f"{args.defense}: {args.samples} trials x {args.epochs} epochs, {args.subset} MNIST images",
    )
    print(f"curves written to {args.png}")


if __name__ == "__main__":
    main()
