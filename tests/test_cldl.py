"""CLDL against a reference written independently: per sample, per member, per pair, with NumPy."""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np
import pytest
import torch

from tune_div import defenses, models


def np_kl(p, q):
    return float(np.sum(p * np.log(p / q)))


def np_jsd(a, b):
    m = (a + b) / 2
    return 0.5 * (np_kl(a, m) + np_kl(b, m))


@pytest.mark.parametrize("gamma,alpha,beta", [(3.0, 4.0, 4.0), (4.0, 2.0, 4.0), (2.0, 0.5, 0.0)])
def test_cldl_matches_a_per_sample_reference(gamma, alpha, beta):
    torch.manual_seed(0)
    C = 5
    ens = models.build_ensemble("dense", 3, C, 1, image_size=4).double()
    cldl = defenses.build("cldl", gamma=gamma, alpha=alpha, beta=beta, embed_dim=6)
    cldl.prepare(ens)
    cldl.double()
    with torch.no_grad():  # spread the LCM's output so the JSD term is far from zero
        cldl.lcm.similarity.weight.mul_(30)
    x = torch.rand(4, 1, 4, 4, dtype=torch.float64)
    y = torch.tensor([0, 2, 4, 2])
    total, parts = cldl.loss(ens, x, y)

    lcm = cldl.lcm
    vec = torch.tanh(lcm.embedding.weight @ lcm.label_encoder[0].weight.T + lcm.label_encoder[0].bias)  # [C, F]
    s_all, kl_all, grads = [], [], []
    for member in ens.members:
        s_m, kl_m, g_m = [], [], []
        for b in range(len(y)):
            xb = x[b : b + 1].clone().requires_grad_(True)
            v = member.features(xb)[0]
            p = torch.softmax(member.head(v), -1)
            c = torch.softmax((v @ vec.T) @ lcm.similarity.weight.T + lcm.similarity.bias, -1)
            s = torch.softmax(gamma * torch.eye(C, dtype=torch.float64)[y[b]] + c, -1)
            kl = (s * torch.log(s / p)).sum()
            (g,) = torch.autograd.grad(kl, xb)
            s_m.append(s.detach().numpy())
            kl_m.append(float(kl.detach()))
            g_m.append(g.flatten().numpy())
        s_all.append(s_m)
        kl_all.append(kl_m)
        grads.append(g_m)
    pairs = list(combinations(range(3), 2))
    ce = np.mean(kl_all)
    ld = np.mean(
        [
            math.log(
                np.mean(
                    [math.exp(np_jsd(np.delete(s_all[i][b], y[b]), np.delete(s_all[j][b], y[b]))) for i, j in pairs]
                )
            )
            for b in range(len(y))
        ]
    )
    gd = np.mean(
        [
            np.mean(
                [
                    abs(grads[i][b] @ grads[j][b]) / (np.linalg.norm(grads[i][b]) * np.linalg.norm(grads[j][b]))
                    for i, j in pairs
                ]
            )
            for b in range(len(y))
        ]
    )
    assert parts["ce"] == pytest.approx(ce, rel=1e-9)
    assert parts["ld"] == pytest.approx(ld, rel=1e-6) and ld > 1e-4
    assert parts["gd"] == pytest.approx(gd, rel=1e-9)
    assert float(total.detach()) == pytest.approx(ce - alpha * ld + beta * gd, rel=1e-9)


def test_soft_label_puts_its_maximum_on_the_true_class():
    from tune_div.defenses.cldl import soft_labels

    c = torch.softmax(torch.randn(6, 10), -1)
    y = torch.randint(0, 10, (6,))
    s = soft_labels(c, y, gamma=3.0)
    assert torch.equal(s.argmax(-1), y) and torch.allclose(s.sum(-1), torch.ones(6))


def test_label_confusion_model_trains_jointly():
    torch.manual_seed(0)
    ens = models.build_ensemble("dense", 2, 10, 1)
    cldl = defenses.build("cldl")
    cldl.prepare(ens)
    before = [p.detach().clone() for p in cldl.parameters()]
    opt = torch.optim.Adam(list(ens.parameters()) + list(cldl.parameters()), lr=1e-2)
    total, _ = cldl.loss(ens, torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,)))
    opt.zero_grad()
    total.backward()
    opt.step()
    assert len(before) == 5 and all(not torch.equal(a, b) for a, b in zip(before, cldl.parameters()))


def test_paper_settings_per_dataset():
    assert defenses.defaults("cldl", "mnist") == {"gamma": 3.0, "alpha": 4.0, "beta": 4.0, "embed_dim": 64}
    assert defenses.defaults("cldl", "fashion_mnist")["alpha"] == 2.0
    assert defenses.defaults("cldl", "cifar10")["gamma"] == 4.0
