"""Architectures, the Ensemble contract and its one-file save/load."""

from __future__ import annotations

import math

import pytest
import torch

from tune_div import models

SHAPES = [(1, 28), (3, 32)]


@pytest.mark.parametrize("arch", models.names())
@pytest.mark.parametrize("channels,size", SHAPES)
def test_member_shapes_features_and_stages(arch, channels, size):
    ens = models.build_ensemble(arch, 2, 10, channels)
    x = torch.rand(3, channels, size, size)
    member = ens.members[0]
    assert member(x).shape == (3, 10)
    feats = member.features(x)
    assert feats.shape == (3, member.feature_dim)
    assert torch.allclose(member.head(feats), member(x))
    assert torch.equal(member.intermediate(x, member.num_stages - 1), feats)
    assert member.num_stages >= 2
    assert ens.member_logits(x).shape == (2, 3, 10) and ens(x).shape == (3, 10)


def test_lenet5_is_the_classic_layout():
    m = models.build_ensemble("lenet5", 1, 10, 1).members[0]
    convs = [mod for mod in m.modules() if isinstance(mod, torch.nn.Conv2d)]
    linears = [mod for mod in m.modules() if isinstance(mod, torch.nn.Linear)]
    assert [(c.out_channels, c.kernel_size) for c in convs] == [(6, (5, 5)), (16, (5, 5))]
    assert [(mod.in_features, mod.out_features) for mod in linears] == [(400, 120), (120, 84), (84, 10)]


@pytest.mark.parametrize("arch,blocks", [("resnet20", 9), ("resnet26", 12)])
def test_cifar_resnets_have_6n_plus_2_layers(arch, blocks):
    m = models.build_ensemble(arch, 1, 10, 3).members[0]
    convs = [mod for mod in m.modules() if isinstance(mod, torch.nn.Conv2d) and mod.kernel_size == (3, 3)]
    assert len(convs) == 2 * blocks + 1  # + the fc head = 6n + 2 weighted layers
    assert sorted({c.out_channels for c in convs}) == [16, 32, 64]


def test_ensemble_forward_is_log_of_mean_softmax():
    ens = models.build_ensemble("dense", 3, 10, 1)
    x = torch.rand(4, 1, 28, 28)
    probs = torch.stack([torch.softmax(m(x), -1) for m in ens.members]).mean(0)
    assert torch.allclose(ens(x), probs.log(), atol=1e-6)
    assert torch.allclose(ens(x).exp().sum(-1), torch.ones(4), atol=1e-5)


def test_normalisation_lives_inside_the_member():
    ens = models.build_ensemble("dense", 1, 10, 1, mean=[0.5], std=[0.25])
    x = torch.rand(2, 1, 28, 28)
    assert torch.allclose(ens.members[0].normalize(x), (x - 0.5) / 0.25)


def test_leaky_relu_option_uses_slope_0_1():
    m = models.build_ensemble("conv3", 1, 10, 1, activation="leaky_relu").members[0]
    acts = [mod for mod in m.modules() if isinstance(mod, torch.nn.LeakyReLU)]
    assert acts and all(math.isclose(a.negative_slope, 0.1) for a in acts)
    assert not any(isinstance(mod, torch.nn.ReLU) for mod in m.modules())


def test_save_load_round_trip(tmp_path):
    ens = models.build_ensemble("lenet5", 3, 10, 1, activation="leaky_relu", mean=[0.1307], std=[0.3081])
    ens.eval()
    path = tmp_path / "ens.pt"
    models.save_ensemble(ens, path)
    blob = torch.load(path, weights_only=True)  # one file, loadable without pickle of code
    assert blob["config"]["arch"] == "lenet5"
    loaded = models.load_ensemble(path).eval()
    x = torch.rand(5, 1, 28, 28)
    assert torch.equal(loaded(x), ens(x))
    assert loaded.config == ens.config and loaded.n_members == 3


def test_load_rejects_foreign_files(tmp_path):
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a tune_div ensemble"):
        models.load_ensemble(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError):
        models.load_ensemble(tmp_path / "missing.pt")


def test_registry_errors_and_wildcards():
    assert models.names("resnet*") == ["resnet20", "resnet26"]
    with pytest.raises(ValueError, match="lenet5"):
        models.build_ensemble("vgg", 3, 10, 1)
    with pytest.raises(ValueError, match="unknown model option"):
        models.build_ensemble("lenet5", 3, 10, 1, dropout=0.5)
    with pytest.raises(ValueError, match="relu"):
        models.build_ensemble("lenet5", 3, 10, 1, activation="gelu")
