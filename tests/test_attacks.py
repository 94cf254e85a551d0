"""Every registered attack lowers the accuracy of a trained model and respects its threat model."""

from __future__ import annotations

import pytest
import torch

from tune_div import attacks
from tune_div.evaluation import accuracy

# Cheap settings per attack so the whole registry runs in seconds on CPU.
FAST = {"square": {"n_queries": 300},
        "autoattack": {"preset": "fast", "square_queries": 100}}
EPS = {"cw_l2": 3.0}


@pytest.mark.parametrize("name", attacks.names())
def test_attack_lowers_accuracy_and_stays_in_the_ball(name, trained_ensemble, eval_points):
    n = 16 if name == "cw_l2" else 64  # advertorch's CW loops over samples in Python
    x, y = eval_points[0][:n], eval_points[1][:n]
    eps = EPS.get(name, 0.25)
    torch.manual_seed(0)
    x_adv = attacks.run(name, trained_ensemble, x, y, eps, **FAST.get(name, {}))
    clean, robust = accuracy(trained_ensemble, x, y), accuracy(trained_ensemble, x_adv, y)
    assert robust < clean - 0.2, (clean, robust)
    assert x_adv.shape == x.shape and float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    delta = (x_adv - x).flatten(1)
    if attacks.ATTACKS.get(name).norm == "linf":
        assert float(delta.abs().max()) <= eps + 1e-6
    else:
        assert float(delta.norm(dim=1).max()) <= eps + 1e-4
    assert not trained_ensemble.training  # the attack restored the caller's mode


def test_attack_restores_training_mode(trained_ensemble, eval_points):
    trained_ensemble.train()
    try:
        attacks.run("pgd", trained_ensemble, eval_points[0][:8], eval_points[1][:8], 0.1)
        assert trained_ensemble.training
    finally:
        trained_ensemble.eval()


def test_rfgsm_is_a_random_step_then_fgsm_of_the_remaining_budget(trained_ensemble, eval_points):
    x, y = eval_points[0][:16], eval_points[1][:16]
    torch.manual_seed(1)
    x_adv = attacks.run("rfgsm", trained_ensemble, x, y, 0.2, alpha=0.05)
    # Interior pixels moved by exactly α ± (ε − α): 0.2 or 0.1 (others were clipped at 0 or 1).
    moved = (x_adv - x).abs()
    inside = (x > 0.25) & (x < 0.75)
    values = set(torch.round(moved[inside] * 1000).long().tolist())
    assert values <= {100, 200} and values


def test_options_are_validated_and_defaults_documented():
    with pytest.raises(ValueError, match="valid: rand_init, step, steps"):
        attacks.get("pgd").options(0.1, iterations=5)
    with pytest.raises(ValueError, match="unknown attack"):
        attacks.get("deepfool")
    assert attacks.get("pgd").options(0.1) == {"steps": 10, "step": None, "rand_init": True}
    assert attacks.get("autoattack").options(0.1)["apgd_steps"] == 100  # AutoAttack's standard preset
    assert attacks.get("mim").options(0.1)["decay"] == 1.0
