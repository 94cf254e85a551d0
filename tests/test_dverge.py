"""DVERGE as in its reference code: every pre-activation layer, the momentum distillation step, members
in train mode while distilling; its loss; SMD+ on top of it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tune_div import defenses, models
from tune_div.defenses.dverge import feature_distill


def lenet_member():
    torch.manual_seed(0)
    return models.build_ensemble("lenet5", 1, 10, 1).members[0].eval()


def test_lenet5_has_the_five_layers_of_the_reference_counting_and_each_is_pre_activation():
    member = lenet_member()
    x = torch.rand(4, 1, 28, 28)
    assert member.count_layers(x) == 5  # conv1, conv2, fc120, fc84 (before their ReLU), logits
    conv1, conv2 = member.stages[0][0], member.stages[1][0]
    fc120, fc84 = member.stages[2][1], member.stages[3][0]
    # Computed here from the weights, layer by layer, independently of the hooks.
    h1 = F.conv2d(x, conv1.weight, conv1.bias, padding=2)
    h2 = F.conv2d(F.max_pool2d(F.relu(h1), 2), conv2.weight, conv2.bias)
    h3 = F.linear(F.max_pool2d(F.relu(h2), 2).flatten(1), fc120.weight, fc120.bias)
    h4 = F.linear(F.relu(h3), fc84.weight, fc84.bias)
    for layer, expected in enumerate([h1, h2, h3, h4, member(x)], start=1):
        torch.testing.assert_close(member.layer_features(x, layer), expected)
    assert (member.layer_features(x, 1) < 0).any()  # before the ReLU, unlike the stages
    with pytest.raises(ValueError, match="1..5"):
        member.layer_features(x, 6)


def test_resnet20_has_twenty_layers_like_the_reference_and_taps_the_residual_sum_before_its_relu():
    torch.manual_seed(0)
    member = models.build_ensemble("resnet20", 1, 10, 3).members[0].eval()
    x = torch.rand(2, 3, 32, 32)
    assert member.count_layers(x) == 20  # stem + 9 blocks x 2 + logits: the reference's depth
    stem, block = member.stages[0], member.stages[1][0]
    h = stem[1](stem[0](member.normalize(x)))
    torch.testing.assert_close(member.layer_features(x, 1), h)
    a = torch.relu(h)
    inner = block.bn1(block.conv1(a))
    torch.testing.assert_close(member.layer_features(x, 2), inner)
    torch.testing.assert_close(member.layer_features(x, 3), block.bn2(block.conv2(torch.relu(inner))) + a)


def test_distillation_moves_features_closer_and_stays_in_the_ball_at_every_layer_of_both_layer_sets():
    member = lenet_member()
    source, target = torch.rand(6, 1, 28, 28), torch.rand(6, 1, 28, 28)
    for layer_set, n in (("all", member.count_layers(source)), ("stages", member.num_stages)):
        for layer in range(1, n + 1):
            feats = (
                (lambda z, layer=layer: member.layer_features(z, layer))
                if layer_set == "all"
                else (lambda z, layer=layer: member.intermediate(z, layer - 1))
            )
            t = feats(target).detach()
            before = ((feats(source) - t) ** 2).sum()
            z = feature_distill(member, source, target, layer, eps=0.07, step=0.007, steps=10, layer_set=layer_set)
            assert ((feats(z) - t) ** 2).sum() < before, (layer_set, layer)
            assert float((z - source).abs().max()) <= 0.07 + 1e-6 and z.min() >= 0 and z.max() <= 1


def test_the_distillation_step_is_the_reference_momentum_sign_step():
    member = lenet_member()
    torch.manual_seed(1)
    source, target = torch.rand(3, 1, 28, 28), torch.rand(3, 1, 28, 28)
    eps, alpha, layer = 0.07, 0.02, 2
    t = member.layer_features(target, layer).detach()
    # Two steps written out from the reference's formula: g <- mu*g + grad/||grad||_1 per sample.
    z, g = source.clone(), torch.zeros_like(source)
    for _ in range(2):
        z.requires_grad_(True)
        (grad,) = torch.autograd.grad(((member.layer_features(z, layer) - t) ** 2).sum(), z)
        g = g + grad / grad.abs().sum(dim=(1, 2, 3), keepdim=True)
        z = torch.min(torch.max(z.detach() - alpha * g.sign(), source - eps), source + eps).clamp(0, 1)
    torch.testing.assert_close(feature_distill(member, source, target, layer, eps, alpha, 2), z)
    plain = feature_distill(member, source, target, layer, eps, alpha, 2, momentum=None)
    assert not torch.equal(plain, z)  # the momentum matters after the first step


@pytest.mark.parametrize("execution", ["looped", "fused"])
def test_the_ensemble_distils_every_member_at_once_as_each_member_alone(execution):
    """The M distillations run as one batch (``feature_distill(ensemble, ...)``): each member's copy moves
    only by its own distance, so every batch equals that member's distillation on its own (float64)."""
    torch.manual_seed(0)
    ens = models.build_ensemble("lenet5", 3, 10, 1).double().eval().set_execution(execution)
    source, target = torch.rand(4, 1, 28, 28, dtype=torch.float64), torch.rand(4, 1, 28, 28, dtype=torch.float64)
    for layer in (1, 3, 5):
        together = feature_distill(ens, source, target, layer, 0.07, 0.007, 5)
        assert together.shape == (3, 4, 1, 28, 28)
        for i, member in enumerate(ens.members):
            torch.testing.assert_close(together[i], feature_distill(member, source, target, layer, 0.07, 0.007, 5))


def test_members_stay_in_train_mode_while_distilling_unless_told_otherwise():
    torch.manual_seed(0)
    ens = models.build_ensemble("resnet20", 2, 10, 3).train()
    x = torch.rand(8, 3, 32, 32)
    bn = ens.members[0].stages[0][1]
    for train_mode, moves in ((True, True), (False, False)):
        d = defenses.build("dverge", distill_steps=2, distill_train_mode=train_mode)
        d.prepare(ens)
        torch.manual_seed(0)
        d.start_epoch(1, ens)
        before = bn.running_mean.clone()
        d.distilled(ens, x)
        assert (not torch.equal(bn.running_mean, before)) == moves
        assert ens.training  # the caller's mode is restored


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


@pytest.mark.parametrize("layer_set,n_layers", [("all", 5), ("stages", 4)])
def test_each_epoch_draws_a_seeded_layer_uniformly_from_every_layer(layer_set, n_layers):
    ens = models.build_ensemble("lenet5", 2, 10, 1)
    d = defenses.build("dverge", distill_layers=layer_set)
    d.prepare(ens)
    assert d.n_layers == n_layers
    layers = []
    for epoch in range(60):
        torch.manual_seed(epoch)
        d.start_epoch(epoch, ens)
        layers.append(d.layer)
    assert set(layers) == set(range(1, n_layers + 1))
    torch.manual_seed(3)
    d.start_epoch(3, ens)
    assert d.layer == layers[3]
