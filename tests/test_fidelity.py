"""Faithful to the papers: paper epochs by default, the D-ReLU paper's plateau schedule and early stopping,
GAL's Gaussian-noise copy, and a black-box surrogate trained with the evaluated model's own routine."""

from __future__ import annotations

import hashlib
import json
import math

import pytest
import torch

from tune_div import defenses, models
from tune_div.cli import train as train_cli
from tune_div.defenses.gal import with_noisy_copy
from tune_div.eval import EvalSpec, evaluate
from tune_div.eval.surrogate import surrogate_config
from tune_div.train import TrainConfig, Trainer, config_file
from tune_div.train import trainer as trainer_module
from tune_div.train.trainer import epochs_without_improvement


def test_a_config_without_epochs_trains_the_datasets_paper_epochs():
    assert TrainConfig(dataset="mnist").epochs == 50
    assert TrainConfig(dataset="fashion_mnist").epochs == 50
    assert TrainConfig(dataset="cifar10").epochs == 200
    args = train_cli.build_parser().parse_args(["--defense", "smd"])
    assert train_cli.config_from_args(args).epochs == 50


def test_epochs_without_improvement_counts_from_the_lowest_loss():
    hist = [{"val_loss": v} for v in (1.0, 0.8, 0.9, 0.8, 0.85)]
    assert epochs_without_improvement(hist) == 3  # best 0.8 first seen at epoch 2 (an equal loss is no better)
    assert epochs_without_improvement(hist[:2]) == 0
    assert epochs_without_improvement([]) == 0


def test_plateau_schedule_and_early_stopping_follow_the_validation_loss(real_data, monkeypatch):
    """Scripted validation losses through the real trainer: Keras' ReduceLROnPlateau (factor 0.5,
    patience 1 here) and EarlyStopping (patience 3), as the D-ReLU paper uses them."""
    losses = iter([1.0, 0.9, 0.95, 0.96, 0.97, 0.5, 0.6])
    real_eval = trainer_module.ensemble_eval
    monkeypatch.setattr(
        trainer_module, "ensemble_eval", lambda ens, loader: (*real_eval(ens, loader)[:2], next(losses))
    )
    cfg = TrainConfig(
        defense="naive",
        data_dir=str(real_data),
        subset=64,
        val_subset=50,
        epochs=20,
        schedule="plateau",
        plateau_factor=0.5,
        plateau_patience=1,
        early_stop_patience=3,
    )
    trainer = Trainer(cfg)
    history = trainer.fit()
    # Written out: best 0.9 at epoch 2; epochs 3, 4 do not improve -> after epoch 4 (2 bad > patience 1)
    # the LR halves; epoch 5 is the third bad epoch -> stop. Epochs 6-7 never run.
    assert [h["epoch"] for h in history] == [1, 2, 3, 4, 5]
    assert [h["lr"] for h in history] == pytest.approx([1e-3, 1e-3, 1e-3, 5e-4, 5e-4])
    assert trainer.stopped_early and trainer.done and trainer.epoch == 5


def test_drelu_paper_routine_from_the_train_command():
    args = train_cli.build_parser().parse_args(["--defense", "drelu", "--paper-routine"])
    cfg = train_cli.config_from_args(args)
    routine = (cfg.schedule, cfg.plateau_factor, cfg.plateau_patience, cfg.early_stop_patience, cfg.monitor)
    assert routine == ("plateau", 0.5, 5, 10, "loss") and cfg.epochs == 2000
    args = train_cli.build_parser().parse_args(["--defense", "drelu", "--paper-routine", "--epochs", "30"])
    assert train_cli.config_from_args(args).epochs == 30  # a flag still overrides the routine
    doc = config_file.document(cfg)
    assert doc["train"]["schedule"] == "plateau" and doc["train"]["early_stop_patience"] == 10
    assert doc["train"]["monitor"] == "loss"
    assert config_file.to_train_config(doc).to_dict() == cfg.to_dict()  # an export retrains the same routine


def test_the_watched_validation_loss_holds_the_drelu_penalty_with_monitor_loss(real_data):
    """Keras' val_loss counts regularisation losses: with ``monitor="loss"`` the trainer's validation
    loss is the validation NLL plus λ·Σ m² over the caps, each recomputed here from the trained model."""
    lam = 0.5
    common = {"defense": "drelu", "hparams": {"lam": lam, "width": 16}, "arch": "dense", "n_members": 1}
    common |= {"data_dir": str(real_data), "subset": 128, "val_subset": 60, "epochs": 1}
    watched = Trainer(TrainConfig(**common, monitor="loss"))
    (h,) = watched.fit()
    ens = watched.ensemble.eval()
    x, y = (torch.cat(t) for t in zip(*watched.val_loader))
    with torch.no_grad():
        log_probs = torch.log_softmax(ens.member_logits(x)[0], dim=1)  # one member: its own softmax
        nll = float(torch.nn.functional.nll_loss(log_probs, y))
        caps = [p for n, p in ens.named_parameters() if n.endswith("max_value")]
        penalty = lam * sum(float((c * c).sum()) for c in caps)
    assert len(caps) == 1 and caps[0].numel() == 16
    assert h["val_nll"] == pytest.approx(nll, rel=1e-5) and h["val_penalty"] == pytest.approx(penalty, rel=1e-5)
    assert h["val_loss"] == pytest.approx(nll + penalty, rel=1e-5)
    assert penalty > 100 * nll  # caps near their initial 100: the sum is the penalty's
    (plain,) = Trainer(TrainConfig(**common)).fit()  # the default watches the NLL alone
    assert "val_penalty" not in plain and plain["val_loss"] == pytest.approx(nll, rel=1e-5)
    (naive,) = Trainer(TrainConfig(**{**common, "defense": "naive", "hparams": {}}, monitor="loss")).fit()
    assert "val_penalty" not in naive  # no penalty to add: the NLL


def test_the_default_monitor_keeps_the_cache_keys_of_models_trained_before_it_existed():
    from tune_div.eval.surrogate import config_key

    cfg = TrainConfig(defense="drelu", arch="dense", n_members=1, epochs=20)
    doc = cfg.to_dict()
    for k in ("data_dir", "device", "precision", "split_seed", "monitor"):
        doc.pop(k)
    assert config_key(cfg) == hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]
    assert config_key(TrainConfig(defense="drelu", arch="dense", n_members=1, epochs=20, monitor="loss")) != config_key(
        cfg
    )


def test_train_cli_reports_early_stopping(real_data, capsys):
    assert (
        train_cli.main(
            [
                "--defense",
                "naive",
                "--data-dir",
                str(real_data),
                "--subset",
                "64",
                "--val-subset",
                "50",
                "--epochs",
                "40",
                "--lr",
                "1e-9",
                "--early-stop-patience",
                "1",
                "--test-subset",
                "50",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "early stopping after 1 epochs" in out and "stopped early after epoch" in out
    assert "epoch  40/40" not in out


def test_gal_noisy_copy_is_a_truncated_normal_of_the_papers_shape():
    torch.manual_seed(0)
    sigma = 0.1
    x, y = torch.full((64, 1, 28, 28), 0.5), torch.arange(64) % 10
    xx, yy = with_noisy_copy(x, y, sigma)
    assert xx.shape == (128, 1, 28, 28) and torch.equal(xx[:64], x) and torch.equal(yy, torch.cat([y, y]))
    delta = xx[64:] - x
    assert float(delta.abs().max()) <= 2 * sigma + 1e-6
    # The standard deviation of N(0, σ²) truncated at ±2σ, from the normal pdf/cdf: σ·sqrt(1 − 2·2φ(2)/Z).
    phi2, z = math.exp(-2) / math.sqrt(2 * math.pi), math.erf(2 / math.sqrt(2))
    assert float(delta.std()) == pytest.approx(sigma * math.sqrt(1 - 4 * phi2 / z), rel=0.02)


def test_gal_with_noise_is_gal_on_the_batch_and_its_noisy_copy():
    torch.manual_seed(0)
    ens = models.build_ensemble("lenet5", 3, 10, 1, activation="leaky_relu")
    x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
    torch.manual_seed(5)
    total, parts = defenses.build("gal", noise_std=0.2).loss(ens, x, y)
    torch.manual_seed(5)
    xx, yy = with_noisy_copy(x, y, 0.2)
    ref_total, ref_parts = defenses.build("gal").loss(ens, xx, yy)
    assert float(total.detach()) == pytest.approx(float(ref_total.detach()), rel=1e-6)
    assert parts == pytest.approx(ref_parts, rel=1e-6)
    plain, _ = defenses.build("gal").loss(ens, x, y)
    assert float(plain.detach()) != pytest.approx(float(total.detach()), rel=1e-4)


def test_the_surrogate_copies_the_training_routine_of_the_model_it_attacks():
    routine = TrainConfig(
        defense="smd", epochs=7, lr=0.01, batch_size=64, schedule="plateau", early_stop_patience=4, subset=500, seed=3
    ).to_dict()
    cfg = surrogate_config({"arch": "lenet5", "n_members": 3}, "mnist", None, 1000, routine=routine)
    assert (
        cfg.defense,
        cfg.seed,
        cfg.epochs,
        cfg.lr,
        cfg.batch_size,
        cfg.schedule,
        cfg.early_stop_patience,
        cfg.subset,
    ) == ("naive", 1000, 7, 0.01, 64, "plateau", 4, 500)
    assert surrogate_config({"arch": "lenet5", "n_members": 3}, "mnist", 2, 1000, routine=routine).epochs == 2
    assert surrogate_config({"arch": "lenet5", "n_members": 3}, "mnist", None, 1000).epochs == 50  # no record


def test_a_saved_ensemble_records_its_training_config(real_data, tmp_path):
    cfg = TrainConfig(defense="naive", data_dir=str(real_data), subset=64, val_subset=50, epochs=1, lr=0.002)
    trainer = Trainer(cfg)
    models.save_ensemble(trainer.ensemble, tmp_path / "m.pt")
    loaded = models.load_ensemble(tmp_path / "m.pt")
    assert loaded.train_config == cfg.to_dict()


def test_black_box_evaluation_trains_the_surrogate_with_the_models_routine(real_data, tmp_path, monkeypatch):
    monkeypatch.setenv("TUNE_DIV_CACHE", str(tmp_path))
    trainer = Trainer(
        TrainConfig(defense="naive", data_dir=str(real_data), subset=300, val_subset=50, epochs=2, n_members=2)
    )
    trainer.fit()
    spec = EvalSpec(
        dataset="mnist",
        attacks=["fgsm"],
        eps=[0.1],
        n=50,
        black_box=True,
        white_box=False,
        sanity=False,
        data_dir=str(real_data),
    )
    sur = evaluate(trainer.ensemble.eval(), spec)["threat_models"]["black_box"]["surrogate"]["config"]
    assert (sur["epochs"], sur["subset"], sur["defense"], sur["n_members"]) == (2, 300, "naive", 2)
