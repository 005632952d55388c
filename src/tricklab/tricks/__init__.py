"""Training tricks, one per file, registered by name. Importing this package registers them all."""
from __future__ import annotations

from . import ema, fgm, freeze, llrd, lora, rdrop  # noqa: F401  (registration)
from .base import Trick

__all__ = ["Trick"]
