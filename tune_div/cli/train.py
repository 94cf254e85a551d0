"""Train one ensemble with one defense: ``tune-div train --defense smd --dataset mnist --epochs 1``.

Or retrain an exported config: ``tune-div train --config best_robust.yaml --save-model m.pt``.
Flags given next to ``--config`` override it. Prints one line per epoch; writes the ensemble
(``--save-model``) and a JSON of the metrics (``--out``); a retrained config is logged to its MLflow
store and registered (``tune_div.tracking.retrain``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from .. import data, defenses, models
from ..domains import COUNT, check
from ..errors import DivergenceError, UserError
from ..files import atomic_write_text
from ..models.base import ACTIVATIONS
from ..progress import EpochProgress
from ..search.settings import check_objective
from ..train import TrainConfig, Trainer, checkpoint, config_file
from ..train.config import SCHEDULES
from ..train.precision import CHOICES as PRECISION_CHOICES
from .common import ArgumentParser, check_outputs_writable, cli_errors, fail, parse_key_values

PROG = "tune-div train"


def build_parser(prog: str = PROG) -> ArgumentParser:
    p = ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    p.add_argument("--config", help="exported config YAML to retrain")
    p.add_argument("--defense", help=f"one of: {', '.join(defenses.names())}")
    p.add_argument("--dataset", help=f"one of: {', '.join(data.names())} (default mnist)")
    p.add_argument("--arch", help=f"one of: {', '.join(models.names())} (default: the dataset's)")
    p.add_argument("--members", type=int, dest="n_members", help="ensemble size (default 3)")
    p.add_argument("--epochs", type=int, help="default: the dataset's paper epochs (50 MNIST-like, 200 CIFAR)")
    p.add_argument("--schedule", choices=SCHEDULES, help="LR schedule: multistep (default) or plateau")
    p.add_argument(
        "--early-stop-patience",
        type=int,
        help="stop when the validation loss has not improved for this many epochs (--epochs is then the cap)",
    )
    p.add_argument(
        "--paper-routine",
        action="store_true",
        help="train with the defense's own paper's routine "
        "where it differs (drelu: plateau schedule, early stopping, up to 2000 epochs)",
    )
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--subset", type=int, help="train on a seeded subset of N images")
    p.add_argument("--val-subset", type=int, help="validate on a seeded subset of N images")
    p.add_argument("--activation", choices=ACTIVATIONS)
    p.add_argument(
        "--adv-train",
        metavar="ATTACK[:eps=E,steps=S,ratio=R]",
        help="adversarial training on top of the defense, e.g. pgd:eps=0.1,steps=10,ratio=0.5",
    )
    p.add_argument("--hparam", action="append", metavar="KEY=VALUE", help="defense hyperparameter (repeatable)")
    p.add_argument("--data-dir", help="dataset folder (else $TUNE_DIV_DATA, else ~/.cache/tune_div/data)")
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:1, ...")
    p.add_argument(
        "--execution",
        choices=models.EXECUTIONS,
        help="run the members fused (one batched "
        "computation), looped, or auto (default: fused where it is measured faster, the CPU)",
    )
    p.add_argument(
        "--precision",
        choices=PRECISION_CHOICES,
        help="fp32, tf32 or bf16 (CUDA), or auto (default: "
        "the device's measured default, fp32 until benchmarks/device_check.py has shown better)",
    )
    p.add_argument("--test-subset", type=int, help="report test accuracy on a seeded subset of N images")
    p.add_argument("--checkpoint", help="checkpoint file: saved every epoch, resumed from if it exists")
    p.add_argument("--save-model", help="write the trained ensemble to this file")
    p.add_argument("--out", help="write the metrics as JSON to this file")
    p.add_argument("--tracking-uri", help="log the run to this MLflow store (default with --config: the source's)")
    p.add_argument(
        "--register",
        metavar="NAME",
        help="register the ensemble as an MLflow model (default with --config: <defense>-<dataset>)",
    )
    p.add_argument("--alias", help="alias of the registered version (default from the file name: best-robust, knee)")
    p.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    return p


def config_from_args(args, doc: dict | None = None) -> TrainConfig:
    overrides = {
        k: getattr(args, k)
        for k in (
            "defense",
            "dataset",
            "arch",
            "n_members",
            "epochs",
            "batch_size",
            "lr",
            "weight_decay",
            "seed",
            "subset",
            "val_subset",
            "activation",
            "data_dir",
            "device",
            "schedule",
            "early_stop_patience",
            "execution",
            "precision",
        )
    }
    overrides["adv_train"] = None
    hparams = parse_key_values(args.hparam)
    if args.adv_train:
        attack, _, rest = args.adv_train.partition(":")
        overrides["adv_train"] = {
            "attack": attack,
            **parse_key_values([kv for kv in rest.split(",") if kv], "--adv-train"),
        }
    if doc is not None:
        doc = {**doc, "hparams": {**(doc.get("hparams") or {}), **hparams}}
        return config_file.to_train_config(doc, **overrides)
    if not args.defense:
        raise UserError(f"--defense is required (one of: {', '.join(defenses.names())}) unless --config is given")
    routine = defenses.DEFENSES.get(args.defense).paper_training if args.paper_routine else {}
    return TrainConfig.from_dict(
        {**routine, **{k: v for k, v in overrides.items() if v is not None}, "hparams": hparams}
    )


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    args = build_parser(prog).parse_args(argv)
    with cli_errors(prog):
        doc = config_file.read(args.config) if args.config else None
        if doc and doc.get("objective"):
            check_objective(doc["objective"])  # before training: it is measured after
        cfg = config_from_args(args, doc)
        check_outputs_writable(args.save_model, args.out, args.checkpoint)
        if args.test_subset is not None:
            check("--test-subset", "points", args.test_subset, COUNT)
        uri = args.tracking_uri or ((doc or {}).get("source") or {}).get("tracking_uri")
        if uri and not args.no_mlflow:
            from ..tracking import check_store

            check_store(uri)  # before training, not after: its logging comes last
        if args.checkpoint and Path(args.checkpoint).is_file():
            checkpoint.load(args.checkpoint, cfg)  # a damaged or foreign checkpoint: one line, before any work
        if cfg.adv_train:
            print(f"adversarial training: {cfg.adv_train}")
        trainer = Trainer(cfg)
        routine = (
            f", {cfg.schedule} LR schedule"
            + (
                f", early stopping after {cfg.early_stop_patience} epochs without a better validation loss"
                if cfg.early_stop_patience
                else ""
            )
            + (" (validation loss: NLL + the defense's penalty)" if cfg.monitor == "loss" else "")
        )
        print(
            f"training {cfg.defense} on {cfg.dataset}: {cfg.n_members} x {cfg.arch}, {cfg.epochs} epoch(s){routine}, "
            f"{len(trainer.train_loader.labels)} train / {len(trainer.val_loader.labels)} val images, "
            f"device {trainer.device}",
            flush=True,
        )

        progress = EpochProgress(cfg.epochs, f"{cfg.defense} training")

        def report(m):
            parts = " ".join(f"{k[5:]}={v:.4f}" for k, v in m.items() if k.startswith("part_"))
            members = " ".join(f"{v:.4f}" for k, v in m.items() if k.startswith("val_member_acc_"))
            phase, at, total = trainer.phase()
            word = "epoch" if phase == "training" else "retraining epoch"
            progress.epoch(
                at,
                m["epoch_time_s"],
                f"{word} {at:>3}/{total}  loss {m['train_loss']:.4f} [{parts}]  "
                f"val acc {m['val_clean_acc']:.4f} (members {members})  {m['epoch_time_s']:.1f}s",
                total=total,
            )

        try:
            with progress:
                history = trainer.fit(callback=report, checkpoint_path=args.checkpoint)
        except DivergenceError as exc:
            fail(prog, f"training diverged: {exc}")
        if trainer.stopped_early:
            print(
                f"stopped early after epoch {trainer.epoch}: no better validation loss for "
                f"{cfg.early_stop_patience} epochs"
            )
        test_acc, test_members = trainer.test_accuracy(args.test_subset)
        print(f"test acc {test_acc:.4f} (members {' '.join(f'{a:.4f}' for a in test_members)})")
        result: dict[str, Any] = {
            "config": cfg.to_dict(),
            "history": history,
            "metrics": {
                "val_clean_acc": history[-1]["val_clean_acc"] if history else None,
                "test_clean_acc": test_acc,
                "test_member_acc": test_members,
                "test_split_points": args.test_subset or "all",
            },
        }
        if doc and doc.get("objective"):
            # Measured exactly as the search did (same fixed subsets), so they compare with doc["metrics"].
            result["metrics"]["test_clean_acc_whole_split"] = result["metrics"].pop("test_clean_acc")
            from ..search.settings import OBJECTIVE_DEFAULTS
            from ..search.trainable import objective_metrics

            result["metrics"].update(objective_metrics(trainer, doc["objective"]))
            preset = doc["objective"].get("audit", OBJECTIVE_DEFAULTS["audit"])
            what = f"audited, {preset} preset" if preset else "PROXY, not audited"
            print(
                f"objective ({what}): "
                + "  ".join(
                    f"{k} {v:.4f}" for k, v in result["metrics"].items() if k.endswith(("robust_acc", "proxy_acc"))
                )
            )
            if doc.get("metrics"):
                result["source_metrics"] = doc["metrics"]
        if args.save_model:
            models.save_ensemble(trainer.ensemble.cpu(), args.save_model, cfg.to_dict())
            print(f"ensemble written to {args.save_model}")
        if args.out:
            atomic_write_text(args.out, json.dumps(result, indent=2))
            print(f"metrics written to {args.out}")
        if uri and not args.no_mlflow:
            log_to_mlflow(uri, cfg, trainer, result, doc, args)
    return 0


def log_to_mlflow(uri: str, cfg: TrainConfig, trainer: Trainer, result: dict, doc: dict | None, args) -> None:
    """A run linked to the exported trial, the ensemble logged and registered under an alias."""
    from ..tracking.retrain import log_retrain

    meta = data.info(cfg.dataset)
    name = args.register or f"{cfg.defense}-{cfg.dataset}"
    _, version, alias = log_retrain(
        uri,
        cfg.to_dict(),
        result["history"],
        {k: v for k, v in result["metrics"].items() if isinstance(v, float)},
        trainer.ensemble.cpu().eval(),
        torch.rand(1, meta.in_channels, meta.image_size, meta.image_size),
        (doc or {}).get("source") or {},
        name,
        args.config,
        args.alias,
    )
    print(f"logged to MLflow ({uri}): model '{name}' version {version}" + (f", alias '{alias}'" if alias else ""))
