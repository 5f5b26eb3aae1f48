"""How many paths of each length: ``n`` residual blocks unroll into ``2^n`` paths.

A path picks, at every block, either the branch or the skip; its length is the number of
branches it goes through, so lengths are Binomial(n, 1/2) (Veit, Wilber, Belongie 2016,
arXiv 1605.06431, §3). Counts are exact Python integers (``math.comb``); fractions are
computed exactly and only then rounded to float.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction

from .._checks import is_int

__all__ = ["counts", "fraction", "path_window", "window", "EffectiveRange"]


def _check_n(n: int) -> int:
    if not is_int(n) or n < 0:
        raise ValueError(f"n (number of residual blocks) must be an integer >= 0, received {n!r}")
    return n


def counts(n: int) -> list[int]:
    """Exact number of paths through exactly ``k`` branches, for ``k = 0..n``."""
    _check_n(n)
    return [math.comb(n, k) for k in range(n + 1)]


def fraction(n: int, lo: int, hi: int) -> float:
    """Share of all ``2^n`` paths whose length lies in ``[lo, hi]`` (both included)."""
    _check_n(n)
    lo, hi = max(int(lo), 0), min(int(hi), n)
    if lo > hi:
        return 0.0
    return float(Fraction(sum(math.comb(n, k) for k in range(lo, hi + 1)), 2**n))


def window(mass: Sequence[float], share: float = 0.9) -> tuple[int, int, float]:
    """The shortest contiguous window ``[lo, hi]`` of indices holding ``>= share`` of ``mass``.

    Returns ``(lo, hi, held)`` with ``held`` the share actually held. Among windows of
    the same width the one holding the most wins. Non-finite entries count as zero.
    """
    if not 0.0 < share <= 1.0:
        raise ValueError(f"share must be in (0, 1], received {share!r}")
    m = [float(v) if v is not None and math.isfinite(float(v)) and float(v) > 0 else 0.0 for v in mass]
    if not m:
        raise ValueError("mass is empty: give one value per path length")
    total = math.fsum(m)
    if total == 0.0:
        return 0, len(m) - 1, 0.0
    prefix = [0.0]
    for v in m:
        prefix.append(prefix[-1] + v)
    need = share * total * (1 - 1e-12)  # tolerate rounding in the prefix sums
    for width in range(1, len(m) + 1):
        best = max(range(len(m) - width + 1), key=lambda lo: prefix[lo + width] - prefix[lo])
        held = prefix[best + width] - prefix[best]
        if held >= need:
            return best, best + width - 1, min(held / total, 1.0)
    return 0, len(m) - 1, 1.0  # unreachable: the full window holds everything


def path_window(n: int, share: float = 0.95) -> tuple[int, int]:
    """The shortest window of path lengths holding ``>= share`` of all ``2^n`` paths.

    For ``n = 54`` and 0.95 this is (20, 34); Veit et al. 2016 §3 quote the looser
    "more than 95% of paths go through 19 to 35 modules" (98.0%).
    """
    lo, hi, _ = window(counts(n), share)
    return lo, hi


@dataclass(frozen=True)
class EffectiveRange:
    """The effective paths: the shortest window of lengths holding ``mass`` of the gradient.

    ``held``: share of the gradient magnitude inside ``[lo, hi]``; ``share_of_paths``: share
    of all ``2^n`` paths whose length lies in ``[lo, hi]`` (Veit et al. 2016 §5: 5-17 of
    54 blocks, 0.45% of the paths).
    """

    lo: int
    hi: int
    mass: float
    held: float
    share_of_paths: float
    n: int

    @classmethod
    def from_mass(cls, magnitude: Sequence[float], n: int, mass: float = 0.9) -> EffectiveRange:
        """Window over ``magnitude[k]`` for ``k = 0..n``."""
        if len(magnitude) != n + 1:
            raise ValueError(f"need one magnitude per length 0..{n} ({n + 1}), received {len(magnitude)}")
        lo, hi, held = window(magnitude, mass)
        return cls(lo, hi, float(mass), held, fraction(n, lo, hi), n)

    def to_dict(self) -> dict:
        return asdict(self)
