"""Value checks every floor shares (no torch, no resgrad imports): the low and high floors alike may import it."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["is_int", "is_number", "is_positive"]


def is_int(v: Any) -> bool:
    """An integer that is not a bool (``True`` is an ``int`` to Python, never a count to resgrad)."""
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    """A real number (int or float), not a bool."""
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def is_positive(v: Any) -> bool:
    """A finite real number > 0, not a bool."""
    return is_number(v) and math.isfinite(v) and v > 0
