"""The ensemble: M members averaged in probability space, plus save/load in one file."""

from __future__ import annotations

import math
import os
from typing import Any

import torch
from torch import nn

from ..errors import MissingFileError, UserError
from ..files import atomic_torch_save
from ..registry import Registry
from .base import ACTIVATIONS, Member
from .registry import MODELS

FORMAT = "tune_div.ensemble/1"

# Heads replace a member's final Linear (D-ReLU inserts a capped dense layer there). A head factory
# takes (feature_dim, num_classes, **options) and returns an nn.Module mapping features to logits.
HEADS: Registry = Registry("head")


class Ensemble(nn.Module):
    """``forward(x)`` -> ``log(mean_i softmax(z_i))`` ``[B, C]``, so cross-entropy on it is the ensemble's
    NLL and every attack attacks exactly what is predicted. ``member_logits(x)`` -> ``[M, B, C]``.
    """

    def __init__(self, members: list[Member], config: dict[str, Any]):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.config = dict(config)  # everything build_ensemble needs to rebuild this architecture
        self.train_config: dict[str, Any] | None = None  # the TrainConfig dict that trained it, when known

    @property
    def n_members(self) -> int:
        return len(self.members)

    def member_logits(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.members])

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
    config = dict(arch=arch, n_members=n_members, num_classes=num_classes, in_channels=in_channels,
                  activation=act, image_size=image_size, mean=mean, std=std, head=head)
    if "seed" in options:
        torch.manual_seed(int(options["seed"]))
    members = []
    for _ in range(n_members):
        m = factory(num_classes=num_classes, in_channels=in_channels, image_size=image_size,
                    activation_name=act, mean=mean, std=std)
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
        raise UserError(f"{path} cannot be read as a tune_div ensemble (damaged, cut short, or not a torch file: "
                        f"{type(exc).__name__}); pass a file written by --save-model") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise UserError(f"{path} is not a tune_div ensemble file (expected format {FORMAT})")
    try:
        cfg = dict(blob["config"])
        ens = build_ensemble(cfg.pop("arch"), cfg.pop("n_members"), cfg.pop("num_classes"), cfg.pop("in_channels"),
                             **{k: v for k, v in cfg.items() if v is not None})
        ens.load_state_dict(blob["state_dict"])
        ens.train_config = dict(blob["train_config"]) if blob.get("train_config") else None
    except (KeyError, TypeError, RuntimeError, UserError) as exc:  # a version this code cannot rebuild
        raise UserError(f"{path} is a tune_div ensemble this version cannot rebuild ({type(exc).__name__}); "
                        "retrain it with this version") from None
    return ens
