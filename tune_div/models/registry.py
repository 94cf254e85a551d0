"""The architecture registry; each factory builds one member from keyword arguments."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..registry import Registry

# name -> a factory of one member from keyword arguments
MODELS: Registry[Callable[..., Any]] = Registry("architecture")
register_model = MODELS.register
