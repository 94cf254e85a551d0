"""Evaluation points and the three operations every threat model is made of.

Subset policy: a fixed, seeded subset of ``n`` points of a split (``n=None`` means all of it), never
filtered to correctly classified points: every number is plain (robust) accuracy.

- :func:`eval_subset` ``(dataset, split, n, seed, root) -> (x float [N, C, H, W] in [0, 1], y int64 [N])``
- :func:`accuracy` ``(model, x, y) -> float`` (the model's argmax against ``y``, eval mode, in batches)
- :func:`craft` ``(attack, model, x, y, eps, options) -> x_adv`` (in batches, optional progress callback)
- :func:`audit` ``(model, x, y, eps, preset) -> AuditReport`` (the strong adaptive suite, in batches)
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .. import attacks, data
from ..errors import UserError

DEFAULT_N = 1000
ATTACK_BATCH = 500


def eval_subset(
    dataset: str, split: str, n: int | None = DEFAULT_N, seed: int = 0, root: str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed, seeded subset of ``n`` points of ``split`` as float [0, 1] images and labels."""
    if n is not None and n <= 0:
        raise UserError(f"n must be a positive number of points or 'all', got {n}")
    images, labels = data.load(dataset, split, root, subset=n, seed=seed)
    return data.to_float(images), labels


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    was = model.training
    model.eval()
    out = torch.cat([model(x[i : i + batch]).argmax(1) for i in range(0, len(x), batch)])
    model.train(was)
    return out


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((predict(model, x) == y).float().mean())


def craft(
    attack: str,
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    options: dict | None = None,
    batch: int = ATTACK_BATCH,
    progress: Callable[[int], None] | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """Adversarial examples of ``x`` against ``model``, in batches. The attack's random draws (PGD's
    random start, R-FGSM's step) come from torch's generator seeded with ``seed`` inside a fork of the
    caller's, so the same call gives the same examples whatever ran before it, and the caller's random
    state is left as it was."""
    atk = attacks.get(attack)
    out = []
    with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
        torch.manual_seed(seed)
        for i in range(0, len(x), batch):
            out.append(atk(model, x[i : i + batch], y[i : i + batch], eps, **(options or {})))
            if progress:
                progress(len(out[-1]))
    return torch.cat(out) if out else x.clone()


def audit(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    preset: str = "fast",
    options: dict | None = None,
    batch: int = ATTACK_BATCH,
    progress: Callable[[int], None] | None = None,
) -> attacks.AuditReport:
    """The audit suite (``tune_div.attacks.audit``, docs/audit.md) on ``(x, y)`` at ``eps``, in batches;
    ``progress(k)`` counts points × components as they finish."""
    auditor = attacks.get("audit")
    assert isinstance(auditor, attacks.audit.Audit)
    step = (lambda component, k: progress(k)) if progress else None
    reports = [
        auditor.report(model, x[i : i + batch], y[i : i + batch], eps, progress=step, preset=preset, **(options or {}))
        for i in range(0, len(x), batch)
    ]
    return attacks.AuditReport.merge(reports)
