"""Small CIFAR files in the real on-disk format (the real dataset is not on these machines).

The pickled batches are what ``torchvision.datasets.CIFAR10`` reads; its md5 list is pointed at the
generated files so its integrity check passes exactly as it would on the real ones.
"""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def write_cifar10(folder: Path, per_batch: int = 4) -> tuple[np.ndarray, list[int]]:
    """cifar-10-batches-py: pickled dicts with "data" [N, 3072] uint8 (channel-major rows) and "labels"."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    all_rows, all_labels = [], []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        rows = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, per_batch).tolist()
        with open(folder / name, "wb") as fh:
            pickle.dump({"data": rows, "labels": labels, "batch_label": name}, fh)
        if name != "test_batch":
            all_rows.append(rows)
            all_labels += labels
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, fh)
    return np.concatenate(all_rows), all_labels


def point_torchvision_md5s_at(monkeypatch, cls, folder: Path):
    monkeypatch.setattr(cls, "train_list", [[n, md5(folder / n)] for n, _ in cls.train_list])
    monkeypatch.setattr(cls, "test_list", [[n, md5(folder / n)] for n, _ in cls.test_list])
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": md5(folder / cls.meta["filename"])})
