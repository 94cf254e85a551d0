"""Train one ensemble with one defense: ``python -m tune_div.train --defense smd --dataset mnist --epochs 1``.

Or retrain an exported config: ``python -m tune_div.train --config best_robust.yaml --save-model m.pt``.
Flags given next to ``--config`` override it. Prints one line per epoch; writes the ensemble
(``--save-model``) and a JSON of the metrics (``--out``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from . import config_file, data, defenses, models
from .cli import ArgumentParser, check_outputs_writable, parse_key_values
from .errors import DivergenceError, cli_errors, fail
from .training import TrainConfig, Trainer

PROG = "python -m tune_div.train"


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    p.add_argument("--config", help="exported config YAML to retrain")
    p.add_argument("--defense", help=f"one of: {', '.join(defenses.names())}")
    p.add_argument("--dataset", help=f"one of: {', '.join(data.names())} (default mnist)")
    p.add_argument("--arch", help=f"one of: {', '.join(models.names())} (default: the dataset's)")
    p.add_argument("--members", type=int, dest="n_members", help="ensemble size (default 3)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--subset", type=int, help="train on a seeded subset of N images")
    p.add_argument("--val-subset", type=int, help="validate on a seeded subset of N images")
    p.add_argument("--activation", choices=["relu", "leaky_relu"])
    p.add_argument("--adv-train", metavar="ATTACK[:eps=E,steps=S,ratio=R]",
                   help="adversarial training on top of the defense, e.g. pgd:eps=0.1,steps=10,ratio=0.5")
    p.add_argument("--hparam", action="append", metavar="KEY=VALUE", help="defense hyperparameter (repeatable)")
    p.add_argument("--data-dir", help="dataset folder (else $TUNE_DIV_DATA, else ~/.cache/tune_div/data)")
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:1, ...")
    p.add_argument("--test-subset", type=int, help="report test accuracy on a seeded subset of N images")
    p.add_argument("--checkpoint", help="checkpoint file: saved every epoch, resumed from if it exists")
    p.add_argument("--save-model", help="write the trained ensemble to this file")
    p.add_argument("--out", help="write the metrics as JSON to this file")
    p.add_argument("--tracking-uri", help="log the run to this MLflow store (default with --config: the source's)")
    p.add_argument("--register", metavar="NAME", help="register the ensemble as an MLflow model (default with "
                   "--config: <defense>-<dataset>)")
    p.add_argument("--alias", help="alias of the registered version (default from the file name: best-robust, knee)")
    p.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    return p


def config_from_args(args) -> TrainConfig:
    overrides = {k: getattr(args, k) for k in ("defense", "dataset", "arch", "n_members", "epochs", "batch_size",
                                               "lr", "weight_decay", "seed", "subset", "val_subset",
                                               "activation", "data_dir", "device")}
    overrides["adv_train"] = None
    hparams = parse_key_values(args.hparam)
    if args.adv_train:
        attack, _, rest = args.adv_train.partition(":")
        overrides["adv_train"] = {"attack": attack, **parse_key_values([kv for kv in rest.split(",") if kv],
                                                                       "--adv-train")}
    if args.config:
        doc = config_file.read(args.config)
        doc.setdefault("hparams", {})
        doc["hparams"] = {**(doc["hparams"] or {}), **hparams}
        return config_file.to_train_config(doc, **overrides)
    if not args.defense:
        raise ValueError(f"--defense is required (one of: {', '.join(defenses.names())}) unless --config is given")
    return TrainConfig.from_dict({**{k: v for k, v in overrides.items() if v is not None}, "hparams": hparams})


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with cli_errors(PROG):
        cfg = config_from_args(args)
        check_outputs_writable(args.save_model, args.out)
        defenses.build(cfg.defense, **cfg.hparams)  # validate before loading data
        if cfg.adv_train:
            print(f"adversarial training: {cfg.adv_train}")
        trainer = Trainer(cfg)
        print(f"training {cfg.defense} on {cfg.dataset}: {cfg.n_members} x {cfg.arch}, {cfg.epochs} epoch(s), "
              f"{len(trainer.train_loader.labels)} train / {len(trainer.val_loader.labels)} val images, "
              f"device {trainer.device}", flush=True)

        def report(m):
            parts = " ".join(f"{k[5:]}={v:.4f}" for k, v in m.items() if k.startswith("part_"))
            members = " ".join(f"{v:.4f}" for k, v in m.items() if k.startswith("val_member_acc_"))
            print(f"epoch {m['epoch']:>3}/{cfg.epochs}  loss {m['train_loss']:.4f} [{parts}]  "
                  f"val acc {m['val_clean_acc']:.4f} (members {members})  {m['epoch_time_s']:.1f}s", flush=True)

        try:
            history = trainer.fit(callback=report, checkpoint_path=args.checkpoint)
        except DivergenceError as exc:
            fail(PROG, f"training diverged: {exc}")
        test_acc, test_members = trainer.test_accuracy(args.test_subset)
        print(f"test acc {test_acc:.4f} (members {' '.join(f'{a:.4f}' for a in test_members)})")
        result = {"config": cfg.to_dict(), "history": history,
                  "metrics": {"val_clean_acc": history[-1]["val_clean_acc"] if history else None,
                              "test_clean_acc": test_acc, "test_member_acc": test_members,
                              "test_split_points": args.test_subset or "all"}}
        doc = config_file.read(args.config) if args.config else None
        if doc and doc.get("objective"):
            # Measured exactly as the search did (same fixed subsets), so they compare with doc["metrics"].
            result["metrics"]["test_clean_acc_whole_split"] = result["metrics"].pop("test_clean_acc")
            result["metrics"].update(objective_metrics(trainer, doc["objective"]))
            print("objective: " + "  ".join(f"{k} {v:.4f}" for k, v in result["metrics"].items()
                                            if k.endswith("robust_acc")))
            if doc.get("metrics"):
                result["source_metrics"] = doc["metrics"]
        if args.save_model:
            models.save_ensemble(trainer.ensemble.cpu(), args.save_model)
            print(f"ensemble written to {args.save_model}")
        if args.out:
            Path(args.out).write_text(json.dumps(result, indent=2))
            print(f"metrics written to {args.out}")
        uri = args.tracking_uri or ((doc or {}).get("source") or {}).get("tracking_uri")
        if uri and not args.no_mlflow:
            log_retrain(uri, cfg, trainer, result, doc, args)
    return 0


def objective_metrics(trainer: Trainer, objective: dict) -> dict[str, float]:
    """The search's objective on the same fixed subsets as the trial (validation, then test)."""
    from .trainable import ProxyObjective

    model = trainer.ensemble.eval()
    out = {}
    _, out["val_robust_acc"] = ProxyObjective(trainer.cfg, objective)(model)
    test = ProxyObjective(trainer.cfg, objective, split="test", n=objective.get("test_n"))
    out["test_clean_acc"], out["test_robust_acc"] = test(model)
    return out


def alias_for(path: str | None, alias: str | None) -> str | None:
    if alias:
        return alias
    stem = Path(path).stem if path else ""
    return {"best_robust": "best-robust", "knee": "knee"}.get(stem)


def log_retrain(uri: str, cfg: TrainConfig, trainer: Trainer, result: dict, doc: dict | None, args) -> None:
    """An MLflow run linked to the exported trial, with the ensemble logged and registered under an alias."""
    import mlflow

    from . import tracking

    source = (doc or {}).get("source") or {}
    name = args.register or f"{cfg.defense}-{cfg.dataset}"
    mlflow.set_tracking_uri(uri)
    client = tracking.client_for(uri)
    storage = Path(uri[len("sqlite:///"):]).parent if uri.startswith("sqlite:///") else None
    exp_id = tracking.get_or_create_experiment(client, source.get("experiment") or name,
                                               str(storage / "mlartifacts") if storage else None)
    tags = {"tune_div.role": "retrain", "defense": cfg.defense, "dataset": cfg.dataset}
    tags.update({f"tune_div.source_{k}": str(v) for k, v in source.items() if k != "tracking_uri"})
    with mlflow.start_run(experiment_id=exp_id, run_name=f"retrain-{source.get('trial_id', cfg.defense)}", tags=tags):
        mlflow.log_params({k: str(v) for k, v in cfg.to_dict().items() if k not in ("data_dir", "hparams")})
        mlflow.log_params({f"hparams.{k}": str(v) for k, v in cfg.hparams.items()})
        for h in result["history"]:
            mlflow.log_metrics({k: v for k, v in h.items() if isinstance(v, (int, float)) and k != "epoch"},
                               step=int(h["epoch"]))
        mlflow.log_metrics({k: v for k, v in result["metrics"].items() if isinstance(v, float)})
        if args.config:
            mlflow.log_artifact(args.config)
        ens = trainer.ensemble.cpu().eval()
        meta = data.info(cfg.dataset)
        example = torch.rand(1, meta.in_channels, meta.image_size, meta.image_size).numpy()
        info = mlflow.pytorch.log_model(ens, name="model", registered_model_name=name, serialization_format="pickle",
                                        input_example=example)
    version = info.registered_model_version
    alias = alias_for(args.config, args.alias)
    if alias and version is not None:
        client.set_registered_model_alias(name, alias, str(version))
    print(f"logged to MLflow ({uri}): model '{name}' version {version}" + (f", alias '{alias}'" if alias else ""))


if __name__ == "__main__":
    sys.exit(main())
