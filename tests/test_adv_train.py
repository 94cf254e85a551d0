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


def test_ensemble_adversarial_training_crafts_on_the_static_source_model(real_data, tmp_path):
    """Tramèr et al.'s ensemble adversarial training: the examples are FGSM of the saved source model,
    not of the ensemble being trained, and the source never changes."""
    from tune_div import attacks, models

    source = Trainer(TrainConfig(defense="naive", data_dir=str(real_data), subset=64, val_subset=50, seed=5))
    path = tmp_path / "source.pt"
    models.save_ensemble(source.ensemble, path)
    spec = {"attack": "fgsm", "eps": 0.2, "ratio": 0.5, "source": str(path)}
    trainer = Trainer(TrainConfig(defense="naive", data_dir=str(real_data), subset=64, val_subset=50, adv_train=spec))
    x, y = next(iter(trainer.train_loader))
    mixed = trainer.mix_adversarial(x, y)
    n = len(x) // 2
    on_source = attacks.run("fgsm", models.load_ensemble(path).eval(), x[:n], y[:n], 0.2)
    on_self = attacks.run("fgsm", trainer.ensemble, x[:n], y[:n], 0.2)
    assert torch.allclose(mixed[:n], on_source, atol=1e-6) and not torch.allclose(mixed[:n], on_self, atol=1e-3)
    before = [p.detach().clone() for p in trainer.adv_source.parameters()]
    trainer.train_epoch()
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.adv_source.parameters()))
    assert trainer.cfg.to_dict()["adv_train"]["source"] == str(path)


def test_random_eps_is_the_half_normal_truncated_to_eps():
    from scipy.stats import truncnorm

    from tune_div.train.trainer import truncated_eps

    eps = 0.3
    draws = [truncated_eps(eps, seed) for seed in range(4000)]
    assert all(0 <= d <= eps for d in draws) and truncated_eps(eps, 7) == truncated_eps(eps, 7)
    sigma = eps / 2
    law = truncnorm(0, eps / sigma, scale=sigma)  # N(0, σ²) on [0, ε]: the half-normal truncated at ε
    mean = sum(draws) / len(draws)
    assert mean == pytest.approx(law.mean(), abs=4 * law.std() / len(draws) ** 0.5)
    assert sum(d <= law.median() for d in draws) / len(draws) == pytest.approx(0.5, abs=0.03)


def test_the_optional_keys_stay_out_of_a_config_that_does_not_set_them():
    plain = validate_adv_train({"attack": "pgd"}, 0.1)
    assert "source" not in plain and "random_eps" not in plain
    assert validate_adv_train({"attack": "fgsm", "random_eps": True}, 0.1)["random_eps"] is True
    with pytest.raises(UserError, match="random_eps"):
        validate_adv_train({"attack": "fgsm", "random_eps": "yes"}, 0.1)


def test_retraining_trains_naturally_then_the_asked_epochs_on_adversarial_examples(real_data, tmp_path):
    """The D-ReLU paper's AT: natural training to its end, then ``retrain_epochs`` on adversarial examples
    with the learning rate natural training left (a multistep milestone inside the retraining never fires)."""
    spec = {"attack": "fgsm", "eps": 0.1, "ratio": 1.0, "retrain_epochs": 2}
    cfg = dict(defense="naive", data_dir=str(real_data), subset=64, val_subset=50, batch_size=32, epochs=2)
    cfg.update(schedule="multistep", milestones=[3], lr_gamma=0.1, adv_train=spec)
    trainer = Trainer(TrainConfig(**cfg))
    crafted: list[int] = []
    real_mix = trainer.mix_adversarial

    def counting(x, y, seed=0):
        crafted.append(trainer.epoch + 1)
        return real_mix(x, y, seed)

    trainer.mix_adversarial = counting  # type: ignore[method-assign]
    assert not trainer.adversarial_now
    phases: list[tuple[str, int, int]] = []
    history = trainer.fit(callback=lambda m: phases.append(trainer.phase()), checkpoint_path=tmp_path / "ck.pt")
    assert phases == [("training", 1, 2), ("training", 2, 2), ("retraining", 1, 2), ("retraining", 2, 2)]
    assert len(history) == 4 and sorted(set(crafted)) == [3, 4] and crafted.count(3) == 2  # 64 images / 32
    assert [h.get("retraining", 0.0) for h in history] == [0.0, 0.0, 1.0, 1.0]
    assert [h["lr"] for h in history] == [1e-3, 1e-3, 1e-3, 1e-3]
    assert trainer.done and not trainer.stopped_early

    # a checkpoint from inside the retraining resumes there, with one retraining epoch left
    resumed = Trainer(TrainConfig(**cfg))
    state = trainer.state_dict()
    state["epoch"], state["history"] = 3, state["history"][:3]
    resumed.load_state_dict(state)
    assert resumed.retraining and resumed.adversarial_now and not resumed.done
    resumed.train_epoch()
    assert resumed.done and resumed.history[-1]["retraining"] == 1.0


def test_early_stopping_ends_the_natural_phase_and_never_the_retraining():
    trainer = Trainer.__new__(Trainer)
    trainer.cfg = TrainConfig(epochs=50, early_stop_patience=2, adv_train={"attack": "fgsm", "retrain_epochs": 3})
    natural = [{"val_loss": v} for v in (1.0, 0.5, 0.6, 0.7)]  # best at epoch 2, two epochs without better
    trainer.history, trainer.epoch = list(natural), 4
    assert trainer.stopped_early and trainer.retraining and trainer.adversarial_now and not trainer.done
    worse = {"val_loss": 9.0, "retraining": 1.0}
    trainer.history, trainer.epoch = natural + [worse, worse], 6
    assert trainer.stopped_early and not trainer.done  # the retraining's own losses stop nothing
    trainer.history, trainer.epoch = natural + [worse] * 3, 7
    assert trainer.done
    trainer.history, trainer.epoch = natural[:3], 3
    assert not trainer.stopped_early and not trainer.retraining and not trainer.adversarial_now


def test_retrain_epochs_is_checked_and_kept_only_when_set():
    assert "retrain_epochs" not in validate_adv_train({"attack": "pgd"}, 0.1)
    assert validate_adv_train({"attack": "pgd", "retrain_epochs": 10}, 0.1)["retrain_epochs"] == 10
    with pytest.raises(UserError, match="retrain_epochs"):
        validate_adv_train({"attack": "pgd", "retrain_epochs": 0}, 0.1)
