"""D-ReLU / S-ReLU: capped activation values, gradients, the penalty, the head placement."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tune_div import defenses, models
from tune_div.models import CappedReLU


def test_forward_values():
    layer = CappedReLU(4, init_max=2.0)
    z = torch.tensor([[-1.0, 0.5, 2.5, 7.0]])
    assert torch.equal(layer(z), torch.tensor([[0.0, 0.5, 2.0, 2.0]]))


def test_gradients_flow_to_the_cap_when_capped_and_not_to_z():
    layer = CappedReLU(3, init_max=2.0)
    z = torch.tensor([[-1.0, 1.0, 3.0]], requires_grad=True)
    layer(z).sum().backward()
    assert torch.equal(layer.max_value.grad, torch.tensor([0.0, 0.0, 1.0]))  # only the capped unit
    assert torch.equal(z.grad, torch.tensor([[0.0, 1.0, 0.0]]))  # none where negative or capped


def test_static_cap_is_not_a_parameter():
    layer = CappedReLU(3, init_max=1.0, learnable=False)
    assert list(layer.parameters()) == [] and torch.equal(layer.max_value, torch.ones(3))


@pytest.mark.parametrize("members", [1, 2])
def test_drelu_penalty_is_lambda_times_sum_of_squared_caps(members):
    d = defenses.build("drelu", lam=0.01, init_max=3.0, width=4)
    ens = models.build_ensemble("dense", members, 10, 1, **d.model_options)
    x, y = torch.rand(5, 1, 28, 28), torch.randint(0, 10, (5,))
    total, parts = d.loss(ens, x, y)
    ce = sum(float(F.cross_entropy(m(x), y).detach()) for m in ens.members)
    assert parts["cap_sq_sum"] == pytest.approx(members * 4 * 9.0)
    assert parts["ce"] == pytest.approx(ce, rel=1e-6)
    assert float(total.detach()) == pytest.approx(ce + 0.01 * members * 36.0, rel=1e-6)
    total.backward()
    cap = ens.members[0].head[1].max_value
    assert torch.all(cap.grad >= 2 * 0.01 * 3.0 - 1e-6)  # the penalty's 2λm pushes every cap down


def test_capped_layer_sits_before_the_output_and_survives_save_load(tmp_path):
    d = defenses.build("drelu", width=16)
    ens = models.build_ensemble("lenet5", 2, 10, 1, **d.model_options)
    head = ens.members[0].head
    assert isinstance(head[1], CappedReLU) and head[0].out_features == 16 and head[2].out_features == 10
    with torch.no_grad():
        head[1].max_value.fill_(0.5)
    models.save_ensemble(ens, tmp_path / "d.pt")
    loaded = models.load_ensemble(tmp_path / "d.pt")
    assert torch.equal(loaded.members[0].head[1].max_value, torch.full((16,), 0.5))


def test_srelu_uses_its_fixed_cap():
    d = defenses.build("srelu", max_value=0.25, width=8)
    ens = models.build_ensemble("dense", 1, 10, 1, **d.model_options)
    assert torch.equal(ens.members[0].head[1].max_value, torch.full((8,), 0.25))
    total, parts = d.loss(ens, torch.rand(3, 1, 28, 28), torch.randint(0, 10, (3,)))
    assert parts["reg"] == 0.0
