"""The ensemble: M members averaged in probability space, plus save/load in one file."""

from __future__ import annotations

import math
import os
from typing import Any, cast

import torch
from torch import nn

from ..errors import MissingFileError, UserError
from ..files import atomic_torch_save
from ..registry import Registry
from . import fused
from .base import ACTIVATIONS, Member
from .registry import MODELS

FORMAT = "tune_div.ensemble/1"

# How the members run: "fused" (one batched computation, tune_div.models.fused), "looped" (one member
# after the other) or "auto" (fused where it is supported and measured faster: fused.FASTER).
EXECUTIONS = ("auto", "fused", "looped")

# Heads replace a member's final Linear (D-ReLU inserts a capped dense layer there). A head factory
# takes (feature_dim, num_classes, **options) and returns an nn.Module mapping features to logits.
HEADS: Registry = Registry("head")


class Ensemble(nn.Module):
    """``forward(x)`` -> ``log(mean_i softmax(z_i))`` ``[B, C]``, so cross-entropy on it is the ensemble's
    NLL and every attack attacks exactly what is predicted. ``member_logits(x)`` -> ``[M, B, C]``.

    Every ``member_*`` method takes either one batch ``[B, C, H, W]`` that all members see, or one batch
    per member ``[M, B, C, H, W]`` (member i sees ``x[i]``, so input gradients stay per member), and runs
    the members fused or looped according to ``execution`` (:data:`EXECUTIONS`); both give the same
    numbers to float tolerance.
    """

    def __init__(self, members: list[Member], config: dict[str, Any]):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.config = dict(config)  # everything build_ensemble needs to rebuild this architecture
        self.train_config: dict[str, Any] | None = None  # the TrainConfig dict that trained it, when known
        self.execution = "auto"
        self._structure_unsupported: str | None | bool = False  # False: not checked yet

    @property
    def n_members(self) -> int:
        return len(self.members)

    def member_list(self) -> list[Member]:
        """The members as a typed list (``self.members`` is the ``nn.ModuleList`` that registers them)."""
        return cast(list[Member], list(self.members))

    # -- execution path ------------------------------------------------------------------------------
    def set_execution(self, execution: str) -> Ensemble:
        """``auto`` | ``fused`` | ``looped``; ``fused`` on members it cannot run raises a UserError."""
        if execution not in EXECUTIONS:
            raise UserError(f"unknown execution {execution!r}; choose one of: {', '.join(EXECUTIONS)}")
        self.execution = execution
        self.uses_fused()  # fused on an unsupported architecture fails here, not at the first batch
        return self

    def fused_unsupported(self) -> str | None:
        """Why the fused path cannot run these members (None: it can)."""
        if self._structure_unsupported is False:
            self._structure_unsupported = fused.structure_unsupported(self.member_list())
        checked = self._structure_unsupported
        return checked if isinstance(checked, str) else fused.has_hooks(self.member_list())

    def uses_fused(self) -> bool:
        """Whether the ``member_*`` methods run fused now."""
        if self.execution == "looped":
            return False
        reason = self.fused_unsupported()
        if self.execution == "fused":
            if reason:
                raise UserError(f"execution 'fused' cannot run this ensemble: {reason}; use execution auto or looped")
            return True
        if reason:
            return False
        param = next(self.parameters(), None)
        return param is not None and self.config.get("arch") in fused.FASTER.get(param.device.type, ())

    # -- the members' outputs ------------------------------------------------------------------------
    def member_copies(self, x: torch.Tensor, requires_grad: bool = True) -> torch.Tensor:
        """One detached copy of ``x`` ``[B, C, H, W]`` per member, ``[M, B, C, H, W]`` (each copy in ``x``'s
        memory format): the per-member input whose gradient holds every member's own input gradient."""
        x = x.detach()
        if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            b, c, h, w = x.shape
            out = x.new_empty(self.n_members, b, h, w, c).permute(0, 1, 4, 2, 3)
        else:
            out = x.new_empty(self.n_members, *x.shape)
        out.copy_(x.unsqueeze(0).expand_as(out))
        return out.requires_grad_(requires_grad)

    def _inputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.dim() == 5:
            if x.shape[0] != self.n_members:
                raise ValueError(f"per-member input has {x.shape[0]} batches for {self.n_members} members")
            return list(x.unbind(0))
        return [x] * self.n_members

    def member_logits(self, x: torch.Tensor, with_features: bool = False):
        """Logits ``[M, B, classes]``; with ``with_features``, also the penultimate features ``[M, B, F]``."""
        if self.uses_fused():
            return fused.member_logits(self.member_list(), x, with_features)
        xs = self._inputs(x)
        if not with_features:
            return torch.stack([m(xi) for m, xi in zip(self.member_list(), xs)])
        feats = [m.features(xi) for m, xi in zip(self.member_list(), xs)]
        return torch.stack([m.head(f) for m, f in zip(self.member_list(), feats)]), torch.stack(feats)

    def member_intermediate(self, x: torch.Tensor, stage: int) -> torch.Tensor:
        """Every member's :meth:`Member.intermediate` output of stage ``stage``, ``[M, B, ...]``."""
        if self.uses_fused():
            return fused.member_intermediate(self.member_list(), x, stage)
        return torch.stack([m.intermediate(xi, stage) for m, xi in zip(self.member_list(), self._inputs(x))])

    def member_layer_features(self, x: torch.Tensor, layer: int) -> torch.Tensor:
        """Every member's :meth:`Member.layer_features` (DVERGE's layer ``layer``), ``[M, B, ...]``."""
        if self.uses_fused():
            return fused.member_layer_features(self.member_list(), x, layer)
        return torch.stack([m.layer_features(xi, layer) for m, xi in zip(self.member_list(), self._inputs(x))])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return log_mean_softmax(self.member_logits(x))


def log_mean_softmax(logits: torch.Tensor) -> torch.Tensor:
    """``[M, B, C]`` member logits -> ``[B, C]`` log of the mean member probability (stable in log space)."""
    return torch.logsumexp(torch.log_softmax(logits, dim=-1), dim=0) - math.log(logits.shape[0])


def build_ensemble(arch: str, n_members: int, num_classes: int, in_channels: int, **options) -> Ensemble:
    """M members of one registered architecture.

    Options: ``activation`` (relu | leaky_relu), ``image_size`` (default 28 for one channel, else 32),
    ``mean`` / ``std`` (input normalisation inside each member; default identity),
    ``head`` (a dict with ``type`` naming a registered head and its options; default a Linear layer),
    ``seed`` (initialise the weights from this seed; default: the global RNG).
    """
    factory = MODELS.get(arch)
    if n_members < 1:
        raise UserError(f"n_members must be at least 1, got {n_members}")
    known = {"activation", "image_size", "mean", "std", "head", "seed"}
    unknown = set(options) - known
    if unknown:
        raise UserError(f"unknown model option(s) {sorted(unknown)}; valid: {sorted(known)}")
    act = options.get("activation", "relu")
    if act not in ACTIVATIONS:
        raise UserError(f"unknown activation '{act}'; choose one of: {', '.join(ACTIVATIONS)}")
    image_size = int(options.get("image_size", 28 if in_channels == 1 else 32))
    mean = [float(v) for v in options.get("mean", [0.0] * in_channels)]
    std = [float(v) for v in options.get("std", [1.0] * in_channels)]
    head = options.get("head")
    config = dict(
        arch=arch,
        n_members=n_members,
        num_classes=num_classes,
        in_channels=in_channels,
        activation=act,
        image_size=image_size,
        mean=mean,
        std=std,
        head=head,
    )
    if "seed" in options:
        torch.manual_seed(int(options["seed"]))
    members = []
    for _ in range(n_members):
        m = factory(
            num_classes=num_classes,
            in_channels=in_channels,
            image_size=image_size,
            activation_name=act,
            mean=mean,
            std=std,
        )
        if head:
            head_opts = {k: v for k, v in head.items() if k != "type"}
            m.head = HEADS.get(head["type"])(m.feature_dim, num_classes, **head_opts)
        members.append(m)
    return Ensemble(members, config)


def save_ensemble(ens: Ensemble, path: str | os.PathLike, train_config: dict[str, Any] | None = None) -> None:
    """One file with the weights, the config that rebuilds the architecture and, when given, the training
    config that produced them (``Ensemble.train_config`` after loading: a black-box surrogate trains with
    the same routine)."""
    blob = {"format": FORMAT, "config": ens.config, "state_dict": ens.state_dict()}
    train_config = train_config if train_config is not None else ens.train_config
    if train_config is not None:
        blob["train_config"] = dict(train_config)
    atomic_torch_save(blob, path)


def load_ensemble(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Ensemble:
    """Rebuild an ensemble saved by :func:`save_ensemble` (``torch.load(weights_only=True)``)."""
    try:
        blob = torch.load(os.fspath(path), map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise MissingFileError(f"no saved ensemble at {path}; pass a file written by --save-model") from None
    except Exception as exc:  # a text file, a truncated copy, a pickle with code in it
        raise UserError(
            f"{path} cannot be read as a tune_div ensemble (damaged, cut short, or not a torch file: "
            f"{type(exc).__name__}); pass a file written by --save-model"
        ) from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise UserError(f"{path} is not a tune_div ensemble file (expected format {FORMAT})")
    try:
        cfg = dict(blob["config"])
        ens = build_ensemble(
            cfg.pop("arch"),
            cfg.pop("n_members"),
            cfg.pop("num_classes"),
            cfg.pop("in_channels"),
            **{k: v for k, v in cfg.items() if v is not None},
        )
        ens.load_state_dict(blob["state_dict"])
        ens.train_config = dict(blob["train_config"]) if blob.get("train_config") else None
    except (KeyError, TypeError, RuntimeError, UserError) as exc:  # a version this code cannot rebuild
        raise UserError(
            f"{path} is a tune_div ensemble this version cannot rebuild ({type(exc).__name__}); "
            "retrain it with this version"
        ) from None
    return ens
