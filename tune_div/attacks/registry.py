"""The attack registry; each entry is an :class:`~tune_div.attacks.base.Attack` subclass."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..registry import Registry

if TYPE_CHECKING:
    from .base import Attack

ATTACKS: Registry[type[Attack]] = Registry("attack")
register_attack = ATTACKS.register
