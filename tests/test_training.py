"""The training loop on real MNIST subsets: determinism, checkpoint resume, divergence, the train CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch
import yaml
from cifar_files import point_torchvision_md5s_at, write_cifar10

from tune_div import models
from tune_div.cli import train
from tune_div.data import readers
from tune_div.errors import DivergenceError, UserError
from tune_div.train import TrainConfig, Trainer

pytestmark = pytest.mark.usefixtures("real_data")


def small_cfg(real_data, **kw) -> TrainConfig:
    base = dict(defense="smd", data_dir=str(real_data), subset=256, val_subset=200, epochs=2, batch_size=64)
    base.update(kw)
    return TrainConfig(**base)


def _strip_times(history):
    return [{k: v for k, v in h.items() if k != "epoch_time_s"} for h in history]


def test_same_seed_same_metrics(real_data):
    a = Trainer(small_cfg(real_data)).fit()
    b = Trainer(small_cfg(real_data)).fit()
    assert _strip_times(a) == _strip_times(b)
    c = Trainer(small_cfg(real_data, seed=1)).fit()
    assert _strip_times(a) != _strip_times(c)


def test_resume_from_checkpoint_equals_uninterrupted_run(real_data, tmp_path):
    full = Trainer(small_cfg(real_data, epochs=3))
    full_history = full.fit()
    ckpt = tmp_path / "ckpt.pt"
    Trainer(small_cfg(real_data, epochs=1)).fit(checkpoint_path=ckpt)  # "interrupted" after epoch 1
    resumed = Trainer(small_cfg(real_data, epochs=3))
    resumed_history = resumed.fit(checkpoint_path=ckpt)
    assert _strip_times(resumed_history) == _strip_times(full_history)
    for p, q in zip(full.ensemble.parameters(), resumed.ensemble.parameters()):
        assert torch.equal(p, q)


def test_fused_and_looped_training_give_the_same_metrics(real_data):
    """Two epochs of SMD on real MNIST: the two execution paths agree to float tolerance."""
    fused = Trainer(small_cfg(real_data, execution="fused"))
    looped = Trainer(small_cfg(real_data, execution="looped"))
    assert fused.ensemble.uses_fused() and not looped.ensemble.uses_fused()
    for f, lp in zip(fused.fit(), looped.fit()):
        for key in ("train_loss", "part_ce", "part_smd", "val_loss"):
            assert f[key] == pytest.approx(lp[key], rel=1e-3), key
        assert abs(f["val_clean_acc"] - lp["val_clean_acc"]) <= 2 / 200
    for p, q in zip(fused.ensemble.parameters(), looped.ensemble.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-3, atol=1e-4)


def test_callback_reports_parts_and_member_accuracies(real_data):
    seen = []
    Trainer(small_cfg(real_data, defense="adp", epochs=1)).fit(callback=seen.append)
    (m,) = seen
    assert {"part_ce", "part_reg", "part_entropy", "part_log_det", "val_clean_acc", "epoch_time_s"} <= set(m)
    assert {f"val_member_acc_{i}" for i in range(3)} <= set(m)
    assert 0.0 <= m["val_clean_acc"] <= 1.0 and m["epoch_time_s"] > 0


def test_nan_loss_stops_training_with_its_reason(real_data):
    trainer = Trainer(small_cfg(real_data, epochs=1))
    trainer.defense.loss = lambda ens, x, y: (torch.tensor(float("nan")), {"ce": 1.0, "reg": float("nan")})
    with pytest.raises(DivergenceError, match="became nan at epoch 1, step 0"):
        trainer.fit()


def test_a_checkpoint_is_resumed_only_into_the_config_that_wrote_it(real_data, tmp_path):
    ckpt = tmp_path / "ckpt.pt"
    Trainer(small_cfg(real_data, epochs=1, subset=64)).fit(checkpoint_path=ckpt)
    with pytest.raises(UserError, match=r"another config \(hparams: \{'lam': 1.0\} there, \{'lam': 2.0\} here\)"):
        Trainer(small_cfg(real_data, epochs=2, subset=64, hparams={"lam": 2.0})).fit(checkpoint_path=ckpt)
    longer = Trainer(small_cfg(real_data, epochs=2, subset=64, hparams={"lam": 1.0}))
    assert len(longer.fit(checkpoint_path=ckpt)) == 2  # more epochs of the same config is a resume
    ckpt.write_bytes(ckpt.read_bytes()[:1000])  # a copy cut short
    with pytest.raises(UserError, match="damaged or not a tune_div checkpoint"):
        Trainer(small_cfg(real_data, epochs=3, subset=64)).fit(checkpoint_path=ckpt)


def test_cifar_shaped_training_with_augmentation_and_lr_milestones(tmp_path, monkeypatch):
    """The CIFAR path end to end on generated files in the real format: 3-channel 32x32 images, the
    dataset's defaults (resnet20, crop + flip), an LR milestone."""
    from tune_div.compat import import_torchvision

    rows, _ = write_cifar10(tmp_path / "cifar-10-batches-py", per_batch=8)
    point_torchvision_md5s_at(monkeypatch, import_torchvision().datasets.CIFAR10, tmp_path / "cifar-10-batches-py")
    monkeypatch.setattr(readers, "MEMO", {})
    cfg = TrainConfig(
        defense="gal",
        dataset="cifar10",
        data_dir=str(tmp_path),
        val_size=8,
        epochs=2,
        milestones=[1],
        batch_size=16,
        n_members=2,
    )
    trainer = Trainer(cfg)
    assert cfg.arch == "resnet20" and trainer.ensemble.config["in_channels"] == 3
    history = trainer.fit()
    assert [h["lr"] for h in history] == pytest.approx([1e-4, 1e-4])  # ×0.1 after epoch 1
    assert all(math.isfinite(h["train_loss"]) for h in history)
    stored = {bytes(r) for r in rows.reshape(-1, 3, 32, 32)}  # as written, channel-major
    trainer.train_loader.set_epoch(5)
    batch = next(iter(trainer.train_loader))[0].contiguous()
    as_uint8 = (batch * 255).round().to(torch.uint8)
    # Every training image went through a random crop (zero padding) or flip: not a stored image.
    assert sum(bytes(img.numpy()) in stored for img in as_uint8) < len(batch)
    plain = Trainer(TrainConfig(**{**cfg.to_dict(), "augment": False}))
    plain.train_loader.set_epoch(5)
    plain_batch = (next(iter(plain.train_loader))[0].contiguous() * 255).round().to(torch.uint8)
    assert all(bytes(img.numpy()) in stored for img in plain_batch)


def test_lr_milestones_decay_the_learning_rate(real_data):
    history = Trainer(small_cfg(real_data, defense="naive", epochs=3, milestones=[1, 2], subset=64)).fit()
    assert [h["lr"] for h in history] == pytest.approx([1e-4, 1e-5, 1e-5])


# --- CLI ---------------------------------------------------------------------------------------


def test_train_cli_writes_model_and_metrics(real_data, tmp_path, capsys):
    out, model = tmp_path / "r.json", tmp_path / "m.pt"
    rc = train.main(
        [
            "--defense",
            "gal",
            "--data-dir",
            str(real_data),
            "--epochs",
            "1",
            "--subset",
            "256",
            "--val-subset",
            "200",
            "--test-subset",
            "200",
            "--hparam",
            "lam=0.25",
            "--save-model",
            str(model),
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "epoch   1/1" in printed and "gal=" in printed and "test acc" in printed
    result = json.loads(out.read_text())
    assert result["config"]["hparams"] == {"lam": 0.25}
    assert 0.0 <= result["metrics"]["test_clean_acc"] <= 1.0
    ens = models.load_ensemble(model)
    assert ens.config["activation"] == "leaky_relu"  # GAL's members


def test_train_cli_from_exported_config(real_data, tmp_path):
    cfg = {
        "defense": "smd",
        "dataset": "mnist",
        "arch": "lenet5",
        "n_members": 2,
        "hparams": {"lam": 0.7},
        "train": {
            "epochs": 1,
            "batch_size": 64,
            "lr": 0.001,
            "weight_decay": 0.0001,
            "seed": 4,
            "subset": 128,
            "val_subset": 100,
        },
        "objective": {"attack": "pgd", "eps": 0.1, "steps": 10},
        "metrics": {},
        "source": {},
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "r.json"
    assert (
        train.main(["--config", str(path), "--data-dir", str(real_data), "--test-subset", "100", "--out", str(out)])
        == 0
    )
    got = json.loads(out.read_text())["config"]
    assert (got["defense"], got["n_members"], got["hparams"], got["seed"]) == ("smd", 2, {"lam": 0.7}, 4)


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["--defense", "bogus"], "unknown defense 'bogus'"),
        (["--defense", "smd", "--hparam", "lamda=1"], "unknown hyperparameter"),
        (["--defense", "smd", "--hparam", "lam"], "key=value"),
        (["--defense", "smd", "--epochs", "0"], "epochs=0 is not valid; expected an integer >= 1"),
        (["--defense", "smd", "--epochs", "ten"], "invalid int value"),
        (["--defense", "smd", "--dataset", "svhn"], "unknown dataset"),
        (["--defense", "smd", "--arch", "vgg"], "unknown architecture"),
        (["--defense", "smd", "--execution", "fast"], "invalid choice: 'fast'"),
        (["--defense", "smd", "--data-dir", "/no/such/folder"], "does not exist"),
        (["--defense", "smd", "--out", "/no/such/folder/r.json"], "cannot write"),
        (["--config", "/no/such.yaml"], "does not exist"),
        ([], "--defense is required"),
    ],
)
def test_bad_arguments_are_one_line_errors_with_exit_code_2(argv, needle, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        train.main(argv + (["--subset", "64"] if "--subset" not in argv else []))
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # nothing written


@pytest.mark.slow
def test_naive_one_epoch_on_full_mnist_reaches_97_percent(real_data):
    trainer = Trainer(TrainConfig(defense="naive", data_dir=str(real_data), epochs=1))
    trainer.fit()
    acc, _ = trainer.test_accuracy()
    assert acc >= 0.97 and math.isfinite(acc)
