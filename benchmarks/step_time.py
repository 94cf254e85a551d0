"""Time of one training step of each defense, looped and fused, against the naive ensemble, in one run.

    python benchmarks/step_time.py [--members 3] [--arch lenet5] [--batch 128] [--repeats 20]
                                   [--execution looped,fused] [--memory-format channels_last]

A step is loss + backward + Adam update on one real MNIST batch (generated data with --synthetic).
Every (memory format, execution, defense) is timed once per round, rounds interleaved so machine noise
hits all alike; prints the median over rounds (after warm-up), each defense against naive on the same
path, and fused against looped. Issue 14's targets on the 2-core development CPU: fused naive <= 0.7x
looped naive; SMD, GAL, CLDL <= 2.2x fused naive; DVERGE <= 5x.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from tune_div import data, defenses, models
from tune_div.train import resolve_device
from tune_div.train.precision import precision_context
from tune_div.train.trainer import adam


class Stepper:
    """One defense's ensemble, optimiser and batch; ``step()`` times one training step."""

    def __init__(
        self,
        name: str,
        x,
        y,
        arch: str,
        members: int,
        device,
        channels_last: bool,
        execution: str,
        precision: str = "fp32",
    ):
        torch.manual_seed(0)
        self.defense = defenses.build(name).to(device)
        meta = data.info("mnist")
        self.ens = models.build_ensemble(
            arch,
            members,
            meta.num_classes,
            meta.in_channels,
            mean=list(meta.mean),
            std=list(meta.std),
            **self.defense.model_options,
        ).to(device)
        self.ens.set_execution(execution)
        self.defense.prepare(self.ens)
        self.defense.start_epoch(1, self.ens)
        self.x, self.y = x, y
        if channels_last:
            self.ens = self.ens.to(memory_format=torch.channels_last)
            self.x = x.contiguous(memory_format=torch.channels_last)
        # after prepare(): CLDL's label-confusion model trains too; the optimiser the Trainer uses
        self.opt = adam(list(self.ens.parameters()) + list(self.defense.parameters()), 1e-3, 1e-4)
        self.device, self.precision = device, precision
        self.last_loss: torch.Tensor | None = None

    def _sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def step(self) -> float:
        self._sync()
        t0 = time.perf_counter()
        with precision_context(self.precision, self.device):
            total, _ = self.defense.loss(self.ens, self.x, self.y)
            self.opt.zero_grad(set_to_none=True)
            total.backward()
        self.opt.step()
        self._sync()
        self.last_loss = total.detach()
        return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="lenet5")
    p.add_argument("--members", type=int, default=3)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--defenses", default=",".join(defenses.names()))
    p.add_argument("--data-dir", default=None)
    p.add_argument("--synthetic", action="store_true", help="random images instead of real MNIST")
    p.add_argument("--device", default="auto")
    p.add_argument("--memory-format", choices=["contiguous", "channels_last", "both"], default="channels_last")
    p.add_argument(
        "--execution", default="looped,fused", help="comma-separated: looped, fused (the first is the baseline)"
    )
    args = p.parse_args()
    device = resolve_device(args.device)
    if args.synthetic:
        x, y = torch.rand(args.batch, 1, 28, 28), torch.randint(0, 10, (args.batch,))
    else:
        images, y = data.load("mnist", "train", args.data_dir, subset=args.batch)
        x = data.to_float(images)
    x, y = x.to(device), y.to(device)
    names = ["naive"] + [n for n in args.defenses.split(",") if n != "naive"]
    formats = ["contiguous", "channels_last"] if args.memory_format == "both" else [args.memory_format]
    executions = args.execution.split(",")
    print(
        f"{args.members} x {args.arch}, batch {args.batch}, device {device}, threads {torch.get_num_threads()}, "
        f"median of {args.repeats} interleaved rounds"
    )
    steppers = {
        (f, e, n): Stepper(n, x, y, args.arch, args.members, device, f == "channels_last", e)
        for f in formats
        for e in executions
        for n in names
    }
    times: dict = {k: [] for k in steppers}
    for r in range(args.warmup + args.repeats):
        for key, stepper in steppers.items():
            t = stepper.step()
            if r >= args.warmup:
                times[key].append(t)
    med = {k: statistics.median(v) for k, v in times.items()}
    base = med[(formats[0], executions[0], "naive")]
    print(
        f"{'format':<14} {'execution':<9} {'defense':<10} {'ms/step':>8} {'x naive':>8} {'x naive (same path)':>20} "
        f"{'x ' + executions[0]:>9}"
    )
    for f in formats:
        for e in executions:
            own = med[(f, e, "naive")]
            for n in names:
                t = med[(f, e, n)]
                print(
                    f"{f:<14} {e:<9} {n:<10} {t * 1e3:>8.1f} {t / base:>8.2f} {t / own:>20.2f} "
                    f"{t / med[(f, executions[0], n)]:>9.2f}"
                )


if __name__ == "__main__":
    main()
