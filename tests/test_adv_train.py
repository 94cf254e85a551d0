"""Adversarial training as an option of any defense."""

from __future__ import annotations

import pytest
import torch

from tune_div.cli import train
from tune_div.errors import UserError
from tune_div.train import TrainConfig, Trainer, validate_adv_train

pytestmark = pytest.mark.usefixtures("real_data")


def test_mixing_replaces_the_ratio_share_by_adversarial_examples(real_data):
    trainer = Trainer(
        TrainConfig(
            defense="naive",
            data_dir=str(real_data),
            subset=64,
            val_subset=50,
            adv_train={"attack": "pgd", "eps": 0.1, "steps": 3, "ratio": 0.25},
        )
    )
    x, y = next(iter(trainer.train_loader))
    mixed = trainer.mix_adversarial(x, y)
    n = round(0.25 * len(x))
    assert torch.equal(mixed[n:], x[n:])
    delta = (mixed[:n] - x[:n]).abs()
    assert float(delta.max()) <= 0.1 + 1e-6 and float(delta.max()) > 0.05
    assert trainer.ensemble.training  # the attack restored the training mode


@pytest.mark.parametrize("defense", ["smd", "drelu"])
def test_adversarial_training_runs_on_top_of_a_defense(real_data, defense, tmp_path):
    out = tmp_path / "r.json"
    assert (
        train.main(
            [
                "--defense",
                defense,
                "--data-dir",
                str(real_data),
                "--subset",
                "128",
                "--val-subset",
                "100",
                "--test-subset",
                "100",
                "--adv-train",
                "fgsm:eps=0.1,ratio=0.5",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert '"adv_train"' in out.read_text()


@pytest.mark.parametrize(
    "spec,needle",
    [
        ({"attack": "cw"}, "one of fgsm, pgd"),
        ({"ratio": 0}, "ratio"),
        ({"eps": -1}, "eps"),
        ({"nb_iter": 3}, "unknown"),
    ],
)
def test_bad_adv_train_specs(spec, needle):
    with pytest.raises(UserError, match=needle):
        validate_adv_train(spec, default_eps=0.1)


def test_adv_train_eps_defaults_to_the_datasets_objective_eps():
    # MNIST-like images are attacked at 0.1 in the papers, CIFAR at 0.01 (data/catalog.py).
    assert TrainConfig(dataset="fashion_mnist", adv_train={"attack": "fgsm"}).adv_train["eps"] == 0.1
    assert TrainConfig(dataset="cifar10", adv_train={"attack": "fgsm"}).adv_train["eps"] == 0.01
    assert TrainConfig(dataset="cifar10", adv_train={"attack": "pgd", "eps": 0.03}).adv_train["eps"] == 0.03
