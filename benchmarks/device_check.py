"""The GPU check: is the CUDA path right, how fast is it, and which defaults follow (issue 25).

    python benchmarks/device_check.py [--device cuda] [--quick] [--out device_check/] [--time-limit 420]
                                      [--sections equivalence,training,attacks,steps,packing,compile]
    python benchmarks/device_check.py --apply device_check/device_check.json   # write the defaults

It needs torch and tune_div's core packages only (data, models, defenses, attacks, train, eval; the
attacks' advertorch and torchattacks), never Ray, MLflow or Optuna, so it runs on a bare GPU machine
(``scripts/device_check.sh`` installs what that machine lacks from carried wheels). Sections, in the
order they run (each records its own wall time; past ``--time-limit`` the remaining ones are skipped and
say so):

- ``equivalence``: for every registered defense x {looped, fused}, one training step on the device
  against the same step on the CPU from the same weights and batch, in float32 with TF32 off: the loss,
  every parameter gradient and the batch-norm running statistics, as relative differences
  ``|a - b| / |b|`` (tensors: ``‖a - b‖ / ‖b‖``) against :data:`TOLERANCE`. DVERGE and SMD+ train on one
  distilled batch drawn on the CPU (their sign step turns rounding differences into whole steps,
  tests/test_fused.py); their distillation is compared on its own (pre-sign gradient, and the share of
  pixels that end up different).
- ``training``: naive and SMD, 3 x LeNet-5, 2 epochs of full MNIST on the device and on the CPU from
  the same seed: validation accuracy, loss and epoch time.
- ``attacks``: PGD-10 and the audit (``fast``) at the dataset's objective ε on 1,000 MNIST test points,
  against the naive ensemble the training section trained, on the device and on the CPU: time and
  accuracy.
- ``steps``: ms per training step of every defense, looped and fused, at batch 128 and 512, in float32,
  TF32 and bf16 autocast (a precision a defense's double backward refuses is recorded as failed);
  CUDA graphs for the naive step.
- ``packing``: total steps/s of K trials sharing the device (K = 1, 4, 8 processes,
  ``benchmarks/trial_packing.py``), naive and SMD.
- ``compile``: ``torch.compile`` of the naive and SMD loss: compile time and ms per step, or why it
  failed.

:func:`decide` turns the JSON into defaults (which architectures run fused on the device, the
``--gpus-per-trial`` default, the precision) and ``--apply`` writes them to
``tune_div/device_defaults.json``, which ``tune_div.device_defaults`` reads.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))  # the sibling benchmarks, also when run through runpy

from step_time import Stepper  # noqa: E402  (the same training step step_time.py times)

from tune_div import data, defenses, models
from tune_div.defenses.base import member_ce
from tune_div.defenses.dverge import DVERGE, feature_distill, layer_features
from tune_div.device_defaults import DEFAULTS_FILE, write_defaults
from tune_div.eval import points
from tune_div.train import TrainConfig, Trainer
from tune_div.train.precision import PRECISIONS, precision_context
from tune_div.train.trainer import adam

SECTIONS = ("equivalence", "training", "attacks", "steps", "packing", "compile")
# float32 on two devices: sums in another order (cuDNN/cuBLAS against oneDNN/MKL), ~1e-6 relative per
# reduction. Gradients go through one more reduction per layer and, for SMD, GAL and CLDL, a double
# backward, so they get 10x the loss's room.
TOLERANCE = {"loss": 1e-4, "gradients": 1e-3, "running_stats": 1e-4, "distill_gradient": 1e-3}
ARCH = "lenet5"
MEMBERS = 3


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rel(a: torch.Tensor | float, b: torch.Tensor | float) -> float:
    """‖a − b‖ / ‖b‖ (0 when both are 0), on the CPU in float64."""
    a_t = torch.as_tensor(a).detach().double().cpu()
    b_t = torch.as_tensor(b).detach().double().cpu()
    diff = float((a_t - b_t).norm())
    ref = float(b_t.norm())
    return diff / ref if ref > 0 else diff


def mnist_batch(n: int, data_dir: str | None, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = data.load("mnist", split, data_dir, subset=n)
    return data.to_float(images), labels


def build(defense: str, execution: str, seed: int = 0) -> tuple[defenses.Defense, models.Ensemble]:
    torch.manual_seed(seed)
    d = defenses.build(defense)
    meta = data.info("mnist")
    ens = models.build_ensemble(
        ARCH,
        MEMBERS,
        meta.num_classes,
        meta.in_channels,
        image_size=meta.image_size,
        mean=list(meta.mean),
        std=list(meta.std),
        **d.model_options,
    )
    d.prepare(ens)
    ens.set_execution(execution)
    return d, ens


def one_step(d, ens, x, y) -> dict[str, Any]:
    """Loss, gradients and running statistics of one training step (no optimiser update)."""
    ens.train()
    torch.manual_seed(1)
    d.start_epoch(1, ens)
    total, _ = d.loss(ens, x, y)
    ens.zero_grad(set_to_none=True)
    d.zero_grad(set_to_none=True)
    total.backward()
    grads = {
        k: p.grad.detach().cpu() for k, p in [*ens.named_parameters(), *d.named_parameters()] if p.grad is not None
    }
    stats = {k: b.detach().cpu() for k, b in ens.named_buffers() if "running" in k}
    return {"loss": float(total.detach()), "grads": grads, "stats": stats}


def fix_distillation(d, ens, x) -> torch.Tensor | None:
    """A sign-step defense trains on one batch distilled on the CPU (see the module docstring)."""
    if not isinstance(d, DVERGE):
        return None
    probe = copy.deepcopy(ens).set_execution("looped").train()
    torch.manual_seed(1)
    d.start_epoch(1, probe)
    batch = d.distilled(probe, x)
    d.distilled = lambda ensemble, x: batch.to(x.device)
    return batch


def compare_distillation(ens_cpu, ens_dev, x, device) -> dict[str, float]:
    """DVERGE's distillation at its first layer on both devices: the pre-sign gradient, and the share of
    pixels that differ after the reference's ten momentum sign steps."""
    target = x[torch.roll(torch.arange(len(x)), 1)]
    out: dict[str, Any] = {}
    for name, ens, dev in (("cpu", ens_cpu, torch.device("cpu")), ("device", ens_dev, device)):
        e = copy.deepcopy(ens).train()
        xs, ts = x.to(dev), target.to(dev)
        z = e.member_copies(xs)
        with torch.no_grad():
            goal = layer_features(e, e.member_copies(ts, requires_grad=False), 1, "all")
        (g,) = torch.autograd.grad(((layer_features(e, z, 1, "all") - goal) ** 2).sum(), z)
        out[name] = (g.cpu(), feature_distill(copy.deepcopy(ens).train(), xs, ts, 1, 0.07, 0.007, 10).cpu())
    return {
        "distill_gradient": rel(out["device"][0], out["cpu"][0]),
        "distilled_pixels_differing": float(((out["device"][1] - out["cpu"][1]).abs() > 1e-6).float().mean()),
    }


def section_equivalence(args, device: torch.device) -> dict[str, Any]:
    x, y = mnist_batch(8 if args.quick else 32, args.data_dir)
    rows = []
    with precision_context("fp32", device):
        for name in defenses.names():
            for execution in ("looped", "fused"):
                d_cpu, ens_cpu = build(name, execution)
                batch = fix_distillation(d_cpu, ens_cpu, x)
                d_dev, ens_dev = copy.deepcopy(d_cpu).to(device), copy.deepcopy(ens_cpu).to(device)
                if batch is not None:
                    d_dev.distilled = lambda ensemble, xb, b=batch: b.to(xb.device)
                ref = one_step(d_cpu, ens_cpu, x, y)
                got = one_step(d_dev, ens_dev, x.to(device), y.to(device))
                row: dict[str, Any] = {
                    "defense": name,
                    "execution": execution,
                    "fused_ran": ens_dev.uses_fused(),
                    "loss": rel(got["loss"], ref["loss"]),
                    "gradients": max(rel(got["grads"][k], g) for k, g in ref["grads"].items()),
                    "running_stats": max([rel(got["stats"][k], s) for k, s in ref["stats"].items()], default=0.0),
                    "missing_gradients": sorted(set(ref["grads"]) ^ set(got["grads"])),
                }
                if batch is not None and execution == "looped":
                    _, e_cpu = build(name, execution)
                    row.update(compare_distillation(e_cpu, copy.deepcopy(e_cpu).to(device), x, device))
                row["ok"] = (not row["missing_gradients"]) and all(
                    row[k] <= tol for k, tol in TOLERANCE.items() if k in row
                )
                rows.append(row)
    return {"tolerance": TOLERANCE, "batch": len(x), "rows": rows, "ok": all(r["ok"] for r in rows)}


def train_run(defense: str, device: str, args) -> dict[str, Any]:
    cfg = TrainConfig(
        defense=defense,
        dataset="mnist",
        arch=ARCH,
        n_members=MEMBERS,
        epochs=1 if args.quick else 2,
        subset=1000 if args.quick else None,
        val_subset=500 if args.quick else None,
        seed=0,
        data_dir=args.data_dir,
        device=device,
        precision="fp32",
    )
    trainer = Trainer(cfg)
    history = trainer.fit()
    return {
        "val_clean_acc": history[-1]["val_clean_acc"],
        "train_loss": history[-1]["train_loss"],
        "epoch_time_s": [h["epoch_time_s"] for h in history],
        "ensemble": trainer.ensemble,
    }


def section_training(args, device: torch.device, keep: dict[str, Any]) -> dict[str, Any]:
    rows = []
    for name in ("naive", "smd"):
        on_dev = train_run(name, str(device), args)
        on_cpu = train_run(name, "cpu", args)
        if name == "naive":
            keep["naive_device"], keep["naive_cpu"] = on_dev.pop("ensemble"), on_cpu.pop("ensemble")
        on_dev.pop("ensemble", None)
        on_cpu.pop("ensemble", None)
        rows.append(
            {
                "defense": name,
                "device": on_dev,
                "cpu": on_cpu,
                "val_acc_difference": on_dev["val_clean_acc"] - on_cpu["val_clean_acc"],
                "speedup": sum(on_cpu["epoch_time_s"]) / max(sum(on_dev["epoch_time_s"]), 1e-9),
            }
        )
    return {"epochs": 1 if args.quick else 2, "subset": 1000 if args.quick else "all", "rows": rows}


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[Any, float]:
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t0


def section_attacks(args, device: torch.device, keep: dict[str, Any]) -> dict[str, Any]:
    if "naive_device" not in keep:
        return {"skipped": "needs the training section's naive ensemble"}
    n = 100 if args.quick else 1000
    x, y = points.eval_subset("mnist", "test", n, seed=0, root=args.data_dir)
    eps = data.info("mnist").objective_eps
    out: dict[str, Any] = {"n": n, "eps": eps}
    for where, ens, dev in (("device", keep["naive_device"], device), ("cpu", keep["naive_cpu"], torch.device("cpu"))):
        ens = ens.to(dev).eval()
        xs, ys = x.to(dev), y.to(dev)
        adv, t_pgd = timed(lambda ens=ens, xs=xs, ys=ys: points.craft("pgd", ens, xs, ys, eps, {"steps": 10}), dev)
        report, t_audit = timed(lambda ens=ens, xs=xs, ys=ys: points.audit(ens, xs, ys, eps, "fast"), dev)
        out[where] = {
            "clean_acc": points.accuracy(ens, xs, ys),
            "pgd10_acc": points.accuracy(ens, adv, ys),
            "pgd10_s": t_pgd,
            "audit_acc": report.robust_acc,
            "audit_s": t_audit,
        }
    out["pgd10_acc_difference"] = out["device"]["pgd10_acc"] - out["cpu"]["pgd10_acc"]
    out["audit_acc_difference"] = out["device"]["audit_acc"] - out["cpu"]["audit_acc"]
    return out


def median_time(step: Callable[[], float], warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        step()
    return statistics.median(step() for _ in range(repeats))


def graphed_naive_step(x: torch.Tensor, y: torch.Tensor, device: torch.device, warmup: int, repeats: int) -> float:
    """The naive step (loss, backward, capturable Adam) captured once as a CUDA graph and replayed."""
    _, ens = build("naive", "fused")
    ens = ens.to(device).train()
    opt = torch.optim.Adam(ens.parameters(), lr=1e-3, weight_decay=1e-4, capturable=True)
    sx, sy = x.clone(), y.clone()

    def step() -> None:
        opt.zero_grad(set_to_none=False)
        member_ce(ens.member_logits(sx), sy).sum().backward()
        opt.step()

    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(3):
            step()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    return median_time(lambda: timed(graph.replay, device)[1], warmup, repeats)


def section_steps(args, device: torch.device, deadline: float) -> dict[str, Any]:
    batches = (128,) if args.quick else (128, 512)
    names = ("naive", "smd") if args.quick else tuple(defenses.names())
    precisions = ("fp32",) if device.type == "cpu" else PRECISIONS
    warmup, repeats = (1, 3) if args.quick else (3, 10)
    rows = []
    for batch in batches:
        x, y = mnist_batch(batch, args.data_dir)
        x, y = x.to(device), y.to(device)
        for name in names:
            for execution in ("looped", "fused"):
                for precision in precisions:
                    row: dict[str, Any] = {
                        "defense": name,
                        "execution": execution,
                        "batch": batch,
                        "precision": precision,
                    }
                    if time.perf_counter() > deadline:
                        row["skipped"] = "time limit"
                    else:
                        try:
                            stepper = Stepper(name, x, y, ARCH, MEMBERS, device, False, execution, precision)
                            row["ms"] = 1e3 * median_time(stepper.step, warmup, repeats)
                            if stepper.last_loss is not None and not torch.isfinite(stepper.last_loss):
                                raise FloatingPointError(f"loss {float(stepper.last_loss)}")
                        except Exception as exc:  # a precision the double backward refuses is a result
                            row["failed"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
                    rows.append(row)
    graphs: dict[str, Any] = {"skipped": "CUDA only"}
    if device.type == "cuda":
        x, y = mnist_batch(128, args.data_dir)
        try:
            graphs = {"batch": 128, "ms": 1e3 * graphed_naive_step(x.to(device), y.to(device), device, warmup, repeats)}
        except Exception as exc:
            graphs = {"failed": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
    return {"warmup": warmup, "repeats": repeats, "rows": rows, "cuda_graph_naive": graphs}


def section_packing(args, device: torch.device, deadline: float) -> dict[str, Any]:
    import trial_packing

    counts = (1, 2) if args.quick else (1, 4, 8)
    ns = argparse.Namespace(
        arch=ARCH,
        device=str(device),
        batch=128,
        data_dir=args.data_dir,
        threads=1 if device.type == "cpu" else None,
        seconds=1.0 if args.quick else 8.0,
        warmup=1 if args.quick else 5,
    )
    rows = []
    for name in ("naive",) if args.quick else ("naive", "smd"):
        one = None
        for k in counts:
            if time.perf_counter() > deadline:
                rows.append({"defense": name, "execution": "fused", "trials": k, "skipped": "time limit"})
                continue
            rate = trial_packing.measure(k, ns, name, "fused")
            one = one or rate
            rows.append(
                {"defense": name, "execution": "fused", "trials": k, "steps_per_s": rate, "x_one_trial": rate / one}
            )
    return {"seconds": ns.seconds, "rows": rows}


def section_compile(args, device: torch.device) -> dict[str, Any]:
    import logging

    if args.quick and device.type == "cpu":
        return {"skipped": "--quick on a CPU: compiling takes half a minute there"}
    # The defenses' parts dicts read Python floats, a graph break dynamo explains at length each time.
    torch._logging.set_logs(dynamo=logging.ERROR)
    x, y = mnist_batch(128, args.data_dir)
    x, y = x.to(device), y.to(device)
    rows = []
    for name in ("naive",) if args.quick else ("naive", "smd"):
        d, ens = build(name, "looped")
        d, ens = d.to(device), ens.to(device).train()
        opt = adam(ens.parameters(), 1e-3, 1e-4)
        loss = torch.compile(lambda xb, yb, d=d, ens=ens: d.loss(ens, xb, yb)[0])

        def step(loss=loss, opt=opt) -> float:
            def run() -> None:
                opt.zero_grad(set_to_none=True)
                loss(x, y).backward()
                opt.step()

            return timed(run, device)[1]

        try:
            first = step()
            rows.append(
                {"defense": name, "compile_s": first, "ms": 1e3 * median_time(step, 2, 5 if args.quick else 10)}
            )
        except Exception as exc:
            rows.append({"defense": name, "failed": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"})
    return {"rows": rows}


def decide(result: dict[str, Any]) -> dict[str, Any]:
    """The defaults a check's result supports, each with its reason.

    - fused on the device for LeNet-5 when its fused naive and SMD steps (fp32, batch 128) are at least 5%
      faster than looped, and the equivalence section passed;
    - ``gpus_per_trial`` = 1/K for the largest K whose total throughput is within 10% of the best K's
      (more trials at about the same throughput is a wider search), 1 without a packing section;
    - precision ``tf32`` when TF32 is at least 10% faster than fp32 for the median defense at batch 128;
      bf16 is never chosen by itself (its effect on robust accuracy is not measured here).
    """
    device = result["device_type"]
    out: dict[str, Any] = {"device": device, "fused": [], "gpus_per_trial": 1.0, "precision": "fp32", "why": {}}
    sections = result["sections"]
    steps = {
        (r["defense"], r["execution"], r["batch"], r["precision"]): r.get("ms")
        for r in sections.get("steps", {}).get("rows", [])
    }
    eq_ok = sections.get("equivalence", {}).get("ok", False)
    ratios = [
        steps.get((n, "fused", 128, "fp32"))
        and steps.get((n, "looped", 128, "fp32"))
        and steps[(n, "fused", 128, "fp32")] / steps[(n, "looped", 128, "fp32")]
        for n in ("naive", "smd")
    ]
    if eq_ok and all(ratios) and max(ratios) <= 0.95:
        out["fused"] = [ARCH]
    out["why"]["fused"] = f"fused/looped at batch 128: {ratios}; equivalence ok: {eq_ok}"
    pack = [r for r in sections.get("packing", {}).get("rows", []) if r["defense"] == "naive" and "steps_per_s" in r]
    if pack:
        best = max(r["steps_per_s"] for r in pack)
        k = max(r["trials"] for r in pack if r["steps_per_s"] >= 0.9 * best)
        out["gpus_per_trial"] = round(1.0 / k, 6)
        out["why"]["gpus_per_trial"] = (
            f"naive steps/s by K: {[(r['trials'], round(r['steps_per_s'], 1)) for r in pack]}"
        )
    tf32 = [
        steps[(n, "looped", 128, "fp32")] / steps[(n, "looped", 128, "tf32")]
        for n in {k[0] for k in steps}
        if steps.get((n, "looped", 128, "fp32")) and steps.get((n, "looped", 128, "tf32"))
    ]
    if tf32 and statistics.median(tf32) >= 1.1:
        out["precision"] = "tf32"
    out["why"]["precision"] = f"fp32/tf32 time per defense: {sorted(round(t, 2) for t in tf32)}"
    return out


def summary(result: dict[str, Any]) -> str:
    """A readable Markdown summary of a result."""
    s = result["sections"]
    lines = [
        f"# Device check: {result['device_name']}",
        "",
        f"- torch {result['torch']}, CUDA {result['cuda']}, {result['machine']}; {result['wall_s']:.0f} s"
        + (" (quick)" if result["quick"] else ""),
        f"- command: `{result['command']}`",
        "",
    ]
    for name in SECTIONS:
        sec = s.get(name)
        if sec is None:
            continue
        lines.append(f"## {name} ({sec.get('wall_s', 0):.0f} s)")
        lines.append("")
        if "skipped" in sec or "failed" in sec:
            lines += [f"{sec.get('skipped') or sec.get('failed')}", ""]
            continue
        if name == "equivalence":
            lines += [
                f"tolerance: {sec['tolerance']}; all within: **{sec['ok']}**",
                "",
                "| defense | execution | fused ran | loss | gradients | running stats | distillation | ok |",
                "|---|---|---|---|---|---|---|---|",
            ]
            for r in sec["rows"]:
                dist = (
                    f"grad {r['distill_gradient']:.1e}, {100 * r['distilled_pixels_differing']:.2f}% px"
                    if "distill_gradient" in r
                    else ""
                )
                lines.append(
                    f"| {r['defense']} | {r['execution']} | {r['fused_ran']} | {r['loss']:.1e} | "
                    f"{r['gradients']:.1e} | {r['running_stats']:.1e} | {dist} | {r['ok']} |"
                )
        elif name == "training":
            lines += [
                "| defense | val acc device | val acc CPU | s/epoch device | s/epoch CPU | speed-up |",
                "|---|---|---|---|---|---|",
            ]
            for r in sec["rows"]:
                lines.append(
                    f"| {r['defense']} | {r['device']['val_clean_acc']:.4f} | {r['cpu']['val_clean_acc']:.4f} | "
                    f"{statistics.mean(r['device']['epoch_time_s']):.1f} | "
                    f"{statistics.mean(r['cpu']['epoch_time_s']):.1f} | {r['speedup']:.1f} |"
                )
        elif name == "attacks":
            lines += [
                f"n = {sec['n']} test points at ε {sec['eps']}, one naive ensemble, one seed: a check that the "
                "device computes what the CPU does, not a robustness result. PGD-10 is a proxy; the audit is the "
                "`fast` preset (docs/audit.md).",
                "",
                "| where | clean | PGD-10 (proxy) | PGD-10 s | audit (fast) | audit s |",
                "|---|---|---|---|---|---|",
            ]
            for where in ("device", "cpu"):
                r = sec[where]
                lines.append(
                    f"| {where} | {r['clean_acc']:.3f} | {r['pgd10_acc']:.3f} | {r['pgd10_s']:.2f} | "
                    f"{r['audit_acc']:.3f} | {r['audit_s']:.2f} |"
                )
        elif name == "steps":
            lines += ["| defense | execution | batch | precision | ms/step |", "|---|---|---|---|---|"]
            for r in sec["rows"]:
                value = f"{r['ms']:.2f}" if "ms" in r else r.get("failed") or r.get("skipped")
                lines.append(f"| {r['defense']} | {r['execution']} | {r['batch']} | {r['precision']} | {value} |")
            lines += ["", f"CUDA graph, naive step: {sec['cuda_graph_naive']}"]
        elif name == "packing":
            lines += ["| defense | trials | steps/s (all) | x one trial |", "|---|---|---|---|"]
            for r in sec["rows"]:
                if "skipped" in r:
                    lines.append(f"| {r['defense']} | {r['trials']} | {r['skipped']} | |")
                else:
                    lines.append(
                        f"| {r['defense']} | {r['trials']} | {r['steps_per_s']:.1f} | {r['x_one_trial']:.2f} |"
                    )
        elif name == "compile":
            for r in sec["rows"]:
                lines.append(
                    f"- {r['defense']}: "
                    + (f"compiled in {r['compile_s']:.1f} s, {r['ms']:.2f} ms/step" if "ms" in r else r["failed"])
                )
        lines.append("")
    d = result["defaults"]
    lines += [
        "## Defaults this supports",
        "",
        f"- fused on {d['device']}: {d['fused'] or 'none'} ({d['why']['fused']})",
        f"- --gpus-per-trial: {d['gpus_per_trial']:g} ({d['why'].get('gpus_per_trial', 'no packing section')})",
        f"- precision: {d['precision']} ({d['why']['precision']})",
        f"- apply with: `python benchmarks/device_check.py --apply {result.get('json_path', 'device_check.json')}`",
        "",
    ]
    return "\n".join(lines)


def run(args) -> dict[str, Any]:
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    wanted = [w for w in args.sections.split(",") if w]
    unknown = sorted(set(wanted) - set(SECTIONS))
    if unknown:
        raise SystemExit(f"device_check: unknown section(s) {unknown}; choose from {', '.join(SECTIONS)}")
    started = time.perf_counter()
    deadline = started + args.time_limit
    keep: dict[str, Any] = {}
    sections: dict[str, Any] = {}
    runners: dict[str, Callable[[], dict[str, Any]]] = {
        "equivalence": lambda: section_equivalence(args, device),
        "training": lambda: section_training(args, device, keep),
        "attacks": lambda: section_attacks(args, device, keep),
        "steps": lambda: section_steps(args, device, deadline),
        "packing": lambda: section_packing(args, device, deadline),
        "compile": lambda: section_compile(args, device),
    }
    for name in SECTIONS:
        if name not in wanted:
            continue
        if time.perf_counter() > deadline:
            sections[name] = {"skipped": f"time limit of {args.time_limit:g} s reached", "wall_s": 0.0}
            continue
        print(f"device_check: {name} ...", flush=True)
        t0 = time.perf_counter()
        try:
            sections[name] = runners[name]()
        except Exception as exc:  # one broken section must not cost the others' figures
            sections[name] = {"failed": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"}
        sections[name]["wall_s"] = time.perf_counter() - t0
        print(f"device_check: {name} done in {sections[name]['wall_s']:.1f} s", flush=True)
    result = {
        "device_type": device.type,
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "quick": args.quick,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
        "command": " ".join(["python", "benchmarks/device_check.py", *args.argv]),
        "sections": sections,
        "wall_s": time.perf_counter() - started,
    }
    result["defaults"] = decide(result)
    return result


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto", help="cuda, cuda:N, cpu or auto (default)")
    p.add_argument("--quick", action="store_true", help="a small rehearsal of every section (CPU: under a minute)")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of: {', '.join(SECTIONS)}")
    p.add_argument("--time-limit", type=float, default=420.0, help="seconds; later sections are skipped past it")
    p.add_argument("--out", default="device_check", help="folder for device_check.json and device_check.md")
    p.add_argument("--data-dir", default=None, help="dataset folder (else $TUNE_DIV_DATA)")
    p.add_argument("--apply", metavar="JSON", help=f"write the defaults of a result to {DEFAULTS_FILE.name} and stop")
    args = p.parse_args(argv)
    args.argv = argv
    if args.apply:
        result = json.loads(Path(args.apply).read_text())
        if result.get("quick"):
            raise SystemExit("device_check: a --quick result is a rehearsal; run the full check to set defaults")
        path = write_defaults(result["defaults"], source=f"{result['device_name']}, torch {result['torch']}")
        print(f"wrote {path}: {json.dumps(result['defaults'])}")
        return 0
    result = run(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result["json_path"] = str(out / "device_check.json")
    (out / "device_check.json").write_text(json.dumps(result, indent=2))
    text = summary(result)
    (out / "device_check.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
