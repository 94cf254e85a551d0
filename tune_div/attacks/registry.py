"""The attack registry; each entry is an :class:`~tune_div.attacks.base.Attack` subclass."""

from ..registry import Registry

ATTACKS = Registry("attack")
register_attack = ATTACKS.register
