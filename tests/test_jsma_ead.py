"""JSMA and EAD (advertorch), as ADP's Table 2 uses them: the targets JSMA draws, its L0 budget, and
EAD's L1 budget, each checked against values computed here."""

from __future__ import annotations

import torch

from tune_div import attacks
from tune_div.attacks.jsma import targets
from tune_div.compat import import_advertorch
from tune_div.eval import predict


def test_jsma_targets_are_other_classes_drawn_from_their_seed():
    y = torch.arange(10).repeat(100)
    t = targets(y, 10, seed=3)
    assert bool((t != y).all()) and int(t.min()) >= 0 and int(t.max()) <= 9
    assert torch.equal(t, targets(y, 10, seed=3)) and not torch.equal(t, targets(y, 10, seed=4))
    offsets = (t - y) % 10  # uniform over 1..9: each offset about 1000 / 9 times
    counts = torch.bincount(offsets, minlength=10)
    assert counts[0] == 0 and int(counts[1:].min()) > 70


def test_jsma_changes_at_most_its_share_of_features_and_reaches_its_targets(trained_ensemble, eval_points):
    x, y = eval_points[0][:32], eval_points[1][:32]
    gamma = 0.1
    x_adv = attacks.run("jsma", trained_ensemble, x, y, gamma, seed=1)
    changed = (x_adv != x).flatten(1).sum(dim=1)
    # advertorch takes at most int(784 * gamma / 2) steps of two features each
    assert int(changed.max()) <= 2 * int(x[0].numel() * gamma / 2)
    pred = predict(trained_ensemble, x_adv)
    hit = (pred == targets(y, 10, 1)).float().mean()
    assert float(hit) > 0.2  # far more than the 1 in 9 a wrong prediction would hit by chance
    assert float((pred == y).float().mean()) < float((predict(trained_ensemble, x) == y).float().mean()) - 0.2


def test_ead_is_advertorchs_result_scaled_back_onto_the_l1_ball(trained_ensemble, eval_points):
    x, y = eval_points[0][:8], eval_points[1][:8]
    options = {"max_iterations": 30}
    torch.manual_seed(0)
    ours = attacks.run("ead", trained_ensemble, x, y, 2.0, **options)
    at = import_advertorch()
    trained_ensemble.eval()
    raw = at.ElasticNetL1Attack(
        trained_ensemble, 10, binary_search_steps=1, max_iterations=30, initial_const=5.0, beta=0.01
    ).perturb(x, y)
    l1 = (raw - x).flatten(1).abs().sum(dim=1)
    scale = torch.clamp(2.0 / l1, max=1.0).view(-1, 1, 1, 1)
    assert torch.allclose(ours, (x + (raw - x) * scale).clamp(0, 1), atol=1e-6)
    assert float((ours - x).flatten(1).abs().sum(dim=1).max()) <= 2.0 + 1e-4
