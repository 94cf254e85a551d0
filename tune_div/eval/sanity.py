"""Gradient-masking sanity flags (docs/flags.md states each threshold and what to do).

:func:`sanity_checks` measures the numbers behind the flags on a few points (FGSM and PGD at ε, PGD at
ε/2 and at ε = 1, the share of vanishing input gradients); :func:`sanity_flags` turns them, and the
white-box / black-box accuracies of an evaluation, into named flags; :func:`proxy_inflation_flags`
compares an attack (the search's proxy, say) with the audit on the same points. Which attack is iterative and which
single-step attack it must beat are the attacks' own declarations (``Attack.single_step``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .. import attacks
from .points import ATTACK_BATCH, accuracy, craft

FLAGS_DOC = "docs/flags.md"

# Thresholds of the sanity flags (docs/flags.md explains each).
TOL = 0.02  # accuracy differences below 2 points are noise on 1000 points
LARGE_EPS = 1.0  # at ε = 1 (L∞, [0, 1] images) an attacker can draw any image at all
LARGE_EPS_MAX_ACC = 0.10
VANISHING_GRAD = 1e-10  # L∞ norm of the input gradient of the log-probability margin
VANISHING_SHARE = 0.20
PROXY_INFLATION = 0.05  # an attack's accuracy this far above the audit's on the same points: not trusted
SANITY_N = 200


def vanishing_gradient_share(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Share of points whose input gradient of the log-probability margin max_{j≠y} log p_j − log p_y
    has an L∞ norm below VANISHING_GRAD (a margin in log space does not saturate like cross-entropy)."""
    was = model.training
    model.eval()
    shares = []
    for i in range(0, len(x), ATTACK_BATCH):
        xb = x[i : i + ATTACK_BATCH].clone().requires_grad_(True)
        yb = y[i : i + ATTACK_BATCH]
        with torch.enable_grad():
            logp = model(xb)
            true = logp.gather(1, yb[:, None]).squeeze(1)
            other = logp.masked_fill(nn.functional.one_hot(yb, logp.shape[1]).bool(), float("-inf")).amax(1)
            (g,) = torch.autograd.grad((other - true).sum(), xb)
        shares.append((g.flatten(1).abs().amax(1) < VANISHING_GRAD).float())
    model.train(was)
    return float(torch.cat(shares).mean())


def sanity_checks(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> dict[str, Any]:
    """The numbers behind the flags, on the first SANITY_N points: FGSM and PGD at ``eps``, PGD at
    ``eps/2`` and at LARGE_EPS, and the share of vanishing input gradients."""
    x, y = x[:SANITY_N], y[:SANITY_N]
    pgd = {
        e: accuracy(model, craft("pgd", model, x, y, e, {"steps": 20 if e == LARGE_EPS else 10}), y)
        for e in (eps / 2, eps, LARGE_EPS)
    }
    return {
        "n": len(y),
        "eps": eps,
        "fgsm_acc": accuracy(model, craft("fgsm", model, x, y, eps), y),
        "pgd_acc": pgd[eps],
        "pgd_curve": {str(e): a for e, a in sorted(pgd.items())},
        "large_eps": LARGE_EPS,
        "large_eps_pgd_acc": pgd[LARGE_EPS],
        "vanishing_gradient_share": vanishing_gradient_share(model, x, y),
        "thresholds": {
            "tolerance": TOL,
            "large_eps_max_acc": LARGE_EPS_MAX_ACC,
            "proxy_inflation": PROXY_INFLATION,
            "vanishing_grad": VANISHING_GRAD,
            "vanishing_share": VANISHING_SHARE,
        },
    }


def make_flag(name: str, message: str, **numbers) -> dict[str, Any]:
    return {"name": name, "message": message, "doc": f"{FLAGS_DOC}#{name}", **numbers}


def proxy_inflation_flags(
    white: dict[str, dict[str, float]] | None, audit: dict[str, float] | None
) -> list[dict[str, Any]]:
    """``proxy_inflated`` for every attack whose accuracy ``{attack: {str(eps): acc}}`` exceeds the audit's
    robust accuracy ``{str(eps): acc}`` on the same points by more than PROXY_INFLATION."""
    flags = []
    for attack, per_eps in (white or {}).items():
        for eps, acc in per_eps.items():
            ref = (audit or {}).get(eps)
            if ref is not None and acc > ref + PROXY_INFLATION:
                flags.append(
                    make_flag(
                        "proxy_inflated",
                        f"{attack} leaves {acc:.3f} at eps={eps} but the audit leaves {ref:.3f}: "
                        f"{attack} overstates robustness here",
                        attack=attack,
                        eps=float(eps),
                        acc=acc,
                        audit_acc=ref,
                    )
                )
    return flags


def sanity_flags(
    checks: dict[str, Any],
    white: dict[str, dict[str, float]] | None = None,
    black: dict[str, dict[str, float]] | None = None,
) -> list[dict[str, Any]]:
    """The gradient-masking flags (docs/flags.md), from :func:`sanity_checks` and, where given, the
    white-box and black-box accuracies ``{attack: {str(eps): acc}}`` of an evaluation."""
    flags: list[dict[str, Any]] = []

    def flag(name: str, message: str, **numbers):
        flags.append(make_flag(name, message, **numbers))

    pairs = [("pgd", "fgsm", str(checks["eps"]), checks["pgd_acc"], checks["fgsm_acc"])]
    curves = {"pgd (sanity)": checks["pgd_curve"]}
    white = white or {}
    for attack, per_eps in white.items():
        single = attacks.ATTACKS.get(attack).single_step if attack in attacks.ATTACKS else None
        if single and single in white:
            pairs += [(attack, single, e, a, white[single][e]) for e, a in per_eps.items() if e in white[single]]
        curves[attack] = per_eps
    for attack, single, eps, acc, ref in pairs:
        if acc > ref + TOL:
            flag(
                "iterative_weaker_than_single_step",
                f"{attack} leaves {acc:.3f} at eps={eps} but one-step {single} leaves {ref:.3f}",
                attack=attack,
                eps=float(eps),
                acc=acc,
                single_step_acc=ref,
            )
    for attack, per_eps in (white or {}).items():
        for eps, acc in per_eps.items():
            ref = (black or {}).get(attack, {}).get(eps)
            if ref is not None and acc > ref + TOL:
                flag(
                    "white_box_weaker_than_transfer",
                    f"white-box {attack} leaves {acc:.3f} at eps={eps} but transfer leaves {ref:.3f}",
                    attack=attack,
                    eps=float(eps),
                    acc=acc,
                    transfer_acc=ref,
                )
    for attack, per_eps in curves.items():
        ordered = sorted(per_eps.items(), key=lambda kv: float(kv[0]))
        for (e1, a1), (e2, a2) in zip(ordered, ordered[1:]):
            if a2 > a1 + TOL:
                flag(
                    "accuracy_increases_with_eps",
                    f"{attack}: accuracy rises from {a1:.3f} at eps={e1} to {a2:.3f} at eps={e2}",
                    attack=attack,
                    eps=float(e2),
                    acc=a2,
                    previous_acc=a1,
                )
    if checks["large_eps_pgd_acc"] > LARGE_EPS_MAX_ACC:
        flag(
            "not_zero_at_large_eps",
            f"PGD at eps={LARGE_EPS} (any image reachable) still leaves {checks['large_eps_pgd_acc']:.3f} accuracy",
            eps=LARGE_EPS,
            acc=checks["large_eps_pgd_acc"],
        )
    if checks["vanishing_gradient_share"] > VANISHING_SHARE:
        flag(
            "vanishing_input_gradients",
            f"input gradients vanish for {checks['vanishing_gradient_share']:.0%} of the points",
            share=checks["vanishing_gradient_share"],
        )
    return flags
