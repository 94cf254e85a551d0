"""DVERGE feature distillation, its loss, and SMD+ on top of it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tune_div import defenses, models
from tune_div.defenses.dverge import feature_distill


def test_distillation_moves_features_closer_and_stays_in_the_ball():
    torch.manual_seed(0)
    member = models.build_ensemble("lenet5", 1, 10, 1).members[0].eval()
    source, target = torch.rand(6, 1, 28, 28), torch.rand(6, 1, 28, 28)
    for stage in range(member.num_stages):
        t = member.intermediate(target, stage).detach()
        before = ((member.intermediate(source, stage) - t) ** 2).sum()
        z = feature_distill(member, source, target, stage, eps=0.07, step=0.007, steps=10)
        after = ((member.intermediate(z, stage) - t) ** 2).sum()
        assert after < before
        assert float((z - source).abs().max()) <= 0.07 + 1e-6 and z.min() >= 0 and z.max() <= 1


def test_dverge_loss_without_distillation_steps_is_m_minus_1_times_member_ce():
    torch.manual_seed(0)
    ens = models.build_ensemble("dense", 3, 10, 1)
    x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
    total, parts = defenses.build("dverge", distill_steps=0).loss(ens, x, y)
    ce = sum(float(F.cross_entropy(m(x), y).detach()) for m in ens.members)
    assert float(total.detach()) == pytest.approx(2 * ce, rel=1e-6) and parts["reg"] == 0.0


def test_smd_plus_adds_the_smd_term_to_dverge():
    torch.manual_seed(0)
    ens = models.build_ensemble("dense", 3, 10, 1)
    x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
    total, parts = defenses.build("smd_plus", distill_steps=0, lam=0.3).loss(ens, x, y)
    _, smd_parts = defenses.build("smd").loss(ens, x, y)
    assert parts["smd"] == pytest.approx(smd_parts["smd"], rel=1e-6)
    assert float(total.detach()) == pytest.approx(2 * smd_parts["ce"] + 0.3 * smd_parts["smd"], rel=1e-6)


def test_each_epoch_picks_a_seeded_random_stage():
    ens = models.build_ensemble("lenet5", 2, 10, 1)
    d = defenses.build("dverge")
    stages = []
    for epoch in range(12):
        torch.manual_seed(epoch)
        d.start_epoch(epoch, ens)
        stages.append(d.stage)
    assert all(0 <= s < ens.members[0].num_stages for s in stages) and len(set(stages)) > 1
    torch.manual_seed(3)
    d.start_epoch(3, ens)
    assert d.stage == stages[3]
