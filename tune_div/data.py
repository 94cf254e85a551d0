"""Datasets as in-memory tensors: a registry of torchvision readers, fixed splits, on-device batching.

Contract (DESIGN.md): ``load(name, split, root=None, subset=None, seed=0) -> (images, labels)`` with
``images`` uint8 ``[N, C, H, W]`` and ``labels`` int64 ``[N]``. Splits: ``train`` (official training
set minus ``val``), ``val`` (``val_size`` images held out of the official training set, chosen by
``seed``) and ``test`` (official test set).

Where the files come from, in order: ``root`` argument (CLI ``--data-dir``), ``$TUNE_DIV_DATA``, the
user cache ``$TUNE_DIV_CACHE`` or ``~/.cache/tune_div/data``. A read-only folder holding only the
original archives (torchvision's ``raw/`` layout for MNIST, the ``.tar.gz`` for CIFAR) works: the
archives are copied into the writable cache, where torchvision verifies their md5 and unpacks them
without touching the network.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from .compat import import_torchvision
from .errors import DataError
from .registry import Registry

DEFAULT_VAL_SIZE = 5000


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    torchvision_class: str
    folder: str  # folder torchvision uses under its root (holds raw/ or the extracted batches)
    archives: tuple[str, ...]  # files a user may provide, relative to the root
    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: bool  # random crop (padding 4) + horizontal flip during training


DATASETS: Registry[DatasetInfo] = Registry("dataset")


def _register(info: DatasetInfo) -> None:
    DATASETS.register(info.name)(info)


_MNIST_RAW = tuple(
    f"raw/{n}"
    for n in (
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    )
)
_register(DatasetInfo("mnist", "MNIST", "MNIST", tuple(f"MNIST/{f}" for f in _MNIST_RAW), 10, 1, 28,
                      (0.1307,), (0.3081,), False))
_register(DatasetInfo("fashion_mnist", "FashionMNIST", "FashionMNIST",
                      tuple(f"FashionMNIST/{f}" for f in _MNIST_RAW), 10, 1, 28, (0.2860,), (0.3530,), False))
_register(DatasetInfo("cifar10", "CIFAR10", "cifar-10-batches-py", ("cifar-10-python.tar.gz",), 10, 3, 32,
                      (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), True))
_register(DatasetInfo("cifar100", "CIFAR100", "cifar-100-python", ("cifar-100-python.tar.gz",), 100, 3, 32,
                      (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), True))


def names() -> list[str]:
    return DATASETS.names()


def info(name: str) -> DatasetInfo:
    return DATASETS.get(name)


def cache_dir() -> Path:
    return Path(os.environ.get("TUNE_DIV_CACHE", Path.home() / ".cache" / "tune_div")) / "data"


def resolve_root(root: str | os.PathLike | None = None) -> Path:
    """``root`` if given, else ``$TUNE_DIV_DATA``, else the user cache."""
    if root:
        return Path(root).expanduser()
    env = os.environ.get("TUNE_DIV_DATA")
    return Path(env).expanduser() if env else cache_dir()


def _download_allowed() -> bool:
    return os.environ.get("TUNE_DIV_OFFLINE", "0").lower() not in ("1", "true", "yes")


def _how_to_provide(meta: DatasetInfo) -> str:
    return (f"put {', '.join(meta.archives)} under a folder and pass it with --data-dir "
            "or TUNE_DIV_DATA (e.g. TUNE_DIV_DATA=../shared/data)")


def _open_torchvision(meta: DatasetInfo, root: Path, train: bool, download: bool):
    tv = import_torchvision()
    cls = getattr(tv.datasets, meta.torchvision_class)
    return cls(root=str(root), train=train, download=download)


def _prepare_cache(meta: DatasetInfo, source: Path, cache: Path) -> None:
    """Copy the dataset's archives from ``source`` into ``cache`` (skipping ones already copied)."""
    for rel in meta.archives:
        dst = cache / rel
        if not dst.is_file() or dst.stat().st_size != (source / rel).stat().st_size:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source / rel, dst)


def _expected_md5(meta: DatasetInfo) -> dict[str, str]:
    """Archive path (relative to the root) -> md5, as listed in torchvision's own dataset class."""
    cls = getattr(import_torchvision().datasets, meta.torchvision_class)
    if hasattr(cls, "resources"):
        return {f"{meta.folder}/raw/{fn}": md5 for fn, md5 in cls.resources}
    return {cls.filename: cls.tgz_md5}


def _verify_archives(meta: DatasetInfo, root: Path) -> None:
    from torchvision.datasets.utils import check_integrity

    for rel, md5 in _expected_md5(meta).items():
        if not check_integrity(str(root / rel), md5):
            raise DataError(f"dataset '{meta.name}': {root / rel} is corrupt (md5 is not {md5}); "
                            "replace it with the original file")


def _read_official(name: str, train: bool, root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    meta = info(name)
    cache = cache_dir()
    if root == cache:
        root.mkdir(parents=True, exist_ok=True)
    if not root.is_dir():
        raise DataError(f"data folder {root} for dataset '{name}' does not exist; {_how_to_provide(meta)}")
    looked = [root]
    dataset = None
    try:
        # 1. Already unpacked under root (works read-only: reading writes nothing).
        try:
            dataset = _open_torchvision(meta, root, train, download=False)
        except (RuntimeError, OSError):
            pass
        # 2. The original archives under root: torchvision verifies their md5 and unpacks them, in root
        #    if it is the cache, else in a writable copy in the cache (no network is needed for this).
        if dataset is None and all((root / a).is_file() for a in meta.archives):
            _verify_archives(meta, root)
            if root.resolve() != cache.resolve():
                looked.append(cache)
                _prepare_cache(meta, root, cache)
            dataset = _open_torchvision(meta, cache, train, download=True)
        # 3. Nothing there: download into root (online machines only).
        elif dataset is None and _download_allowed() and os.access(root, os.W_OK):
            dataset = _open_torchvision(meta, root, train, download=True)
    except DataError:
        raise
    except Exception as exc:  # torchvision raises many types (URLError, RuntimeError, OSError)
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(
            f"dataset '{name}' is missing or corrupt ({msg}); looked in {', '.join(map(str, looked))}; "
            f"{_how_to_provide(meta)}"
        ) from None
    if dataset is None:
        raise DataError(
            f"dataset '{name}' not found; looked in {', '.join(map(str, looked))}; {_how_to_provide(meta)}"
        )
    images = dataset.data
    images = torch.from_numpy(np.asarray(images)) if not isinstance(images, torch.Tensor) else images
    if images.ndim == 3:  # MNIST-like [N, H, W]
        images = images.unsqueeze(1)
    else:  # CIFAR [N, H, W, C]
        images = images.permute(0, 3, 1, 2)
    labels = torch.as_tensor(np.asarray(dataset.targets), dtype=torch.int64)
    return images.contiguous(), labels


_MEMO: dict[tuple[str, bool, str], tuple[torch.Tensor, torch.Tensor]] = {}


def _official(name: str, train: bool, root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    key = (name, train, str(root.resolve()) if root.exists() else str(root))
    if key not in _MEMO:
        _MEMO[key] = _read_official(name, train, root)
    return _MEMO[key]


def split_indices(n_train: int, val_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of (train, val) in the official training set: a seeded permutation, val taken first."""
    if not 0 < val_size < n_train:
        raise ValueError(f"val_size must be in 1..{n_train - 1}, got {val_size}")
    perm = torch.randperm(n_train, generator=torch.Generator().manual_seed(seed))
    return perm[val_size:].sort().values, perm[:val_size].sort().values


def load(name: str, split: str, root: str | os.PathLike | None = None, subset: int | None = None,
         seed: int = 0, val_size: int = DEFAULT_VAL_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (uint8 ``[N, C, H, W]``) and labels (int64 ``[N]``) of one split.

    ``subset=N`` keeps a seeded random N of the split (all of it if N is larger).
    """
    info(name)  # unknown name -> ValueError naming the choices
    if split not in ("train", "val", "test"):
        raise ValueError(f"unknown split '{split}'; choose one of: train, val, test")
    if subset is not None and subset <= 0:
        raise ValueError(f"subset must be a positive number of images, got {subset}")
    images, labels = _official(name, split != "test", resolve_root(root))
    if split != "test":
        train_idx, val_idx = split_indices(len(labels), val_size, seed)
        idx = train_idx if split == "train" else val_idx
        images, labels = images[idx], labels[idx]
    if subset is not None and subset < len(labels):
        keep = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed + 1))[:subset]
        keep = keep.sort().values
        images, labels = images[keep], labels[keep]
    return images, labels


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [0, 1]; float input is returned as float32 unchanged."""
    return images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()


def augment_crop_flip(x: torch.Tensor, generator: torch.Generator | None = None, padding: int = 4) -> torch.Tensor:
    """Per-sample random crop (zero padding ``padding``) and horizontal flip of a batch ``[B, C, H, W]``.

    Done on the batch's device with index arithmetic, so no worker processes are needed.
    """
    b, _, h, w = x.shape
    dev = x.device
    padded = torch.nn.functional.pad(x, (padding,) * 4)
    oy = torch.randint(0, 2 * padding + 1, (b,), generator=generator, device="cpu").to(dev)
    ox = torch.randint(0, 2 * padding + 1, (b,), generator=generator, device="cpu").to(dev)
    flip = torch.rand(b, generator=generator, device="cpu").to(dev) < 0.5
    rows = oy[:, None] + torch.arange(h, device=dev)[None, :]  # [B, H]
    cols = ox[:, None] + torch.arange(w, device=dev)[None, :]  # [B, W]
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    bidx = torch.arange(b, device=dev)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[bidx, rows[:, :, None], cols[:, None, :]]  # [B, H, W, C]
    return out.permute(0, 3, 1, 2).contiguous()


class TensorLoader:
    """Batches of an in-memory split on one device: float images in [0, 1] and int64 labels.

    Shuffling uses its own generator (seeded per epoch by the caller) so runs are reproducible.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, shuffle: bool = False,
                 augment: bool = False, device: str | torch.device = "cpu", drop_last: bool = False,
                 memory_format: torch.memory_format = torch.contiguous_format):
        self.images = images.to(device)
        self.labels = labels.to(device)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.augment = augment
        self.drop_last = drop_last
        self.memory_format = memory_format
        self.generator = torch.Generator()

    def set_epoch(self, seed: int) -> None:
        self.generator.manual_seed(seed)

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.labels)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        order = order.to(self.images.device)
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            x = to_float(self.images[idx])
            if self.augment:
                x = augment_crop_flip(x, self.generator)
            yield x.contiguous(memory_format=self.memory_format), self.labels[idx]
