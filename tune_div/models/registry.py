"""The architecture registry; each factory builds one member from keyword arguments."""

from ..registry import Registry

MODELS = Registry("architecture")
register_model = MODELS.register
