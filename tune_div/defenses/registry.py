"""The defense registry (one file per defense registers its class here)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..registry import Registry

if TYPE_CHECKING:
    from .base import Defense

DEFENSES: Registry[type[Defense]] = Registry("defense")
register_defense = DEFENSES.register
