"""Compatibility shims for the CPU-only torch of offline development machines.

Two known failures, each patched only when it actually happens (on a CUDA machine with matching
wheels both imports succeed and nothing here touches them):

1. ``import torchvision`` with the CUDA build of torchvision 0.28.0 on CPU torch 2.13.0: the compiled
   ``torchvision._C`` cannot load, and ``torchvision._meta_registrations`` then registers fake kernels
   for ``torchvision::nms`` / ``torchvision::qnms``, operators that only ``_C`` defines, raising
   ``RuntimeError: operator torchvision::nms does not exist``. The shim defines those two operator
   schemas (with kernels that raise a clear error if ever called) and imports torchvision again. Only
   the detection ops are affected; datasets and transforms, all tune_div uses, work normally.
2. ``import advertorch.attacks`` with advertorch 0.2.3 on torch >= 1.13: it imports
   ``torch.autograd.gradcheck.zero_gradients``, removed from torch. The shim restores that small
   function (its historical definition: zero ``.grad`` of a tensor or of each tensor in an iterable)
   and imports advertorch again.

Call :func:`import_torchvision` / :func:`import_advertorch` instead of importing them directly.
:data:`APPLIED` records which shims were needed in this process.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable
from types import ModuleType

import torch

APPLIED: set[str] = set()

_TORCHVISION_MISSING_OP = "torchvision::nms does not exist"
_ADVERTORCH_MISSING = "zero_gradients"
_torchvision_library = None  # keeps the torch.library.Library defining the stub ops alive


def _purge(package: str) -> None:
    for name in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
        del sys.modules[name]


def _define_torchvision_stub_ops() -> None:
    global _torchvision_library
    if _torchvision_library is not None:
        return
    lib = torch.library.Library("torchvision", "DEF")
    for op in ("nms", "qnms"):
        lib.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")

        def unavailable(dets, scores, iou_threshold, _op=op):
            raise RuntimeError(
                f"torchvision::{_op} is unavailable: torchvision's compiled ops do not load on this "
                "CPU-only torch (see tune_div/compat.py)"
            )

        lib.impl(op, unavailable, "CompositeExplicitAutograd")
    _torchvision_library = lib


def import_torchvision(importer: Callable[[str], ModuleType] = importlib.import_module) -> ModuleType:
    """Import torchvision, defining its missing detection-op schemas only if the import fails on them."""
    try:
        return importer("torchvision")
    except RuntimeError as exc:
        if _TORCHVISION_MISSING_OP not in str(exc):
            raise
    _purge("torchvision")
    _define_torchvision_stub_ops()
    APPLIED.add("torchvision")
    return importer("torchvision")


def zero_gradients(x) -> None:
    """The helper removed from ``torch.autograd.gradcheck`` (torch < 1.13 behaviour)."""
    if isinstance(x, torch.Tensor):
        if x.grad is not None:
            x.grad.detach_()
            x.grad.zero_()
    elif isinstance(x, Iterable):
        for elem in x:
            zero_gradients(elem)


def import_advertorch(importer: Callable[[str], ModuleType] = importlib.import_module) -> ModuleType:
    """Import ``advertorch.attacks``, restoring ``zero_gradients`` only if the import fails on it."""
    import_torchvision()  # advertorch.functional imports torchvision.transforms
    try:
        return importer("advertorch.attacks")
    except ImportError as exc:
        if _ADVERTORCH_MISSING not in str(exc):
            raise
    _purge("advertorch")
    # `import torch.autograd.gradcheck as m` would bind the function of that name, not the module.
    gradcheck = importlib.import_module("torch.autograd.gradcheck")
    gradcheck.zero_gradients = zero_gradients  # type: ignore[attr-defined]  # restored on purpose
    APPLIED.add("advertorch")
    return importer("advertorch.attacks")


def import_torchattacks(importer: Callable[[str], ModuleType] = importlib.import_module) -> ModuleType:
    """Import torchattacks (it imports torchvision, which may need the shim above)."""
    import_torchvision()
    return importer("torchattacks")
