"""The defense registry (one file per defense registers its class here)."""

from ..registry import Registry

DEFENSES = Registry("defense")
register_defense = DEFENSES.register
