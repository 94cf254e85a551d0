"""Plots of searches: one search's trials and front (``pareto.png``), several searches' fronts."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def pareto_plot(
    rows: list[dict[str, Any]],
    table: dict[str, Any],
    path: Path,
    title: str,
    baseline: dict[str, Any] | None = None,
    robust_note: str = "",
) -> Path:
    """All trials, the front highlighted (line + filled markers), flagged trials marked with x, and the
    naive baseline (the undefended ensemble of the same budget) as a black star."""
    plt = _pyplot()
    xk, yk = table["objectives"]
    fig, ax = plt.subplots(figsize=(6, 4.5))
    groups: dict[str, list[tuple[float, float]]] = {"other": [], "flagged": [], "infeasible": []}
    for r in rows:
        if r.get(xk) is None or r.get(yk) is None or r.get("pareto"):
            continue
        groups[
            "flagged"
            if r.get("eligibility") == "flagged"
            else "infeasible"
            if r.get("eligibility") == "infeasible"
            else "other"
        ].append((r[xk], r[yk]))
    style = {
        "other": dict(c="0.6", marker="o", label="trials"),
        "flagged": dict(c="tab:red", marker="x", label="flagged (masking)"),
        "infeasible": dict(c="0.8", marker="s", label="below clean floor"),
    }
    for name, pts in groups.items():
        if pts:
            ax.scatter(*zip(*pts), s=30, **style[name])
    front = sorted(((r[xk], r[yk]) for r in table["front"]), key=lambda p: p[0])
    if front:
        ax.plot(*zip(*front), "-o", c="tab:blue", label=f"Pareto front (HV {table['hypervolume']:.3f})")
    if baseline and baseline.get(xk) is not None and baseline.get(yk) is not None:
        ax.scatter(
            [baseline[xk]], [baseline[yk]], s=140, marker="*", c="black", zorder=5, label="naive baseline (same budget)"
        )
    if table.get("knee"):
        ax.scatter(
            [table["knee"][xk]],
            [table["knee"][yk]],
            s=160,
            facecolors="none",
            edgecolors="tab:orange",
            linewidths=2,
            label="knee",
        )
    ax.set_xlabel(xk.replace("_", " "))
    ax.set_ylabel(yk.replace("_", " ") + (f" ({robust_note})" if robust_note else ""))
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.margins(0.08)
    ax.legend(fontsize=8, loc="best", framealpha=0.6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def fronts_plot(
    fronts: list[tuple[str, list[tuple[float, float]], float]],
    path: Path,
    title: str,
    labels: tuple[str, str] = ("validation clean accuracy", "validation robust accuracy"),
) -> Path:
    """Several searches' fronts in one figure: ``fronts`` is ``[(name, points, hypervolume)]``."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.8))
    for name, points, hv in fronts:
        if points:
            ax.plot(*zip(*sorted(points)), "-o", label=f"{name} (HV {hv:.3f})")
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
