"""The fused execution path: the M members of an ensemble run as one batched computation.

The looped path calls each member in turn: M forward and M backward passes of small kernels. The fused
path concatenates the members' weights layer by layer (``torch.cat`` of the parameters on every call, so
gradients flow back to each member's own parameters and the :class:`~tune_div.models.Ensemble` contract,
save/load and optimisers are unchanged) and runs every layer once for all members:

- a convolution is one grouped convolution over a ``[B, M*C, H, W]`` tensor (member i owns channels
  ``i*C:(i+1)*C``), or, on the input every member shares, one convolution with M times the filters;
- a dense layer is one batched matmul over a ``[M, B, F]`` tensor (or one matmul from a shared input);
- batch norm, activations and pooling act channel-wise, so they run once on the grouped tensor;
- an activation followed by max pooling runs after the pooling (both are monotone, so the values and
  gradients are the same, on a quarter of the elements).

Each member sees only its own channels, so an input given per member (``[M, B, C, H, W]``) keeps its
input gradients per member, as the gradient regularisers (GAL, SMD, CLDL) need, through double backward.

The path is an interpreter over known module types (:data:`FUSED_OPS`); :func:`unsupported` names what a
member holds that it cannot run (a custom module, differing members), and the ensemble then stays on the
looped path. Numerically it matches the looped path to float tolerance (``tests/test_fused.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .. import device_defaults
from .base import Member, Normalize, Tapped

SHARED, GROUPED, STACKED = "shared", "grouped", "stacked"

# Where ``execution="auto"`` runs fused: device type -> architectures whose fused training step measured
# faster than the looped one for the naive ensemble and the gradient regularisers alike. The table lives
# in tune_div/device_defaults.py (CPU: benchmarks/step_time.py; a GPU: benchmarks/device_check.py --apply).
FASTER: dict[str, tuple[str, ...]] = device_defaults.fused_faster()


@dataclass
class Act:
    """An activation of all members at once.

    ``shared``: ``[B, ...]``, the same for every member; ``grouped``: ``[B, M*C, ...]``, member i's
    channels at ``i*C:(i+1)*C``; ``stacked``: ``[M, B, ...]``.
    """

    value: torch.Tensor
    layout: str


class Context:
    """What one fused call needs besides the modules: M, the memory format and the DVERGE tap."""

    def __init__(self, m: int, channels_last: bool, tap: int | None = None):
        self.m = m
        self.channels_last = channels_last
        self.tap = tap  # stop at the input of this activation (1-based, forward order)
        self.seen = 0

    def format(self, t: torch.Tensor) -> torch.Tensor:
        if self.channels_last and t.dim() == 4:
            return channels_last(t)
        return t

    def activation(self, h: Act) -> None:
        """Count an activation call; raise :class:`.base.Tapped` with its input when it is the tapped one."""
        self.seen += 1
        if self.tap == self.seen:
            raise Tapped(h)


# -- layout changes -------------------------------------------------------------------------------------
def channels_last(t: torch.Tensor) -> torch.Tensor:
    """``t`` ``[B, C, H, W]`` with channels-last strides, also for C = 1.

    With one channel the two layouts hold the same bytes and ``contiguous(memory_format=channels_last)``
    keeps the NCHW strides, so the layout oneDNN picks for the first convolution would depend on the
    weights' strides alone; the NHWC strides are set here without a copy.
    """
    if t.shape[1] == 1 and t.is_contiguous():
        return t.as_strided(t.shape, (t.shape[2] * t.shape[3], 1, t.shape[3], 1))
    return t.contiguous(memory_format=torch.channels_last)


def to_grouped(h: Act, ctx: Context) -> Act:
    if h.layout == GROUPED:
        return h
    v = h.value
    if h.layout == SHARED:
        v = v.repeat(1, ctx.m, *([1] * (v.dim() - 2)))
    else:  # [M, B, C, ...] -> [B, M*C, ...]
        v = v.transpose(0, 1).reshape(v.shape[1], -1, *v.shape[3:])
    return Act(ctx.format(v), GROUPED)


def to_stacked(h: Act, ctx: Context) -> torch.Tensor:
    """``[M, B, ...]`` view of any layout (a copy where the memory order requires one)."""
    v = h.value
    if h.layout == STACKED:
        return v
    if h.layout == SHARED:
        return v.unsqueeze(0).expand(ctx.m, *v.shape)
    b, mc = v.shape[:2]
    return v.reshape(b, ctx.m, mc // ctx.m, *v.shape[2:]).transpose(0, 1)


def cat_param(mods: Sequence[nn.Module], name: str) -> torch.Tensor | None:
    first = getattr(mods[0], name)
    return None if first is None else torch.cat([getattr(m, name) for m in mods])


def stack_param(mods: Sequence[nn.Module], name: str) -> torch.Tensor | None:
    first = getattr(mods[0], name)
    return None if first is None else torch.stack([getattr(m, name) for m in mods])


# -- the registry of fused ops ------------------------------------------------------------------------
# type -> fn(modules of the M members, Act, Context) -> Act. A module type defined elsewhere registers its
# op beside it (models/capped.py, models/resnet.py).
FUSED_OPS: dict[type, Callable[[Sequence[nn.Module], Act, Context], Act]] = {}


def fused_op(*types: type):
    def deco(fn):
        for t in types:
            if t in FUSED_OPS:
                raise ValueError(f"a fused op for {t.__name__} is registered twice")
            FUSED_OPS[t] = fn
        return fn

    return deco


def run_module(mods: Sequence[nn.Module], h: Act, ctx: Context) -> Act:
    """Run the M members' corresponding modules (same type and shapes) on ``h``."""
    return FUSED_OPS[type(mods[0])](mods, h, ctx)


@fused_op(Normalize)
def _normalize(mods, h, ctx):
    mean, std = mods[0].mean, mods[0].std
    if h.layout == SHARED and all(torch.equal(m.mean, mean) and torch.equal(m.std, std) for m in mods[1:]):
        return Act((h.value - mean) / std, SHARED)
    h = to_grouped(h, ctx)
    return Act((h.value - torch.cat([m.mean for m in mods], 1)) / torch.cat([m.std for m in mods], 1), GROUPED)


@fused_op(nn.Conv2d)
def _conv(mods, h, ctx):
    c = mods[0]
    weight, bias = cat_param(mods, "weight"), cat_param(mods, "bias")
    if h.layout == SHARED and c.groups == 1:
        out = F.conv2d(h.value, weight, bias, c.stride, c.padding, c.dilation, 1)
    else:
        h = to_grouped(h, ctx)
        out = F.conv2d(h.value, weight, bias, c.stride, c.padding, c.dilation, c.groups * ctx.m)
    return Act(out, GROUPED)


@fused_op(nn.BatchNorm2d)
def _batch_norm(mods, h, ctx):
    """Batch norm of every member's channels at once; the running statistics go back to each member."""
    bn = mods[0]
    h = to_grouped(h, ctx)
    weight, bias = cat_param(mods, "weight"), cat_param(mods, "bias")
    track = bn.track_running_stats and bn.running_mean is not None
    batch_stats = bn.training or not track
    factor = 0.0 if bn.momentum is None else bn.momentum
    mean = var = None  # without running statistics: batch statistics, in eval mode too
    if track:
        mean, var = cat_param(mods, "running_mean"), cat_param(mods, "running_var")
        if bn.training:
            for m in mods:  # as _BatchNorm.forward does
                m.num_batches_tracked.add_(1)
            if bn.momentum is None:
                factor = 1.0 / float(bn.num_batches_tracked)
    out = F.batch_norm(h.value, mean, var, weight, bias, batch_stats, factor, bn.eps)
    if track and bn.training:  # F.batch_norm updated the concatenated copies in place
        with torch.no_grad():
            for m, rm, rv in zip(mods, mean.chunk(ctx.m), var.chunk(ctx.m)):
                m.running_mean.copy_(rm)
                m.running_var.copy_(rv)
    return Act(out, GROUPED)


@fused_op(nn.ReLU, nn.LeakyReLU)
def _activation(mods, h, ctx):
    ctx.activation(h)
    return Act(mods[0](h.value), h.layout)


@fused_op(nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
def _per_channel(mods, h, ctx):
    if h.layout == STACKED:
        h = to_grouped(h, ctx)
    return Act(mods[0](h.value), h.layout)


@fused_op(nn.Identity)
def _identity(mods, h, ctx):
    return h


@fused_op(nn.Flatten)
def _flatten(mods, h, ctx):
    f = mods[0]
    if (f.start_dim, f.end_dim) != (1, -1):
        raise NotImplementedError("only Flatten(1, -1) is fused")
    if h.layout == SHARED:
        return Act(h.value.flatten(1), SHARED)
    return Act(to_stacked(h, ctx).flatten(2), STACKED)


@fused_op(nn.Linear)
def _linear(mods, h, ctx):
    if h.layout == SHARED and h.value.dim() == 2:  # [B, D] -> one matmul with M times the outputs
        out = F.linear(h.value, cat_param(mods, "weight"), cat_param(mods, "bias"))
        return Act(out.view(out.shape[0], ctx.m, -1).transpose(0, 1), STACKED)
    z = to_stacked(h, ctx)  # [M, B, in]
    weight, bias = stack_param(mods, "weight"), stack_param(mods, "bias")
    if bias is None:
        return Act(torch.bmm(z, weight.transpose(1, 2)), STACKED)
    return Act(torch.baddbmm(bias.unsqueeze(1), z, weight.transpose(1, 2)), STACKED)


def _commutes_with_max_pool(module: nn.Module) -> bool:
    """max_pool(act(z)) == act(max_pool(z)) with the same gradients: a non-decreasing element-wise map."""
    return isinstance(module, nn.ReLU) or (isinstance(module, nn.LeakyReLU) and module.negative_slope >= 0)


@fused_op(nn.Sequential)
def _sequential(mods, h, ctx):
    children = [list(m) for m in mods]
    i = 0
    while i < len(children[0]):
        layer = [c[i] for c in children]
        nxt = children[0][i + 1] if i + 1 < len(children[0]) else None
        if (
            isinstance(nxt, nn.MaxPool2d) and _commutes_with_max_pool(layer[0]) and ctx.tap != ctx.seen + 1
        ):  # the tapped layer is the activation's unpooled input
            ctx.seen += 1
            pooled = run_module([c[i + 1] for c in children], h, ctx)
            h = Act(layer[0](pooled.value), pooled.layout)
            i += 2
            continue
        h = run_module(layer, h, ctx)
        i += 1
    return h


# -- what can run fused -------------------------------------------------------------------------------
def unsupported(members: Sequence[nn.Module]) -> str | None:
    """Why these members cannot run fused, or None when they can."""
    return structure_unsupported(members) or has_hooks(members)


def structure_unsupported(members: Sequence[nn.Module]) -> str | None:
    """What in the members' architecture the fused path cannot run (hooks aside), or None."""
    if not all(isinstance(m, Member) for m in members):
        return "a member is not a tune_div Member"
    for method in ("forward", "features", "intermediate"):
        if any(getattr(type(m), method) is not getattr(Member, method) for m in members):
            return f"a member overrides Member.{method}"
    shapes = [
        [
            (type(mod), tuple(p.shape) if p is not None else None, repr(mod) if not list(mod.children()) else "")
            for mod in m.modules()
            for p in [getattr(mod, "weight", None)]
        ]
        for m in members
    ]
    if any(s != shapes[0] for s in shapes[1:]):
        return "the members differ in architecture"
    for mod in members[0].modules():
        if type(mod) is Member:
            continue
        if type(mod) not in FUSED_OPS and not isinstance(mod, nn.ModuleList):
            return f"module {type(mod).__name__} has no fused implementation"
        if isinstance(mod, nn.Conv2d) and mod.padding_mode != "zeros":
            return f"convolution padding_mode {mod.padding_mode!r}"
        if isinstance(mod, nn.Flatten) and (mod.start_dim, mod.end_dim) != (1, -1):
            return "a Flatten other than Flatten(1, -1)"
    return None


def has_hooks(members: Sequence[nn.Module]) -> str | None:
    """The fused path does not call the members' modules, so it would skip their forward hooks."""
    for m in members:
        for mod in m.modules():
            # torch (read from 2.13.0) has no public way to ask a module for its hooks: the one private access
            if mod._forward_hooks or mod._forward_pre_hooks:
                return f"module {type(mod).__name__} of a member has forward hooks"
    return None


def _channels_last(members: Sequence[Member]) -> bool:
    for mod in members[0].modules():
        if isinstance(mod, nn.Conv2d):
            w = mod.weight
            if w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous():
                return True
    return False


# -- entry points -------------------------------------------------------------------------------------
def _start(members: Sequence[Member], x: torch.Tensor, tap: int | None = None) -> tuple[Act, Context]:
    ctx = Context(len(members), _channels_last(members), tap)
    if x.dim() == 5:  # one input per member
        if x.shape[0] != ctx.m:
            raise ValueError(f"per-member input has {x.shape[0]} members, the ensemble {ctx.m}")
        return Act(x, STACKED), ctx
    return Act(ctx.format(x), SHARED), ctx


def _body(members, h: Act, ctx: Context, stages: int | None = None) -> Act:
    h = run_module([m.normalize for m in members], h, ctx)
    n = members[0].num_stages if stages is None else stages
    for k in range(n):
        h = run_module([m.stages[k] for m in members], h, ctx)
    return h


def member_logits(members: Sequence[Member], x: torch.Tensor, with_features: bool = False):
    """``[B, C, H, W]`` (shared) or ``[M, B, C, H, W]`` (one per member) -> logits ``[M, B, classes]``
    (and the penultimate features ``[M, B, F]`` with ``with_features``)."""
    h, ctx = _start(members, x)
    feats = _body(members, h, ctx)
    logits = to_stacked(run_module([m.head for m in members], feats, ctx), ctx)
    return (logits, to_stacked(feats, ctx)) if with_features else logits


def member_intermediate(members: Sequence[Member], x: torch.Tensor, stage: int) -> torch.Tensor:
    """Output of stage ``stage`` (0-based) of every member, ``[M, B, ...]``."""
    h, ctx = _start(members, x)
    return to_stacked(_body(members, h, ctx, stage + 1), ctx)


def member_layer_features(members: Sequence[Member], x: torch.Tensor, layer: int) -> torch.Tensor:
    """Every member's DVERGE layer ``layer`` (1-based; see :meth:`Member.layer_features`), ``[M, B, ...]``."""
    if layer < 1:
        raise ValueError(f"layer must be >= 1, got {layer}")
    h, ctx = _start(members, x, tap=layer)
    try:
        logits = member_logits_from(members, h, ctx)
    except Tapped as tapped:
        return to_stacked(tapped.value, ctx)
    if layer != ctx.seen + 1:
        raise ValueError(f"layer must be in 1..{ctx.seen + 1}, got {layer}")
    return logits


def member_logits_from(members, h: Act, ctx: Context) -> torch.Tensor:
    return to_stacked(run_module([m.head for m in members], _body(members, h, ctx), ctx), ctx)
