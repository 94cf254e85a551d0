"""Paper reproductions (a registry): ``python -m tune_div.reproduce <protocol>`` or ``tune-div reproduce``.

A protocol is one file here that subclasses :class:`Protocol` and registers it with
``@register_protocol("name")``, imported below. Each trains the ensembles its paper's table needs
(cached: ``$TUNE_DIV_CACHE/reproduce``), measures them with tune_div's attacks and audit, and writes the
measured numbers next to the paper's (Markdown, CSV, JSON, a plot and an MLflow run). docs/reproduction.md
holds the real runs.
"""

from . import adp_table, budget_check, cldl_table, drelu_table, gal_table, smd_table  # noqa: F401  (registers)
from .base import PROTOCOLS, Protocol, register_protocol


def names(pattern: str | None = None) -> list[str]:
    return PROTOCOLS.names(pattern)


def get(name: str) -> type[Protocol]:
    return PROTOCOLS.get(name)


__all__ = ["PROTOCOLS", "Protocol", "get", "names", "register_protocol"]
