"""The fused execution path (tune_div/models/fused.py) against the looped one, over both registries.

For every registered defense and architecture, one training step's loss, parts, parameter gradients and
batch-norm running statistics must match between ``execution="looped"`` and ``"fused"`` (float64, where
float rounding cannot hide a wrong layout), and the ensemble contract must hold on the fused path.

Why the tolerances hold on any CPU: the two paths compute the same sums in another order (grouped
against separate convolutions, one batched matmul against M), so in float64 they differ by a few units of
the last place, 1e-16 relative, far inside rtol 1e-7, through every smooth operation. The one non-smooth
operation is DVERGE's sign step (also in SMD+), which turns a rounding difference in a near-zero gradient
entry into a whole step of the distilled pixel; how many entries lie that close to zero depends on the
CPU's kernels. So the training step of those defenses is compared on the same distilled inputs, and the
distillation separately: its pre-sign gradient at rtol 1e-7, and its result exactly, on targets that no
source is paired with (a source paired with itself has an exactly zero gradient, whose sign is noise).
"""

from __future__ import annotations

import copy

import pytest
import torch

from tune_div import defenses, models
from tune_div.defenses.dverge import DVERGE, feature_distill, layer_features
from tune_div.errors import UserError
from tune_div.models import fused

FAST = {
    "dverge": {"distill_steps": 2},
    "smd_plus": {"distill_steps": 2},
    "trades": {"steps": 2},
    "trs": {"smooth_steps": 2},
}
SIZE = 12  # small images keep the 7 x 9 grid fast; every architecture accepts them


def _setup(
    defense: str,
    arch: str,
    in_channels: int = 3,
    size: int = SIZE,
    members: int = 3,
    dtype=torch.float64,
    channels_last: bool = False,
    batch: int = 6,
):
    torch.manual_seed(0)
    d = defenses.build(defense, **FAST.get(defense, {}))
    ens = models.build_ensemble(arch, members, 10, in_channels, image_size=size, **d.model_options)
    d.prepare(ens)
    ens, d = ens.to(dtype), d.to(dtype)
    x = torch.rand(batch, in_channels, size, size, dtype=dtype)
    y = torch.randint(0, 10, (batch,))
    if channels_last:
        ens = ens.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    return d, ens, x, y


def _step(d, ens, x, y, execution):
    ens.set_execution(execution)
    ens.train()
    torch.manual_seed(1)  # DVERGE's layer and target permutation, GAL's noise
    d.start_epoch(1, ens)
    total, parts = d.loss(ens, x, y)
    ens.zero_grad(set_to_none=True)
    d.zero_grad(set_to_none=True)
    total.backward()
    grads = {k: p.grad for k, p in [*ens.named_parameters(), *d.named_parameters()]}
    stats = {k: b.clone() for k, b in ens.named_buffers() if "running" in k}
    return float(total.detach()), parts, grads, stats


def _fix_distillation(d, ens, x) -> None:
    """Make a sign-step defense train on one distilled batch, drawn once from a copy of the ensemble.

    Both paths then see the same inputs: the step comparison checks everything after the sign step at
    rtol 1e-7, and the distillation is compared on its own (the tests below)."""
    if not isinstance(d, DVERGE):
        return
    probe = copy.deepcopy(ens).set_execution("looped").train()
    torch.manual_seed(1)
    d.start_epoch(1, probe)
    batch = d.distilled(probe, x)
    d.distilled = lambda ensemble, x: batch  # noqa: ARG005 - the instance's own override


def _compare(d, ens, x, y, rtol=1e-7, atol=1e-9):
    """One step looped and one fused from the same weights: loss, parts, gradients, running statistics."""
    _fix_distillation(d, ens, x)
    d2, ens2 = copy.deepcopy(d), copy.deepcopy(ens)  # before the first step changes the running statistics
    looped = _step(d, ens, x, y, "looped")
    fused_ = _step(d2, ens2, x, y, "fused")
    assert ens2.uses_fused() and not ens.uses_fused()
    assert fused_[0] == pytest.approx(looped[0], rel=rtol, abs=atol)
    assert fused_[1] == pytest.approx(looped[1], rel=rtol, abs=atol)
    assert looped[2], "no parameters were compared"
    for k, g in looped[2].items():
        if g is None:
            assert fused_[2][k] is None, k
        else:
            torch.testing.assert_close(fused_[2][k], g, rtol=rtol, atol=atol, msg=f"gradient of {k}")
    for k, b in looped[3].items():
        torch.testing.assert_close(fused_[3][k], b, rtol=rtol, atol=atol, msg=f"running statistic {k}")


@pytest.mark.parametrize("arch", models.names())
@pytest.mark.parametrize("defense", defenses.names())
def test_fused_step_equals_looped_for_every_defense_and_architecture(defense, arch):
    d, ens, x, y = _setup(defense, arch)
    assert ens.fused_unsupported() is None
    _compare(d, ens, x, y)


def _derangement(n: int) -> torch.Tensor:
    """A permutation with no fixed point, so no source is its own target."""
    return torch.roll(torch.arange(n), 1)


# ResNet-26 is ResNet-20's blocks with one more per stage, and every layer of it costs the most here
DISTILL_ARCHS = [pytest.param(a, marks=pytest.mark.slow) if a == "resnet26" else a for a in models.names()]


@pytest.mark.parametrize("arch", DISTILL_ARCHS)
def test_fused_distillation_equals_looped_before_and_after_the_sign_step(arch):
    """The distillation's gradient (what the sign step reads) at rtol 1e-7 at every layer, and ten momentum
    sign steps from it exactly, in train mode as DVERGE distils."""
    d, ens, x, _ = _setup("dverge", arch)
    target = x[_derangement(x.shape[0])]
    ens.train()
    for layer in range(1, ens.members[0].count_layers(x[:1]) + 1):
        grads, out = {}, {}
        for execution in ("looped", "fused"):
            e = copy.deepcopy(ens).set_execution(execution)
            z = e.member_copies(x)
            with torch.no_grad():
                goal = layer_features(e, e.member_copies(target, requires_grad=False), layer, "all")
            (grads[execution],) = torch.autograd.grad(((layer_features(e, z, layer, "all") - goal) ** 2).sum(), z)
            e = copy.deepcopy(ens).set_execution(execution)
            out[execution] = feature_distill(e, x, target, layer, 0.07, 0.007, 10)
        scale = float(grads["looped"].abs().max())
        torch.testing.assert_close(
            grads["fused"],
            grads["looped"],
            rtol=1e-7,
            atol=1e-12 * scale,
            msg=f"distillation gradient at layer {layer}",
        )
        torch.testing.assert_close(
            out["fused"], out["looped"], rtol=0, atol=1e-12, msg=f"distilled images at layer {layer}"
        )


def test_a_source_paired_with_itself_does_not_move_on_either_path():
    """Its distance is exactly zero on both paths, so its gradient is too, and sign(0) leaves it in place."""
    _, ens, x, _ = _setup("naive", "lenet5")
    ens.train()
    for execution in ("looped", "fused"):
        e = copy.deepcopy(ens).set_execution(execution)
        out = feature_distill(e, x, x, 1, 0.07, 0.007, 3)
        torch.testing.assert_close(out, e.member_copies(x, requires_grad=False), rtol=0, atol=0)


@pytest.mark.parametrize("defense", ["naive", "adp", "smd", "gal", "cldl", "drelu"])
def test_fused_step_in_float32_channels_last_on_mnist_shapes(defense):
    """The training setting on this CPU: one input channel (the shared first convolution), channels-last.

    DVERGE is left to the float64 test: its sign steps turn float32 rounding of near-zero gradient entries
    into different distilled pixels, as two runs of the looped path on different thread counts would.
    """
    d, ens, x, y = _setup(defense, "lenet5", in_channels=1, size=28, dtype=torch.float32, channels_last=True, batch=16)
    _compare(d, ens, x, y, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("members", [1, 2, 5])
def test_fused_matches_for_other_ensemble_sizes(members):
    d, ens, x, y = _setup("smd", "resnet20", members=members)
    _compare(d, ens, x, y)


@pytest.mark.parametrize("arch", models.names())
def test_every_dverge_layer_and_stage_matches_and_eval_mode_uses_running_stats(arch):
    _, ens, x, _ = _setup("naive", arch)
    xs = ens.member_copies(x, requires_grad=False)
    ens.eval()
    for layer in range(1, ens.members[0].count_layers(x[:1]) + 1):
        looped = ens.set_execution("looped").member_layer_features(xs, layer)
        torch.testing.assert_close(ens.set_execution("fused").member_layer_features(xs, layer), looped)
        assert looped.shape[:2] == (3, x.shape[0])
        torch.testing.assert_close(looped[1], ens.members[1].layer_features(x, layer))
    for stage in range(ens.members[0].num_stages):
        torch.testing.assert_close(
            ens.set_execution("fused").member_intermediate(x, stage),
            ens.set_execution("looped").member_intermediate(x, stage),
        )
    with pytest.raises(ValueError, match="layer must be in"):
        ens.set_execution("fused").member_layer_features(x, 99)


def test_fused_keeps_the_ensemble_contract_and_survives_save_and_load(tmp_path):
    _, ens, x, _ = _setup("naive", "resnet20", dtype=torch.float32)
    ens.eval().set_execution("fused")
    logits = ens.member_logits(x)
    assert logits.shape == (3, x.shape[0], 10)
    torch.testing.assert_close(logits[2], ens.members[2](x), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ens(x), models.log_mean_softmax(logits))
    models.save_ensemble(ens, tmp_path / "e.pt")
    back = models.load_ensemble(tmp_path / "e.pt").eval()
    assert back.execution == "auto"  # how the members run is not part of the file
    torch.testing.assert_close(back.set_execution("fused").member_logits(x), logits)


@pytest.mark.parametrize("arch", models.names())
def test_auto_runs_fused_exactly_where_it_was_measured_faster(arch):
    ens = models.build_ensemble(arch, 3, 10, 1, image_size=SIZE)
    assert ens.execution == "auto"
    assert ens.uses_fused() == (arch in fused.FASTER["cpu"])
    assert "lenet5" in fused.FASTER["cpu"]  # the MNIST default, 0.7x looped per naive step here


def test_input_gradients_stay_per_member():
    """The gradient of member i's output w.r.t. the per-member input is member i's gradient alone."""
    _, ens, x, _ = _setup("naive", "lenet5", in_channels=1, size=28)
    ens.set_execution("fused")
    xs = ens.member_copies(x)
    logits = ens.member_logits(xs)
    (g,) = torch.autograd.grad(logits[1].sum(), xs)
    assert g[0].abs().sum() == 0 and g[2].abs().sum() == 0
    x1 = x.clone().requires_grad_(True)
    (ref,) = torch.autograd.grad(ens.members[1](x1).sum(), x1)
    torch.testing.assert_close(g[1], ref)


def test_member_copies_keep_the_memory_format():
    _, ens, x, _ = _setup("naive", "lenet5", dtype=torch.float32, channels_last=True)
    xs = ens.member_copies(x)
    assert xs.shape == (3, *x.shape) and xs.requires_grad and xs.is_leaf
    assert xs[0].is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(xs[2], x)


def test_forcing_fused_on_what_it_cannot_run_says_why_and_auto_falls_back():
    _, ens, x, _ = _setup("naive", "lenet5", dtype=torch.float32)
    ens.members[0].stages[0].append(torch.nn.Dropout(0.1))
    for m in ens.members[1:]:
        m.stages[0].append(torch.nn.Dropout(0.1))
    ens._structure_unsupported = False  # the structure changed after the first check
    assert "Dropout has no fused implementation" in ens.fused_unsupported()
    with pytest.raises(UserError, match="execution 'fused' cannot run this ensemble: module Dropout"):
        ens.set_execution("fused")
    assert not ens.set_execution("auto").uses_fused()
    with pytest.raises(UserError, match="unknown execution 'fast'"):
        ens.set_execution("fast")


def test_hooks_keep_the_looped_path():
    _, ens, x, _ = _setup("naive", "lenet5", dtype=torch.float32)
    seen = []
    handle = ens.members[0].stages[0].register_forward_hook(lambda mod, i, o: seen.append(1))
    assert not ens.uses_fused() and "forward hooks" in ens.fused_unsupported()
    ens.member_logits(x)
    assert seen == [1]
    handle.remove()
    assert ens.uses_fused()


def test_fused_ops_cover_every_module_of_every_architecture():
    for arch in models.names():
        ens = models.build_ensemble(arch, 2, 10, 3, image_size=SIZE, head={"type": "capped_relu", "width": 8})
        assert fused.unsupported(list(ens.members)) is None, arch
