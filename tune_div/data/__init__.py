"""Datasets: the catalog of per-dataset facts, offline-first readers, fixed splits, on-device batches.

Contract (docs/design.md): ``load(name, split, root=None, subset=None, seed=0) -> (images, labels)`` with
``images`` uint8 ``[N, C, H, W]`` and ``labels`` int64 ``[N]``; splits ``train``, ``val`` (held out of
the official training set, fixed by ``seed``) and ``test``. ``info(name)`` is the dataset's catalog
entry: shapes, normalisation, default architecture, epochs, LR milestones, objective ε, ε grid.
"""

from .catalog import DATASETS, DatasetInfo, info, names
from .loader import TensorLoader, augment_crop_flip, to_float
from .readers import cache_dir, resolve_root
from .splits import DEFAULT_VAL_SIZE, SPLITS, load, split_indices

__all__ = [
    "DATASETS",
    "DEFAULT_VAL_SIZE",
    "DatasetInfo",
    "SPLITS",
    "TensorLoader",
    "augment_crop_flip",
    "cache_dir",
    "info",
    "load",
    "names",
    "resolve_root",
    "split_indices",
    "to_float",
]
