"""The training precision: ``fp32``, ``tf32`` (float32 storage, TF32 tensor-core matmuls and
convolutions on CUDA) or ``bf16`` (autocast to bfloat16), and ``auto`` (the device's measured default,
``tune_div.device_defaults``: fp32 until a device check has shown TF32 faster).

:func:`precision_context` applies one for the duration of a block and restores torch's process-wide
TF32 switches afterwards, so a caller's own settings are never changed by training.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from .. import device_defaults

PRECISIONS = ("fp32", "tf32", "bf16")
CHOICES = ("auto", *PRECISIONS)


def resolve_precision(name: str, device: torch.device) -> str:
    return device_defaults.precision(device.type) if name == "auto" else name


@contextlib.contextmanager
def precision_context(name: str, device: torch.device) -> Iterator[None]:
    """Run the block at precision ``name`` on ``device``. On a CPU, ``tf32`` is plain float32 (TF32 is a
    CUDA tensor-core format) and ``bf16`` is CPU autocast."""
    name = resolve_precision(name, device)
    if device.type != "cuda":
        with torch.autocast("cpu", dtype=torch.bfloat16) if name == "bf16" else contextlib.nullcontext():
            yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = name == "tf32"
    try:
        with torch.autocast("cuda", dtype=torch.bfloat16) if name == "bf16" else contextlib.nullcontext():
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
