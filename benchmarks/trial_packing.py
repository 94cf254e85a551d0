"""Throughput of K trials sharing one device: total training steps per second, looped and fused.

    python benchmarks/trial_packing.py [--device cuda] [--trials 1,4,8] [--defenses naive,smd]
                                       [--execution looped,fused] [--seconds 20] [--batch 128]

Each of K worker processes trains its own ensemble (3 x LeNet-5 by default, batch 128, real MNIST; the
optimiser and memory format the Trainer uses) on the same device for ``--seconds`` after a warm-up, as
K trials of a search with ``--gpus-per-trial 1/K`` would; the workers start together and stop together.
Prints, for each (defense, execution, K), the steps per second of all K together, per trial, and the
total against one trial of the same defense and execution. Issue 14's GPU targets: >= 8 concurrent
LeNet-5 trials per GPU at >= 4x the throughput of one trial.

On a CPU, ``--threads`` splits the cores between the workers (default: all cores / K, at least one), as
``--cpus-per-trial`` does in a search.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time

import torch
from step_time import Stepper  # the same training step, optimiser and memory format (benchmarks/ is on sys.path)

from tune_div import data
from tune_div.train import resolve_device, resolve_memory_format


def worker(
    defense: str,
    arch: str,
    execution: str,
    device: str,
    batch: int,
    data_dir: str | None,
    threads: int,
    seconds: float,
    warmup: int,
    start,
    out,
) -> None:
    torch.set_num_threads(threads)
    dev = resolve_device(device)
    fmt = resolve_memory_format("auto", dev)
    images, y = data.load("mnist", "train", data_dir, subset=batch)
    stepper = Stepper(
        defense, data.to_float(images).to(dev), y.to(dev), arch, 3, dev, fmt == torch.channels_last, execution
    )
    for _ in range(warmup):
        stepper.step()
    start.wait()  # every worker is warm: the timed window is the same for all
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        stepper.step()  # synchronises a GPU after each step, as the Trainer's per-step loss read does
        steps += 1
    out.put(steps / (time.perf_counter() - t0))


def measure(k: int, args, defense: str, execution: str) -> float:
    ctx = mp.get_context("spawn")  # CUDA cannot be shared with forked workers
    threads = args.threads or max(1, (os.cpu_count() or 1) // k)
    start, out = ctx.Barrier(k), ctx.Queue()
    procs = [
        ctx.Process(
            target=worker,
            args=(
                defense,
                args.arch,
                execution,
                args.device,
                args.batch,
                args.data_dir,
                threads,
                args.seconds,
                args.warmup,
                start,
                out,
            ),
        )
        for _ in range(k)
    ]
    for p in procs:
        p.start()
    rates = [out.get() for _ in procs]
    for p in procs:
        p.join()
        if p.exitcode != 0:
            raise SystemExit(f"a worker failed with exit code {p.exitcode}")
    return sum(rates)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--arch", default="lenet5")
    p.add_argument("--trials", default="1,4,8", help="comma-separated numbers of concurrent trials")
    p.add_argument("--defenses", default="naive,smd")
    p.add_argument("--execution", default="looped,fused")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--seconds", type=float, default=20.0, help="timed window per measurement")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps per worker first")
    p.add_argument("--threads", type=int, default=None, help="torch threads per worker (default: cores / K)")
    p.add_argument("--data-dir", default=None)
    args = p.parse_args()
    counts = [int(k) for k in args.trials.split(",")]
    print(
        f"3 x {args.arch}, batch {args.batch}, device {resolve_device(args.device)}, {os.cpu_count()} cores, "
        f"{args.seconds:g} s per measurement"
    )
    print(f"{'defense':<8} {'execution':<9} {'trials':>6} {'steps/s all':>12} {'per trial':>10} {'x one trial':>12}")
    for defense in args.defenses.split(","):
        for execution in args.execution.split(","):
            one = None
            for k in counts:
                rate = measure(k, args, defense, execution)
                one = rate if one is None and k == 1 else one
                ratio = f"{rate / one:>12.2f}" if one else f"{'':>12}"
                print(f"{defense:<8} {execution:<9} {k:>6} {rate:>12.1f} {rate / k:>10.1f} {ratio}", flush=True)


if __name__ == "__main__":
    main()
