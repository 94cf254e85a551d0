"""The dataset catalog: every per-dataset fact in one place (docs/design.md, "Where each fact lives").

A new dataset is one :class:`DatasetInfo` registered here (and, if torchvision has no class for it, a
reader in ``readers.py``); training defaults, the search objective's ε and the evaluation ε grid are
read from it everywhere else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..registry import Registry


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    # How to read it.
    torchvision_class: str
    folder: str  # folder torchvision uses under its root (holds raw/ or the extracted batches)
    archives: tuple[str, ...]  # files a user may provide, relative to the root
    # Shapes and normalisation (normalisation happens inside each member).
    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    # The papers' training protocol.
    augment: bool  # random crop (padding 4) + horizontal flip during training
    default_arch: str
    epochs: int
    milestones: tuple[int, ...]  # lr ×0.1 at these epochs
    # Evaluation: the search objective's L∞ radius and the ε grid of robustness curves.
    objective_eps: float
    eps_grid: tuple[float, ...]


DATASETS: Registry[DatasetInfo] = Registry("dataset")


def register(info: DatasetInfo) -> DatasetInfo:
    return DATASETS.register(info.name)(info)


_MNIST_RAW = tuple(
    f"raw/{n}"
    for n in (
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    )
)
_MNIST_LIKE: dict[str, Any] = dict(
    num_classes=10,
    in_channels=1,
    image_size=28,
    augment=False,
    default_arch="lenet5",
    epochs=50,
    milestones=(),
    objective_eps=0.1,
    eps_grid=(0.05, 0.1, 0.15, 0.2, 0.25, 0.3),
)
_CIFAR_LIKE: dict[str, Any] = dict(
    in_channels=3,
    image_size=32,
    augment=True,
    default_arch="resnet20",
    epochs=200,
    milestones=(100, 150),
    objective_eps=0.01,
    eps_grid=(0.01, 0.02, 0.03, 0.04, round(8 / 255, 6)),
)

register(
    DatasetInfo(
        "mnist", "MNIST", "MNIST", tuple(f"MNIST/{f}" for f in _MNIST_RAW), mean=(0.1307,), std=(0.3081,), **_MNIST_LIKE
    )
)
register(
    DatasetInfo(
        "fashion_mnist",
        "FashionMNIST",
        "FashionMNIST",
        tuple(f"FashionMNIST/{f}" for f in _MNIST_RAW),
        mean=(0.2860,),
        std=(0.3530,),
        **_MNIST_LIKE,
    )
)
register(
    DatasetInfo(
        "cifar10",
        "CIFAR10",
        "cifar-10-batches-py",
        ("cifar-10-python.tar.gz",),
        num_classes=10,
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
        **_CIFAR_LIKE,
    )
)
register(
    DatasetInfo(
        "cifar100",
        "CIFAR100",
        "cifar-100-python",
        ("cifar-100-python.tar.gz",),
        num_classes=100,
        mean=(0.5071, 0.4865, 0.4409),
        std=(0.2673, 0.2564, 0.2762),
        **_CIFAR_LIKE,
    )
)


def names(pattern: str | None = None) -> list[str]:
    return DATASETS.names(pattern)


def info(name: str) -> DatasetInfo:
    """The catalog entry of ``name``; unknown names raise a ``UserError`` naming the choices."""
    return DATASETS.get(name)
