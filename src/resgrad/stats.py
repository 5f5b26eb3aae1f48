"""The few statistics resgrad reports, in one place: slopes, confidence intervals, summaries.

Pure Python over lists of floats (no torch), so the experiments and the report share
them. Non-finite inputs give NaN (slopes, correlations) or None (intervals) rather
than an exception: a diverged run is a result to report, not a crash.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Summary", "summary", "seed_stat", "geometric_mean", "clip_interval", "MIN_INTERVAL_VALUES", "mean", "std", "slope", "t_interval", "pearson",
           "median"]


def _finite(xs: Sequence[float | None]) -> list[float]:
    return [float(x) for x in xs if x is not None and math.isfinite(x)]


def mean(xs: Sequence[float]) -> float:
    """Arithmetic mean; NaN for an empty or non-finite input."""
    if not xs or not all(x is not None and math.isfinite(x) for x in xs):
        return float("nan")
    return math.fsum(xs) / len(xs)


def std(xs: Sequence[float]) -> float:
    """Sample standard deviation (n - 1); 0 for one value, NaN for none or a non-finite one."""
    m = mean(xs)
    if not math.isfinite(m):
        return float("nan")
    if len(xs) < 2:
        return 0.0
    return math.sqrt(math.fsum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def median(xs: Sequence[float]) -> float:
    """Median of the finite values (NaN when there are none)."""
    v = sorted(_finite(xs))
    if not v:
        return float("nan")
    mid = len(v) // 2
    return v[mid] if len(v) % 2 else (v[mid - 1] + v[mid]) / 2


def slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of ``ys`` on ``xs``; NaN with fewer than two points, a non-finite
    value or no spread in ``xs``."""
    if len(xs) != len(ys):
        raise ValueError(f"slope needs as many x as y values, received {len(xs)} and {len(ys)}")
    if len(xs) < 2 or not all(v is not None and math.isfinite(v) for v in (*xs, *ys)):
        return float("nan")
    xm, ym = mean(xs), mean(ys)
    sxx = math.fsum((x - xm) ** 2 for x in xs)
    if sxx == 0:
        return float("nan")
    return math.fsum((x - xm) * (y - ym) for x, y in zip(xs, ys, strict=True)) / sxx


def t_interval(xs: Sequence[float], level: float = 0.95) -> tuple[float, float] | None:
    """Student-t confidence interval for the mean of ``xs``; None with fewer than two values
    or a non-finite one (one seed has no spread to build an interval from)."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), received {level!r}")
    n = len(xs)
    if n < 2 or not all(x is not None and math.isfinite(x) for x in xs):
        return None
    from scipy import stats

    m, s = mean(xs), std(xs)
    h = float(stats.t.ppf(0.5 + level / 2, n - 1)) * s / math.sqrt(n)
    return (m - h, m + h)


def pearson(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Pearson correlation; NaN when either side has no spread or a non-finite value."""
    if len(xs) != len(ys):
        raise ValueError(f"pearson needs as many x as y values, received {len(xs)} and {len(ys)}")
    if len(xs) < 2 or not all(v is not None and math.isfinite(v) for v in (*xs, *ys)):
        return float("nan")
    xm, ym = mean(xs), mean(ys)
    sxx = math.fsum((x - xm) ** 2 for x in xs)
    syy = math.fsum((y - ym) ** 2 for y in ys)
    if sxx == 0 or syy == 0:
        return float("nan")
    return math.fsum((x - xm) * (y - ym) for x, y in zip(xs, ys, strict=True)) / math.sqrt(sxx * syy)


@dataclass(frozen=True)
class Summary:
    """Mean and spread of the finite values among ``n`` given."""

    mean: float  # NaN when no value is finite
    std: float  # sample std (n - 1) of the finite values; 0 for one
    n: int  # values given (finite or not)
    n_finite: int  # values that were finite


def summary(xs: Sequence[float | None]) -> Summary:
    """Mean and sample std of the finite values of ``xs`` (a diverged seed is left out, and counted)."""
    v = _finite(xs)
    return Summary(mean(v) if v else float("nan"), std(v) if v else float("nan"), len(xs), len(v))


def seed_stat(values: Sequence[float | None], level: float = 0.95) -> dict[str, Any]:
    """One quantity over a cell's seeds, as ``resgrad.results.sweep.Stat`` holds it: the mean and sample
    std of the finite values, a Student-t interval for the mean at ``level`` (None with fewer than two
    finite values), how many seeds there were and how many were finite, and the values themselves."""
    s = summary(values)
    fin = _finite(values)
    ci = t_interval(fin, level) if len(fin) >= 2 else None
    return {"mean": s.mean, "std": s.std, "ci_low": ci[0] if ci else None, "ci_high": ci[1] if ci else None,
            "level": level, "n": s.n, "n_finite": s.n_finite, "values": list(values)}


def geometric_mean(xs: Sequence[float | None]) -> float | None:
    """10 ** the mean log10 of the finite positive values (ratios span decades); None when there are none."""
    logs = [math.log10(x) for x in _finite(xs) if x > 0]
    return 10 ** mean(logs) if logs else None


# Fewest values a t interval is worth showing from: with two it has one degree of freedom, and its
# half-width is t(0.975, 1) = 12.7 standard errors, wider than the range of most quantities.
MIN_INTERVAL_VALUES = 3


def clip_interval(low: float, high: float, lo_bound: float = 0.0, hi_bound: float = 1.0) -> tuple[float, float]:
    """An interval cut to the possible range of its quantity (an error rate: [0, 1])."""
    if lo_bound > hi_bound:
        raise ValueError(f"clip_interval needs lo_bound <= hi_bound, received {lo_bound!r} > {hi_bound!r}")
    return (min(max(low, lo_bound), hi_bound), max(min(high, hi_bound), lo_bound))
