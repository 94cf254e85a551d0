"""Defense losses against values computed independently (NumPy, by hand) on hand-made members.

Linear members z = W x + b make every input gradient closed-form: the saliency of the true class is
W[y], and the gradient of the cross-entropy is Wᵀ(softmax(z) − onehot(y)).
"""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np
import pytest
import torch
from torch import nn

from tune_div import defenses, models
from tune_div.models import Ensemble

torch.set_default_dtype(torch.float32)
C, D, B = 5, 6, 4


class LinearMember(nn.Module):
    def __init__(self, w: np.ndarray, b: np.ndarray):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(w, dtype=torch.float64))
        self.b = nn.Parameter(torch.tensor(b, dtype=torch.float64))

    def forward(self, x):
        return x.flatten(1) @ self.w.T + self.b


def linear_ensemble(ws, bs) -> Ensemble:
    return Ensemble([LinearMember(w, b) for w, b in zip(ws, bs)], config={})


@pytest.fixture
def problem():
    rng = np.random.default_rng(0)
    ws = [rng.normal(size=(C, D)) for _ in range(3)]
    bs = [rng.normal(size=C) for _ in range(3)]
    x = rng.uniform(size=(B, 1, 2, 3))
    y = np.array([0, 3, 1, 3])
    return ws, bs, x, y


def np_softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def np_ce(w, b, x, y):
    z = x.reshape(len(x), -1) @ w.T + b
    logp = np.log(np_softmax(z))
    return -logp[np.arange(len(y)), y].mean()


def np_lse_cos(vectors_per_member):
    """vectors_per_member: list over members of [B, D]; returns the batch mean of log Σ_{i<j} exp(cos)."""
    out = []
    for bi in range(len(vectors_per_member[0])):
        cosines = []
        for i, j in combinations(range(len(vectors_per_member)), 2):
            a, c = vectors_per_member[i][bi], vectors_per_member[j][bi]
            cosines.append(a @ c / (np.linalg.norm(a) * np.linalg.norm(c)))
        out.append(math.log(sum(math.exp(v) for v in cosines)))
    return float(np.mean(out))


def run(defense, ens, x, y):
    return defense.loss(ens, torch.tensor(x), torch.tensor(y))


def test_smd_matches_hand_computation(problem):
    ws, bs, x, y = problem
    total, parts = run(defenses.build("smd", lam=0.7), linear_ensemble(ws, bs), x, y)
    saliencies = [w[y] for w in ws]  # ∂z_{i,y}/∂x of a linear member
    smd = np_lse_cos(saliencies)
    ce = sum(np_ce(w, b, x, y) for w, b in zip(ws, bs))  # Σ_i CE_i
    assert parts["smd"] == pytest.approx(smd, rel=1e-9)
    assert parts["ce"] == pytest.approx(ce, rel=1e-9)
    assert float(total.detach()) == pytest.approx(ce + 0.7 * smd, rel=1e-9)
    assert parts["reg"] == pytest.approx(0.7 * smd, rel=1e-9)


def test_gal_matches_hand_computation(problem):
    ws, bs, x, y = problem
    total, parts = run(defenses.build("gal", lam=0.3), linear_ensemble(ws, bs), x, y)
    flat = x.reshape(B, -1)
    onehot = np.eye(C)[y]
    grads = [(np_softmax(flat @ w.T + b) - onehot) @ w for w, b in zip(ws, bs)]  # ∇ₓCE_i per sample
    gal = np_lse_cos(grads)
    ce = np.mean([np_ce(w, b, x, y) for w, b in zip(ws, bs)])  # mean_i CE_i
    assert parts["gal"] == pytest.approx(gal, rel=1e-9)
    assert parts["ce"] == pytest.approx(ce, rel=1e-9)
    assert float(total.detach()) == pytest.approx(ce + 0.3 * gal, rel=1e-9)


def test_adp_matches_hand_computation(problem):
    ws, bs, x, y = problem
    alpha, beta, delta = 2.0, 0.5, 1e-6
    total, parts = run(defenses.build("adp"), linear_ensemble(ws, bs), x, y)
    flat = x.reshape(B, -1)
    probs = np.stack([np_softmax(flat @ w.T + b) for w, b in zip(ws, bs)])  # [M, B, C]
    mean = probs.mean(0)
    entropy = float(np.mean(-(mean * np.log(mean + 1e-20)).sum(-1)))
    log_dets = []
    for bi in range(B):
        cols = []
        for m in range(3):
            v = np.delete(probs[m, bi], y[bi])
            cols.append(v / np.linalg.norm(v))
        mt = np.stack(cols, axis=1)  # [C-1, M]
        log_dets.append(np.linalg.slogdet(mt.T @ mt + delta * np.eye(3))[1])
    log_det = float(np.mean(log_dets))
    ce = sum(np_ce(w, b, x, y) for w, b in zip(ws, bs))
    assert parts["entropy"] == pytest.approx(entropy, rel=1e-9)
    assert parts["log_det"] == pytest.approx(log_det, rel=1e-7)
    assert float(total.detach()) == pytest.approx(ce - alpha * entropy - beta * log_det, rel=1e-7)


def np_kl(p, q):
    """Batch mean of KL(p ‖ q) summed over classes."""
    return float(np.mean((p * (np.log(p) - np.log(q))).sum(-1)))


def test_trades_matches_hand_computation(problem):
    """TRADES on a linear ensemble: CE of the mean prediction plus β·KL(f(x) ‖ f(x')), computed here in
    NumPy from the x' the defense's own inner maximisation finds (same seed); x' stays in the ε ball and
    raises the KL above its start."""
    from tune_div.defenses.trades import trades_example

    ws, bs, x, y = problem
    beta, eps = 2.5, 0.05
    defense = defenses.build("trades", beta=beta, eps=eps, step=0.01, steps=5)
    ens = linear_ensemble(ws, bs)
    torch.manual_seed(3)
    x_adv = trades_example(ens, torch.tensor(x), eps, 0.01, 5).numpy()
    torch.manual_seed(3)
    total, parts = run(defense, ens, x, y)

    def mean_prob(z):
        return np.mean([np_softmax(z.reshape(len(z), -1) @ w.T + b) for w, b in zip(ws, bs)], axis=0)

    p, q = mean_prob(x), mean_prob(x_adv)
    ce = float(-np.mean(np.log(p[np.arange(B), y])))
    kl = np_kl(p, q)
    assert parts["ce"] == pytest.approx(ce, rel=1e-9) and parts["kl"] == pytest.approx(kl, rel=1e-9)
    assert float(total.detach()) == pytest.approx(ce + beta * kl, rel=1e-9)
    assert np.abs(x_adv - x).max() <= eps + 1e-12 and x_adv.min() >= 0 and x_adv.max() <= 1
    torch.manual_seed(3)
    start = trades_example(ens, torch.tensor(x), eps, 0.01, 0).numpy()  # the Gaussian start alone
    assert kl > np_kl(p, mean_prob(start)) > 0


def test_trs_matches_hand_computation(problem):
    """TRS without the smoothness example (smooth_steps 0: at x): Σ CE_i + λ_a·mean_{i<j} |cos(g_i, g_j)| +
    λ_b·mean_i 2‖g_i‖², with g_i the closed-form input gradient of member i's batch-mean CE."""
    ws, bs, x, y = problem
    total, parts = run(defenses.build("trs", lambda_a=3.0, lambda_b=7.0, smooth_steps=0), linear_ensemble(ws, bs), x, y)
    flat = x.reshape(B, -1)
    onehot = np.eye(C)[y]
    grads = [(np_softmax(flat @ w.T + b) - onehot) @ w / B for w, b in zip(ws, bs)]  # ∂(mean CE_i)/∂x_b
    cos = [
        abs(gi[k] @ gj[k]) / (np.linalg.norm(gi[k]) * np.linalg.norm(gj[k]))
        for gi, gj in combinations(grads, 2)
        for k in range(B)
    ]
    sim = float(np.mean(cos))
    smooth = float(np.mean([2 * (g**2).sum(-1).mean() for g in grads]))
    ce = sum(np_ce(w, b, x, y) for w, b in zip(ws, bs))
    assert parts["sim"] == pytest.approx(sim, rel=1e-9) and parts["smooth"] == pytest.approx(smooth, rel=1e-9)
    assert float(total.detach()) == pytest.approx(ce + 3.0 * sim + 7.0 * smooth, rel=1e-9)


def test_trs_smoothness_example_climbs_the_gradient_norm_inside_its_growing_ball(problem):
    from tune_div.defenses.trs import loss_grads, smooth_example, smoothness

    ws, bs, x, y = problem
    defense = defenses.build("trs", init_eps=0.1, adv_eps=0.3)
    ens = linear_ensemble(ws, bs)
    ens.train_config = {"epochs": 4}
    defense.prepare(ens)
    eps = []
    for epoch in (1, 2, 3, 4):
        defense.start_epoch(epoch, ens)
        eps.append(defense.eps)
    assert eps == pytest.approx([0.1, 0.15, 0.2, 0.25])  # init + (adv - init)·(epoch - 1)/epochs
    xt, yt = torch.tensor(x), torch.tensor(y)
    torch.manual_seed(0)
    start = smooth_example(ens, xt, yt, 0.2, 0)
    torch.manual_seed(0)
    climbed = smooth_example(ens, xt, yt, 0.2, 6)
    assert (climbed - xt).abs().max() <= 0.2 + 1e-12 and climbed.min() >= 0 and climbed.max() <= 1
    after, before = (float(smoothness(loss_grads(ens, z, yt)[1]).detach()) for z in (climbed, start))
    assert after > before


def test_naive_is_the_sum_of_member_cross_entropies(problem):
    ws, bs, x, y = problem
    total, parts = run(defenses.build("naive"), linear_ensemble(ws, bs), x, y)
    assert float(total.detach()) == pytest.approx(sum(np_ce(w, b, x, y) for w, b in zip(ws, bs)), rel=1e-9)
    assert parts["reg"] == 0.0


@pytest.mark.parametrize("name,key", [("gal", "gal"), ("smd", "smd")])
@pytest.mark.parametrize("m", [2, 3, 5])
def test_identical_members_give_log_pairs_plus_one(problem, name, key, m):
    ws, bs, x, y = problem
    ens = linear_ensemble([ws[0]] * m, [bs[0]] * m)
    _, parts = run(defenses.build(name), ens, x, y)
    assert parts[key] == pytest.approx(math.log(m * (m - 1) / 2) + 1, rel=1e-9)


def test_adp_log_det_of_orthogonal_non_true_predictions_is_m_log_1_plus_delta():
    # Member i puts half its mass on the true class 0 and half on class i+1: the non-true parts are
    # the unit vectors e_i, mutually orthogonal (exp(-1e4) is exactly 0).
    m, delta = 3, 1e-6
    ws, bs = [], []
    for i in range(m):
        b = np.full(C, -1e4)
        b[0] = b[i + 1] = 0.0
        ws.append(np.zeros((C, D)))
        bs.append(b)
    x = np.zeros((2, 1, 2, 3))
    _, parts = run(defenses.build("adp", log_det_delta=delta), linear_ensemble(ws, bs), x, np.array([0, 0]))
    assert parts["log_det"] == pytest.approx(m * math.log(1 + delta), rel=1e-6)


class ConstantFeatures(nn.Module):
    """A stage whose output does not depend on x: every input gradient is exactly zero."""

    def __init__(self, dim: int):
        super().__init__()
        self.v = nn.Parameter(torch.linspace(-1, 1, dim))

    def forward(self, x):
        return self.v.expand(x.shape[0], -1) + 0.0 * x.flatten(1).sum(1, keepdim=True)


def constant_member(defense, logits: np.ndarray) -> models.Member:
    """A real Member (stages, head, the defense's head type) that outputs ``logits`` for any input."""
    member = models.Member([ConstantFeatures(8)], 8, C, mean=[0.0], std=[1.0])
    head_opts = dict(defense.model_options.get("head") or {})
    if head_opts:
        member.head = models.HEADS.get(head_opts.pop("type"))(8, C, **head_opts)
    last = [m for m in member.head.modules() if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():
        for m in member.head.modules():
            if isinstance(m, nn.Linear):
                m.weight.zero_()
        last.bias.copy_(torch.tensor(logits, dtype=torch.float32))
    return member


@pytest.mark.parametrize("name", defenses.names())
@pytest.mark.parametrize("case", ["zero_input_gradients", "one_hot_predictions"])
def test_losses_backpropagate_finite_gradients_in_degenerate_cases(name, case):
    y = torch.zeros(4, dtype=torch.int64)
    defense = defenses.build(name)
    if case == "zero_input_gradients":
        members = [constant_member(defense, np.linspace(0, 1, C) * (i + 1)) for i in range(3)]
    else:  # probabilities exactly one-hot on the true class: ADP's non-true parts are all zero
        members = [constant_member(defense, np.eye(C)[0] * 1e3) for _ in range(3)]
    ens = Ensemble(members, config={})
    defense.prepare(ens)
    x = torch.rand(4, 1, 28, 28)
    total, parts = defense.loss(ens, x, y)
    total.backward()
    assert torch.isfinite(total)
    assert all(math.isfinite(v) for v in parts.values())
    params = list(ens.parameters()) + list(defense.parameters())
    assert all(torch.isfinite(p.grad).all() for p in params if p.grad is not None)
    if case == "zero_input_gradients" and name in ("gal", "smd"):
        assert parts[name] == pytest.approx(math.log(3))  # cos = 0 for every pair


FEW_STEPS = {"trades": {"steps": 3}, "trs": {"smooth_steps": 2}}  # inner maximisations, kept short here

RAW_PARTS = {
    "naive": set(),
    "adp": {"entropy", "log_det"},
    "gal": {"gal"},
    "smd": {"smd"},
    "cldl": {"ld", "gd"},
    "drelu": {"cap_sq_sum"},
    "srelu": set(),
    "dverge": set(),
    "smd_plus": {"smd"},
    "trades": {"kl"},
    "trs": {"sim", "smooth"},
}


@pytest.mark.parametrize("name", defenses.names())
@pytest.mark.parametrize("arch", ["lenet5", "dense", "shallow_cnn", "resnet20"])
def test_every_defense_trains_two_steps_on_small_architectures(name, arch):
    torch.manual_seed(0)
    defense = defenses.build(name, **FEW_STEPS.get(name, {}))
    ens = models.build_ensemble(arch, 3, 10, 1, **defense.model_options)
    defense.prepare(ens)
    params = list(ens.parameters()) + list(defense.parameters())
    opt = torch.optim.Adam(params, lr=1e-3)
    before = [p.detach().clone() for p in params]
    x, y = torch.rand(16, 1, 28, 28), torch.randint(0, 10, (16,))
    for _ in range(2):
        total, parts = defense.loss(ens, x, y)
        assert torch.isfinite(total)
        assert {"ce", "reg"} | RAW_PARTS[name] <= set(parts)  # a new defense must declare its raw parts here
        assert float(total.detach()) == pytest.approx(parts["ce"] + parts["reg"], rel=1e-5, abs=1e-5)
        opt.zero_grad()
        total.backward()
        opt.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, params))


@pytest.mark.parametrize("name", defenses.names())
def test_every_hyperparameter_has_a_domain_holding_the_paper_values(name):
    cls = defenses.DEFENSES.get(name)
    assert set(cls.domains) == set(cls.defaults)
    for dataset in (None, "mnist", "fashion_mnist", "cifar10"):
        assert all(cls.domains[k].accepts(v) for k, v in defenses.defaults(name, dataset).items())


def test_registry_contract():
    assert set(RAW_PARTS) == set(defenses.names())
    with pytest.raises(ValueError, match="smd"):
        defenses.build("smd_v2")
    with pytest.raises(ValueError, match="valid: lam"):
        defenses.build("gal", alpha=1.0)
    assert defenses.build("adp").hparams == {"alpha": 2.0, "beta": 0.5, "log_det_delta": 1e-6}
    assert defenses.build("gal").model_options == {"activation": "leaky_relu"}
