"""Reading the official files with torchvision's dataset classes, offline-first.

Where the files come from, in order: ``root`` argument (CLI ``--data-dir``), ``$TUNE_DIV_DATA``, the
user cache ``$TUNE_DIV_CACHE`` or ``~/.cache/tune_div/data``. A read-only folder holding only the
original archives (torchvision's ``raw/`` layout for MNIST, the ``.tar.gz`` for CIFAR) works: the
archives are copied into the writable cache, where torchvision verifies their md5 and unpacks them
without touching the network. ``TUNE_DIV_OFFLINE=1`` forbids download attempts.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..compat import import_torchvision
from ..errors import DataError
from ..files import cache_root
from .catalog import DatasetInfo, info


def cache_dir() -> Path:
    return cache_root() / "data"


def resolve_root(root: str | os.PathLike | None = None) -> Path:
    """``root`` if given, else ``$TUNE_DIV_DATA``, else the user cache."""
    if root:
        return Path(root).expanduser()
    env = os.environ.get("TUNE_DIV_DATA")
    return Path(env).expanduser() if env else cache_dir()


def _download_allowed() -> bool:
    return os.environ.get("TUNE_DIV_OFFLINE", "0").lower() not in ("1", "true", "yes")


def _how_to_provide(meta: DatasetInfo) -> str:
    return (
        f"put {', '.join(meta.archives)} under a folder and pass it with --data-dir "
        "or TUNE_DIV_DATA (e.g. TUNE_DIV_DATA=../shared/data)"
    )


def _open_torchvision(meta: DatasetInfo, root: Path, train: bool, download: bool) -> Any:
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
            raise DataError(
                f"dataset '{meta.name}': {root / rel} is corrupt (md5 is not {md5}); replace it with the original file"
            )


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
        raise DataError(f"dataset '{name}' not found; looked in {', '.join(map(str, looked))}; {_how_to_provide(meta)}")
    images = dataset.data
    images = torch.from_numpy(np.asarray(images)) if not isinstance(images, torch.Tensor) else images
    if images.ndim == 3:  # MNIST-like [N, H, W]
        images = images.unsqueeze(1)
    else:  # CIFAR [N, H, W, C]
        images = images.permute(0, 3, 1, 2)
    labels = torch.as_tensor(np.asarray(dataset.targets), dtype=torch.int64)
    return images.contiguous(), labels


MEMO: dict[tuple[str, bool, str], tuple[torch.Tensor, torch.Tensor]] = {}


def official(name: str, train: bool, root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    key = (name, train, str(root.resolve()) if root.exists() else str(root))
    if key not in MEMO:
        MEMO[key] = _read_official(name, train, root)
    return MEMO[key]
