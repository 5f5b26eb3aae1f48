"""Number formatting shared by the findings and the HTML: 3 significant digits, nulls as n/a."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["num", "sig", "pct", "times", "pow10", "NA"]

NA = "n/a"


def num(x: Any) -> float | None:
    """``x`` as a finite float, or None (JSON null, NaN, Inf, strings, missing)."""
    if isinstance(x, bool) or x is None:
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def sig(x: Any, digits: int = 3) -> str:
    """``x`` to ``digits`` significant digits: 4.6e7, 0.0123, 1.23e-5, 12.3; n/a when non-finite."""
    v = num(x)
    if v is None:
        return NA
    if v == 0:
        return "0"
    r = float(f"{v:.{digits}g}")  # round first: 99999 -> 1e5, not "1e+05"
    if 1e-3 <= abs(r) < 1e5:
        return f"{r:g}"
    mant, exp = f"{r:.{digits - 1}e}".split("e")
    mant = mant.rstrip("0").rstrip(".") if "." in mant else mant
    return f"{mant}e{int(exp)}"


def pct(x: Any, digits: int = 3) -> str:
    """A fraction in [0, 1] as a percentage with ``digits`` significant digits: 0.026 -> 2.6%."""
    v = num(x)
    if v is None:
        return NA
    p = 100.0 * v
    if p == 0:
        return "0%"
    if abs(p) < 0.01:
        return f"{sig(p, 2)}%"
    return f"{float(f'{p:.{digits}g}'):g}%"


def times(x: Any) -> str:
    """A ratio as ``4.6e7×``."""
    s = sig(x)
    return s if s == NA else f"{s}×"


def pow10(log10: Any) -> str:
    """``10**log10`` to 3 significant digits, also beyond float range: 1e-400 stays readable."""
    v = num(log10)
    if v is None:
        return NA
    if abs(v) < 300:
        return sig(10.0**v)
    exp = math.floor(v)
    mant = 10.0 ** (v - exp)
    if round(mant, 2) >= 10:
        mant, exp = mant / 10, exp + 1
    return f"{float(f'{mant:.3g}'):g}e{exp}"
