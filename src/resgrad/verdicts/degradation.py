"""Degradation: does the deepest net train worse than the shallowest (He et al. 2015 Fig. 1, Fig. 6),
and a ResNet's error beside He et al. 2015 Table 6. Inputs are the records of results/degradation.py.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from ..results.degradation import DepthRow
from ._base import Relation, finite

__all__ = ['DEGRADE_MARGIN', 'DEGRADE_SDS', 'TABLE6_TOLERANCE', 'DegradationVerdict', 'degradation_verdict', 'Table6Verdict', 'table6_verdict']

# Degradation: the deepest net's train error exceeds the shallowest's by more than 1 point
# (the resolution of a 1,000-example MNIST-1D evaluation is 0.1 point; 1 point is well above it) ...
DEGRADE_MARGIN = 0.01
# ... and by more than 2 standard deviations of that difference over seeds (about a 95% margin).
DEGRADE_SDS = 2.0
# Table 6: a ResNet's CIFAR-10 test error within 2 points of He et al. 2015's counts as a
# reproduction (their ResNet-110 varied by 0.16 std over 5 runs; recipes differ in detail).
TABLE6_TOLERANCE = 0.02


@dataclass(frozen=True)
class DegradationVerdict:
    """Does the deepest net train worse than the shallowest (He et al. 2015 Fig. 1, Fig. 6)?

    ``relation``: for plain nets "agrees" when they degrade; for residual nets "agrees"
    when they do not.
    """

    arch: str
    depths: tuple[int, ...]
    train_errors: tuple[float, ...]  # mean over seeds, per depth
    seeds: int
    first: float
    last: float
    change: float  # last - first
    std: float  # std of that difference: hypot of the two seed stds
    margin: float  # max(DEGRADE_MARGIN, DEGRADE_SDS * std)
    degraded: bool  # change > margin
    relation: Relation


def degradation_verdict(table: Sequence[DepthRow], arch: Literal["plain", "residual"]) -> DegradationVerdict | None:
    """Judge degradation on the finite train errors of ``arch`` (None with fewer than two depths)."""
    cells = [(t.depth, getattr(t, arch)) for t in sorted(table, key=lambda t: t.depth)
             if finite(getattr(t, arch).train_error)]
    if len(cells) < 2:
        return None
    (_, c0), (_, c1) = cells[0], cells[-1]
    e0, e1 = float(c0.train_error), float(c1.train_error)
    sd = math.hypot(c0.train_error_std if finite(c0.train_error_std) else 0.0,
                    c1.train_error_std if finite(c1.train_error_std) else 0.0)
    margin = max(DEGRADE_MARGIN, DEGRADE_SDS * sd)
    degraded = e1 - e0 > margin
    relation: Relation = ("agrees" if degraded else "contradicts") if arch == "plain" else (
        "contradicts" if degraded else "agrees")
    return DegradationVerdict(arch, tuple(d for d, _ in cells), tuple(float(c.train_error) for _, c in cells),
                              c1.n_seeds, e0, e1, e1 - e0, sd, margin, degraded, relation)


@dataclass(frozen=True)
class Table6Verdict:
    """A ResNet's test error beside He et al. 2015 Table 6 (CIFAR-10 only)."""

    depth: int
    measured: float | None
    published: float | None
    difference: float | None  # measured - published
    tolerance: float  # TABLE6_TOLERANCE
    relation: Relation | None  # None: not CIFAR-10, no published figure, or non-finite


def table6_verdict(depth: int, measured: float | None, published: float | None, cifar10: bool) -> Table6Verdict:
    """agrees when within TABLE6_TOLERANCE of the published error; compared on CIFAR-10 only."""
    if not (cifar10 and published is not None and finite(measured)):
        return Table6Verdict(depth, measured, published, None, TABLE6_TOLERANCE, None)
    assert measured is not None
    diff = measured - published
    return Table6Verdict(depth, measured, published, diff, TABLE6_TOLERANCE,
                         "agrees" if abs(diff) <= TABLE6_TOLERANCE else "contradicts")
