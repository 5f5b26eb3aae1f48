"""What every verdict module shares: the relation to a paper, the flow labels, a finiteness test.

A record's ``relation`` is "agrees", "partly", "contradicts" (with the paper named in its
docstring) or None where no comparison can be made (non-finite numbers, too few points).
"""

from __future__ import annotations

import math
from typing import Literal

__all__ = ["Relation", "FlowLabel", "MIN_FIT_POINTS", "finite"]

Relation = Literal["agrees", "partly", "contradicts"]
FlowLabel = Literal["vanishing", "healthy", "exploding", "non-finite"]

# Fewest points a log-linear fit or a correlation is drawn from (two points always fit a line).
MIN_FIT_POINTS = 3


def finite(x: float | None) -> bool:
    """True for a finite number (None, NaN and Inf are not)."""
    return x is not None and math.isfinite(x)
