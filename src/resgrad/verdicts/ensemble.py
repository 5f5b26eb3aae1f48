"""The ensemble view (Veit et al. 2016): effective paths, the decay per path length, lesions,
k-block deletion and reordering. Inputs are the records of results/ensemble.py.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from .. import stats
from ..results.ensemble import Deletion, Lesion, Reorder, Window
from ._base import MIN_FIT_POINTS, Relation, finite

__all__ = ['WINDOW_SDS', 'WEAK_TEST_BLOCKS', 'LESION_NOTICEABLE', 'DELETION_PLATEAU', 'DELETION_DIP', 'REORDER_CORRELATION',
           'VEIT_DELETED_SHARE', 'VEIT_DELETED_ERROR', 'VEIT_INTACT_ERROR', 'VEIT_CHANCE', 'VEIT_WAY',
           'DELETION_WAY_TOLERANCE', 'DELETION_TRAINED_MARGIN', 'WindowVerdict', 'weighted_length', 'window_verdict', 'DecayVerdict', 'decay_verdict', 'LesionVerdict', 'lesion_verdict', 'DeletionVerdict', 'deletion_verdict', 'ReorderVerdict', 'reorder_verdict']

# Effective paths: the magnitude-weighted mean path length must lie more than 2 sd below a
# random path's mean (Binomial(n, 1/2): n/2 ± sqrt(n)/2) to "agree" with Veit et al. 2016.
WINDOW_SDS = 2.0
# With fewer blocks, path lengths barely spread (sd sqrt(n)/2 < 2.3): the window test is weak.
WEAK_TEST_BLOCKS = 20
# Fewest points a log-linear fit or a correlation is drawn from (two points always fit a line).
# A single block's deletion "noticeably" changes test error above +2 points (Veit et al. 2016
# §4 call changes of this order "no noticeable change"; a VGG layer's deletion gives chance).
LESION_NOTICEABLE = 0.02
# The k-deletion curve: its plateau starts where it first comes within 5 points of its
# maximum (typically chance); wobbles on the plateau are trial noise, not a dip ...
DELETION_PLATEAU = 0.05
# ... and before the plateau it "rises smoothly" if no step falls by more than 2 points
# (the spread of a few random deletion trials at one k).
DELETION_DIP = 0.02
# Veit et al. 2016 §4 (Fig. 3): deleting 10 of the 54 blocks of their CIFAR-10 ResNet-110 leaves the
# error around 20%. Compared at the same share of the blocks deleted (10/54) and as a share of the way
# from the intact error to chance, so that nets of other depths and data sets can be set beside it ...
VEIT_DELETED_SHARE = 10 / 54
VEIT_DELETED_ERROR = 0.20
# ... from an intact error of 6.43% (He et al. 2015 Table 6, ResNet-110; Veit et al. trained the same
# recipe) toward chance on CIFAR-10's 10 classes, 90%: about 16% of the way to chance.
VEIT_INTACT_ERROR = 0.0643
VEIT_CHANCE = 0.9
VEIT_WAY = (VEIT_DELETED_ERROR - VEIT_INTACT_ERROR) / (VEIT_CHANCE - VEIT_INTACT_ERROR)
# "Agrees" with that figure: the measured share of the way to chance within 10 points of it (the
# paper reads its ~20% off a plot; 10 points of the way is about 8 points of error on CIFAR-10).
DELETION_WAY_TOLERANCE = 0.10
# The level is compared only for a net more than 5 points better than chance (the margin the
# Transformer verdicts call "trained"): nearer chance there is no way to chance to speak of.
DELETION_TRAINED_MARGIN = 0.05
# Reordering: error "tracks the corruption" when its Pearson correlation with Kendall tau is
# below -0.5 (a strong negative association; Veit et al. 2016 §4 show a smooth monotone rise).
REORDER_CORRELATION = -0.5


@dataclass(frozen=True)
class WindowVerdict:
    """Veit et al. 2016 §5: the gradient comes from paths much shorter than a typical path."""

    n: int
    lo: int
    hi: int
    mass: float  # share of the magnitude the window was asked to hold
    held: float | None
    share_of_paths: float | None
    weighted_length: float | None  # mean path length weighted by gradient magnitude per length
    random_mean: float  # n / 2 (Binomial(n, 1/2))
    random_sd: float  # sqrt(n) / 2
    sds: float  # WINDOW_SDS
    weak: bool  # n < WEAK_TEST_BLOCKS
    relation: Relation | None  # agrees: below mean - sds*sd; partly: below the mean; None: non-finite


def weighted_length(per_length: Sequence[float | None]) -> float | None:
    """The mean path length weighted by gradient magnitude per length (index = length)."""
    pts = [(k, v) for k, v in enumerate(per_length) if finite(v) and v >= 0]  # type: ignore[operator]
    total = math.fsum(v for _, v in pts)  # type: ignore[misc]
    return math.fsum(k * v for k, v in pts) / total if total > 0 else None  # type: ignore[operator]


def window_verdict(n: int, per_length: Sequence[float | None], window: Window) -> WindowVerdict:
    """Judge the effective window from the magnitude per path length 0..n."""
    wl = weighted_length(per_length)
    mid, sd = n / 2, math.sqrt(n) / 2
    relation: Relation | None = (None if wl is None else "contradicts" if wl >= mid else
                                 "agrees" if wl < mid - WINDOW_SDS * sd else "partly")
    return WindowVerdict(n, window.lo, window.hi, window.mass, window.held, window.share_of_paths, wl, mid, sd,
                         WINDOW_SDS, n < WEAK_TEST_BLOCKS, relation)


@dataclass(frozen=True)
class DecayVerdict:
    """Veit et al. 2016 Fig. 6: a single path's gradient magnitude falls exponentially with its length."""

    lengths: tuple[int, ...]  # the lengths fitted (finite, positive means)
    log10_slope: float  # least-squares slope of log10(mean magnitude) on length
    factor_per_block: float  # 10 ** -slope: the magnitude divides by this per extra block
    relation: Relation  # agrees when factor_per_block > 1


def decay_verdict(lengths: Sequence[int], means: Sequence[float | None]) -> DecayVerdict | None:
    """Fit the per-length mean magnitudes (None with fewer than MIN_FIT_POINTS usable ones)."""
    pts = [(k, m) for k, m in zip(lengths, means, strict=False) if finite(m) and m > 0]  # type: ignore[operator]
    if len(pts) < MIN_FIT_POINTS:
        return None
    s = stats.slope([float(k) for k, _ in pts], [math.log10(m) for _, m in pts])  # type: ignore[arg-type]
    factor = 10.0 ** (-s)
    return DecayVerdict(tuple(k for k, _ in pts), s, factor, "agrees" if factor > 1 else "contradicts")


@dataclass(frozen=True)
class LesionVerdict:
    """Veit et al. 2016 §4: deleting one (non-downsampling) residual block causes no noticeable change."""

    model: str | None
    baseline: float
    worst: float  # the largest error after deleting one non-downsampling block
    rise: float  # worst - baseline
    median: float
    downsample_block: int | None  # the downsampling block whose deletion hurts most
    downsample_error: float | None
    noticeable: float  # LESION_NOTICEABLE
    relation: Relation  # agrees when rise <= noticeable
    plain_model: str | None
    plain_baseline: float | None
    plain_median: float | None  # median error after deleting one block of the plain twin


def lesion_verdict(residual: Lesion, plain: Lesion | None = None) -> LesionVerdict | None:
    """Judge the single-block lesions (None without non-downsampling blocks)."""
    normal = [b.error for b in residual.blocks if not b.downsample and finite(b.error)]
    if not normal or not finite(residual.baseline):
        return None
    worst = max(normal)
    down = [b for b in residual.blocks if b.downsample and finite(b.error)]
    wd = max(down, key=lambda b: b.error) if down else None
    pe = [b.error for b in plain.blocks if finite(b.error)] if plain is not None else []
    rise = worst - residual.baseline
    return LesionVerdict(residual.model, residual.baseline, worst, rise, stats.median(normal),
                         wd.block if wd else None, wd.error if wd else None, LESION_NOTICEABLE,
                         "agrees" if rise <= LESION_NOTICEABLE else "contradicts",
                         plain.model if plain is not None else None,
                         plain.baseline if plain is not None and pe else None, stats.median(pe) if pe else None)


@dataclass(frozen=True)
class DeletionVerdict:
    """Veit et al. 2016 §4: error rises smoothly as more random blocks are deleted, to about 20% after
    10 of 54 blocks (VEIT_WAY of the way from the intact error to chance)."""

    k: tuple[int, ...]
    error: tuple[float, ...]  # mean over trials per k
    top: float  # the curve's maximum
    plateau_k: int | None  # first k within DELETION_PLATEAU of the maximum (None: only at the last k)
    smooth: bool  # no drop of more than DELETION_DIP before the plateau
    relation: Relation  # agrees: smooth and within DELETION_WAY_TOLERANCE of Veit's level; partly: smooth
    #                     only (the level differs, or no chance to compare it with); contradicts: not smooth
    at10: float | None
    at20: float | None
    plateau: float  # DELETION_PLATEAU
    dip: float  # DELETION_DIP
    n: int | None = None  # blocks of the net
    chance: float | None = None
    veit_k: float | None = None  # n * VEIT_DELETED_SHARE: the same share of the blocks deleted
    veit_error: float | None = None  # the curve at veit_k (linear between the ks measured)
    way: float | None = None  # (veit_error - error at k = 0) / (chance - error at k = 0)
    paper_way: float = VEIT_WAY
    tolerance: float = DELETION_WAY_TOLERANCE
    near_chance: bool = False  # the intact net is within DELETION_TRAINED_MARGIN of chance: level not compared


def _interpolate(pts: Sequence[tuple[int, float]], x: float) -> float | None:
    for (k0, e0), (k1, e1) in zip(pts, pts[1:], strict=False):
        if k0 <= x <= k1:
            return e0 + (e1 - e0) * (x - k0) / (k1 - k0) if k1 != k0 else e0
    return None


def deletion_verdict(d: Deletion, n: int | None = None, chance: float | None = None) -> DeletionVerdict | None:
    """Judge the k-deletion curve (None with fewer than two finite points) of a net of ``n`` blocks
    whose chance error is ``chance`` (either None: the level is not compared)."""
    pts = [(int(k), float(m)) for k, m in zip(d.k, d.mean, strict=False) if finite(m)]  # type: ignore[arg-type]
    if len(pts) < 2:
        return None
    top = max(m for _, m in pts)
    cut = next(i for i, (_, m) in enumerate(pts) if m >= top - DELETION_PLATEAU)
    rising = pts[: cut + 1]
    smooth = all(b[1] >= a[1] - DELETION_DIP for a, b in zip(rising, rising[1:], strict=False))
    at = dict(pts)
    veit_k = n * VEIT_DELETED_SHARE if n else None
    veit_error = _interpolate(pts, veit_k) if veit_k is not None else None
    base = at.get(0)
    way = None
    near = base is not None and finite(chance) and chance - base <= DELETION_TRAINED_MARGIN  # type: ignore[operator]
    if veit_error is not None and base is not None and finite(chance) and not near:
        way = (veit_error - base) / (chance - base)  # type: ignore[operator]
    relation: Relation = ("contradicts" if not smooth else
                          "agrees" if way is not None and abs(way - VEIT_WAY) <= DELETION_WAY_TOLERANCE else "partly")
    return DeletionVerdict(tuple(k for k, _ in pts), tuple(m for _, m in pts), top,
                           pts[cut][0] if cut < len(pts) - 1 else None, smooth, relation, at.get(10), at.get(20),
                           DELETION_PLATEAU, DELETION_DIP, n, chance if finite(chance) else None, veit_k,
                           veit_error, way, near_chance=near)


@dataclass(frozen=True)
class ReorderVerdict:
    """Veit et al. 2016 §4: error rises smoothly with the corruption of the block order (Kendall tau)."""

    tau: tuple[float, ...]
    error: tuple[float, ...]
    correlation: float | None  # Pearson of error with tau (None: no spread or non-finite)
    threshold: float  # REORDER_CORRELATION
    relation: Relation  # agrees when correlation < threshold


def reorder_verdict(r: Reorder) -> ReorderVerdict | None:
    """Judge the reordering curve (None with fewer than MIN_FIT_POINTS finite points)."""
    pts = [(float(t), float(m)) for t, m in zip(r.kendall_tau, r.mean, strict=False)
           if finite(t) and finite(m)]  # type: ignore[arg-type]
    if len(pts) < MIN_FIT_POINTS:
        return None
    c = stats.pearson([t for t, _ in pts], [m for _, m in pts])
    corr = c if math.isfinite(c) else None
    ok = corr is not None and corr < REORDER_CORRELATION
    return ReorderVerdict(tuple(t for t, _ in pts), tuple(m for _, m in pts), corr, REORDER_CORRELATION,
                          "agrees" if ok else "contradicts")
