"""In-memory batching on the training device: float images in [0, 1], seeded shuffling, augmentation."""

from __future__ import annotations

from collections.abc import Iterator

import torch


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

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        shuffle: bool = False,
        augment: bool = False,
        device: str | torch.device = "cpu",
        drop_last: bool = False,
        memory_format: torch.memory_format = torch.contiguous_format,
    ):
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
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            x = to_float(self.images[idx])
            if self.augment:
                x = augment_crop_flip(x, self.generator)
            yield x.contiguous(memory_format=self.memory_format), self.labels[idx]
