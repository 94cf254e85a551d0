"""Fixed splits of the official files: ``train`` (official training set minus ``val``), ``val``
(``val_size`` images held out of the official training set, chosen by ``seed``) and ``test`` (the
official test set), with seeded subsets.
"""

from __future__ import annotations

import os

import torch

from ..errors import UserError
from .catalog import info
from .readers import official, resolve_root

DEFAULT_VAL_SIZE = 5000
SPLITS = ("train", "val", "test")


def split_indices(n_train: int, val_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of (train, val) in the official training set: a seeded permutation, val taken first."""
    if not 0 < val_size < n_train:
        raise UserError(f"val_size must be in 1..{n_train - 1}, got {val_size}")
    perm = torch.randperm(n_train, generator=torch.Generator().manual_seed(seed))
    return perm[val_size:].sort().values, perm[:val_size].sort().values


def load(
    name: str,
    split: str,
    root: str | os.PathLike | None = None,
    subset: int | None = None,
    seed: int = 0,
    val_size: int = DEFAULT_VAL_SIZE,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (uint8 ``[N, C, H, W]``) and labels (int64 ``[N]``) of one split.

    ``subset=N`` keeps a seeded random N of the split (all of it if N is larger).
    """
    info(name)  # unknown name -> UserError naming the choices
    if split not in SPLITS:
        raise UserError(f"unknown split '{split}'; choose one of: {', '.join(SPLITS)}")
    if subset is not None and subset <= 0:
        raise UserError(f"subset must be a positive number of images, got {subset}")
    images, labels = official(name, split != "test", resolve_root(root))
    if split != "test":
        train_idx, val_idx = split_indices(len(labels), val_size, seed)
        idx = train_idx if split == "train" else val_idx
        images, labels = images[idx], labels[idx]
    if subset is not None and subset < len(labels):
        keep = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed + 1))[:subset]
        keep = keep.sort().values
        images, labels = images[keep], labels[keep]
    return images, labels
