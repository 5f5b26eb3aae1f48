"""Judgements on measured numbers: plain functions with named thresholds -> small verdict records.

DESIGN.md ("Runs and results"): judgements (vanishing / healthy / exploding, degraded,
agrees / contradicts a paper) are functions with named thresholds returning verdict
records; the report only words them. Every threshold is a module constant with the
reason for its value. Torch-free: the experiments, the CLI and the report all import it.

A record's ``relation`` is "agrees", "partly", "contradicts" (with the paper named in
its docstring) or None where no comparison can be made (non-finite numbers, too few
points). Records hold the numbers they were judged on, so a sentence needs nothing else.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from . import stats
from .results.degradation import DepthRow
from .results.ensemble import Deletion, Lesion, Reorder, Window
from .results.flow import FlowGroup, ShatteringFit, SpectrumRow
from .results.transformer import FlowRow as TransformerFlowRow
from .results.transformer import LayerLesion, TrainCell

__all__ = [
    "FLOW_THRESHOLD_DECADES", "FLOW_CI_LEVEL", "GROWTH_REDUCED", "DEGRADE_MARGIN", "DEGRADE_SDS",
    "TABLE6_TOLERANCE", "WINDOW_SDS", "WEAK_TEST_BLOCKS", "MIN_FIT_POINTS", "LESION_NOTICEABLE",
    "DELETION_PLATEAU", "DELETION_DIP", "REORDER_CORRELATION", "SHATTER_PLAIN_LOG2_SLOPE",
    "SHATTER_POWER", "SHATTER_POWER_TOLERANCE", "ISOMETRY_FACTOR",
    "Relation", "FlowLabel", "flow_verdict",
    "SkipEffect", "skip_effect", "DeepestFlow", "deepest", "VerdictCounts", "verdict_counts",
    "BnPlainVerdict", "he2015_bn_plain", "Eq5Verdict", "he2016_eq5", "TwinsVerdict", "vanishing_twins",
    "DegradationVerdict", "degradation_verdict", "Table6Verdict", "table6_verdict",
    "WindowVerdict", "window_verdict", "DecayVerdict", "decay_verdict", "LesionVerdict", "lesion_verdict",
    "DeletionVerdict", "deletion_verdict", "ReorderVerdict", "reorder_verdict",
    "ShatteringVerdict", "shattering_verdict", "SpectrumVerdict", "spectrum_verdict",
]

Relation = Literal["agrees", "partly", "contradicts"]
FlowLabel = Literal["vanishing", "healthy", "exploding", "non-finite"]

# -- thresholds ---------------------------------------------------------------------------

# A gradient whose fitted change across the net is at least 2 decades (100x) is called
# vanishing/exploding: the default of experiments/flow.py, large against the seed-to-seed
# spread of a quick grid, small against the tens of decades a sigmoid plain net loses.
FLOW_THRESHOLD_DECADES = 2.0
# The slope's Student-t interval across seeds must exclude 0 at this level (flow.py's default).
FLOW_CI_LEVEL = 0.95
# "The skip reduced the growth": the residual twin's |log10 ratio| is at most this share of
# the plain net's, i.e. at least half the decades of growth are gone (a coarse, visible change).
GROWTH_REDUCED = 0.5
# Degradation: the deepest net's train error exceeds the shallowest's by more than 1 point
# (the resolution of a 1,000-example MNIST-1D evaluation is 0.1 point; 1 point is well above it) ...
DEGRADE_MARGIN = 0.01
# ... and by more than 2 standard deviations of that difference over seeds (about a 95% margin).
DEGRADE_SDS = 2.0
# Table 6: a ResNet's CIFAR-10 test error within 2 points of He et al. 2015's counts as a
# reproduction (their ResNet-110 varied by 0.16 std over 5 runs; recipes differ in detail).
TABLE6_TOLERANCE = 0.02
# Effective paths: the magnitude-weighted mean path length must lie more than 2 sd below a
# random path's mean (Binomial(n, 1/2): n/2 ± sqrt(n)/2) to "agree" with Veit et al. 2016.
WINDOW_SDS = 2.0
# With fewer blocks, path lengths barely spread (sd sqrt(n)/2 < 2.3): the window test is weak.
WEAK_TEST_BLOCKS = 20
# Fewest points a log-linear fit or a correlation is drawn from (two points always fit a line).
MIN_FIT_POINTS = 3
# A single block's deletion "noticeably" changes test error above +2 points (Veit et al. 2016
# §4 call changes of this order "no noticeable change"; a VGG layer's deletion gives chance).
LESION_NOTICEABLE = 0.02
# The k-deletion curve: its plateau starts where it first comes within 5 points of its
# maximum (typically chance); wobbles on the plateau are trial noise, not a dip ...
DELETION_PLATEAU = 0.05
# ... and before the plateau it "rises smoothly" if no step falls by more than 2 points
# (the spread of a few random deletion trials at one k).
DELETION_DIP = 0.02
# Reordering: error "tracks the corruption" when its Pearson correlation with Kendall tau is
# below -0.5 (a strong negative association; Veit et al. 2016 §4 show a smooth monotone rise).
REORDER_CORRELATION = -0.5
# Shattering, plain nets: the lag-1 gradient correlation decays exponentially when its log2
# falls by more than 0.25 per block (Balduzzi et al. 2017: about 2^-L, -1 per layer; a quarter
# of that per block leaves room for finite width and blocks of one or two layers).
SHATTER_PLAIN_LOG2_SLOPE = -0.25
# Shattering, residual nets with BN: correlation about L^(-1/2) (Balduzzi et al. 2017) ...
SHATTER_POWER = -0.5
# ... "close to" meaning a fitted power within 0.25 of -1/2 (halfway to 1/L or to a constant).
SHATTER_POWER_TOLERANCE = 0.25
# Dynamical isometry (Pennington et al. 2017): the Jacobian's singular values all near 1;
# here the 10th and 90th percentiles within a factor 2 of 1.
ISOMETRY_FACTOR = 2.0


def _fin(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


# -- gradient flow ------------------------------------------------------------------------


def flow_verdict(slope: float | None, ci: tuple[float, float] | None, depth: int,
                 threshold_decades: float = FLOW_THRESHOLD_DECADES) -> FlowLabel:
    """vanishing / healthy / exploding / non-finite for one config over its seeds.

    ``slope``: decades per block crossed backward (negative: the gradient shrinks toward
    the input); the fitted change is ``slope * (depth - 1)`` decades. Vanishing when that
    is at most ``-threshold_decades`` and the CI lies below 0; exploding when at least
    ``+threshold_decades`` and the CI lies above 0 (``ci`` None: one seed, the point
    estimate decides); healthy otherwise.
    """
    if not _fin(slope):
        return "non-finite"
    assert slope is not None
    decades = slope * (depth - 1)
    if decades <= -threshold_decades and (ci is None or ci[1] < 0):
        return "vanishing"
    if decades >= threshold_decades and (ci is None or ci[0] > 0):
        return "exploding"
    return "healthy"


def _twin(groups: Sequence[FlowGroup], g: FlowGroup) -> FlowGroup | None:
    """The same config with the other architecture (the nets differ only by the skip)."""
    other = "residual" if g.arch == "plain" else "plain"
    return next((t for t in groups if t.arch == other and (t.family, t.norm, t.act, t.init, t.depth)
                 == (g.family, g.norm, g.act, g.init, g.depth)), None)


@dataclass(frozen=True)
class SkipEffect:
    """What the skip did to a plain net's gradient, judged on the twins' verdicts and log10 ratios."""

    kind: Literal["tamed", "reduced", "not-tamed", "neither", "other"]
    plain_log10_ratio: float | None
    residual_log10_ratio: float | None
    reduced_share: float  # GROWTH_REDUCED


def skip_effect(plain: FlowGroup, residual: FlowGroup) -> SkipEffect:
    """tamed (plain explodes, residual healthy), reduced (both explode, the residual by at most
    GROWTH_REDUCED of the plain decades), not-tamed, neither (both healthy), other."""
    pl, rl = plain.log10_ratio, residual.log10_ratio
    if plain.verdict == "exploding" and residual.verdict == "healthy":
        kind = "tamed"
    elif (plain.verdict == "exploding" and residual.verdict == "exploding" and _fin(pl) and _fin(rl)
          and abs(rl) <= GROWTH_REDUCED * abs(pl)):  # type: ignore[arg-type]
        kind = "reduced"
    elif plain.verdict == "exploding":
        kind = "not-tamed"
    elif plain.verdict == "healthy" and residual.verdict == "healthy":
        kind = "neither"
    else:
        kind = "other"
    return SkipEffect(kind, pl, rl, GROWTH_REDUCED)


@dataclass(frozen=True)
class DeepestFlow:
    """The deepest plain net of a setting and its residual twin (verdicts from the experiment)."""

    plain: FlowGroup
    residual: FlowGroup | None
    skip: SkipEffect | None


def deepest(groups: Sequence[FlowGroup], norm: str) -> DeepestFlow | None:
    """The deepest plain net with normalisation ``norm`` among ``groups``, with its twin."""
    plain = [g for g in groups if g.arch == "plain" and g.norm == norm and g.depth]
    if not plain:
        return None
    p = max(plain, key=lambda g: g.depth)
    t = _twin(groups, p)
    return DeepestFlow(p, t, skip_effect(p, t) if t is not None else None)


@dataclass(frozen=True)
class VerdictCounts:
    counts: dict[str, dict[str, int]]  # arch -> verdict -> configs
    n: int
    depths: tuple[int, ...]
    vanishing: tuple[FlowGroup, ...]


def verdict_counts(groups: Sequence[FlowGroup]) -> VerdictCounts:
    """Verdicts per architecture over the whole grid ("non-finite" only where one occurs)."""
    kinds = ["vanishing", "healthy", "exploding"] + (["non-finite"] if any(g.verdict == "non-finite" for g in groups)
                                                     else [])
    counts = {a: {v: sum(1 for g in groups if g.arch == a and g.verdict == v) for v in kinds}
              for a in ("plain", "residual")}
    return VerdictCounts(counts, len(groups), tuple(sorted({g.depth for g in groups if g.depth})),
                         tuple(g for g in groups if g.verdict == "vanishing"))


@dataclass(frozen=True)
class BnPlainVerdict:
    """He et al. 2015 §4.1: BN plain nets' "backward propagated gradients exhibit healthy norms"."""

    relation: Relation | None  # contradicts if any BN plain net vanishes or explodes
    groups: tuple[FlowGroup, ...]  # every BN plain net judged, shallow first
    healthy: tuple[FlowGroup, ...]
    off: tuple[FlowGroup, ...]  # vanishing or exploding
    kinds: tuple[str, ...]  # the verdicts among ``off``
    worst: FlowGroup | None  # the largest |log10 ratio| among ``off``
    philipp: bool  # one explodes: agrees with Philipp et al. 2018 (BN does not stop explosion)


def he2015_bn_plain(groups: Sequence[FlowGroup]) -> BnPlainVerdict | None:
    """Judge §4.1 on the BN plain nets among ``groups`` (None when there are none)."""
    bn = tuple(sorted((g for g in groups if g.arch == "plain" and g.norm == "batch"), key=lambda g: g.depth))
    if not bn:
        return None
    off = tuple(g for g in bn if g.verdict in ("vanishing", "exploding"))
    ok = tuple(g for g in bn if g.verdict == "healthy")
    worst = max(off, key=lambda g: abs(g.log10_ratio) if _fin(g.log10_ratio) else math.inf) if off else None
    kinds = tuple(sorted({g.verdict for g in off}))
    relation: Relation | None = "contradicts" if off else "agrees" if ok else None
    return BnPlainVerdict(relation, bn, ok, off, kinds, worst, "exploding" in kinds)


@dataclass(frozen=True)
class Eq5Verdict:
    """He et al. 2016 Eq. 5: the identity term keeps a residual net's gradient from vanishing."""

    relation: Relation  # contradicts: one vanishes; partly: none vanishes but one explodes; agrees
    groups: tuple[FlowGroup, ...]
    vanishing: tuple[FlowGroup, ...]
    exploding: tuple[FlowGroup, ...]


def he2016_eq5(groups: Sequence[FlowGroup]) -> Eq5Verdict | None:
    """Judge Eq. 5 on the residual nets among ``groups`` (None when there are none)."""
    res = tuple(g for g in groups if g.arch == "residual")
    if not res:
        return None
    van = tuple(g for g in res if g.verdict == "vanishing")
    exp = tuple(g for g in res if g.verdict == "exploding")
    relation: Relation = "contradicts" if van else "partly" if exp else "agrees"
    return Eq5Verdict(relation, res, van, exp)


@dataclass(frozen=True)
class TwinsVerdict:
    """Where a plain net's gradient vanished, did its residual twin's?"""

    pairs: tuple[tuple[FlowGroup, FlowGroup | None], ...]  # every vanishing plain net, its twin
    with_twin: int
    rescued: int  # twins that did not vanish
    answer: Literal["all", "some", "none", "no-vanishing", "no-twins"]


def vanishing_twins(groups: Sequence[FlowGroup]) -> TwinsVerdict:
    """Count the vanishing plain nets whose residual twin did not vanish."""
    pairs = tuple((g, _twin(groups, g)) for g in groups if g.arch == "plain" and g.verdict == "vanishing")
    with_twin = [(p, t) for p, t in pairs if t is not None]
    rescued = sum(1 for _, t in with_twin if t.verdict != "vanishing")
    answer: Literal["all", "some", "none", "no-vanishing", "no-twins"] = (
        "no-vanishing" if not pairs else "no-twins" if not with_twin else
        "all" if rescued == len(with_twin) else "some" if rescued else "none")
    return TwinsVerdict(pairs, len(with_twin), rescued, answer)


# -- degradation --------------------------------------------------------------------------


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
             if _fin(getattr(t, arch).train_error)]
    if len(cells) < 2:
        return None
    (_, c0), (_, c1) = cells[0], cells[-1]
    e0, e1 = float(c0.train_error), float(c1.train_error)
    sd = math.hypot(c0.train_error_std if _fin(c0.train_error_std) else 0.0,
                    c1.train_error_std if _fin(c1.train_error_std) else 0.0)
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
    if not (cifar10 and published is not None and _fin(measured)):
        return Table6Verdict(depth, measured, published, None, TABLE6_TOLERANCE, None)
    assert measured is not None
    diff = measured - published
    return Table6Verdict(depth, measured, published, diff, TABLE6_TOLERANCE,
                         "agrees" if abs(diff) <= TABLE6_TOLERANCE else "contradicts")


# -- the ensemble view (Veit et al. 2016) -------------------------------------------------


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
    pts = [(k, v) for k, v in enumerate(per_length) if _fin(v) and v >= 0]  # type: ignore[operator]
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
    pts = [(k, m) for k, m in zip(lengths, means, strict=False) if _fin(m) and m > 0]  # type: ignore[operator]
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
    normal = [b.error for b in residual.blocks if not b.downsample and _fin(b.error)]
    if not normal or not _fin(residual.baseline):
        return None
    worst = max(normal)
    down = [b for b in residual.blocks if b.downsample and _fin(b.error)]
    wd = max(down, key=lambda b: b.error) if down else None
    pe = [b.error for b in plain.blocks if _fin(b.error)] if plain is not None else []
    rise = worst - residual.baseline
    return LesionVerdict(residual.model, residual.baseline, worst, rise, stats.median(normal),
                         wd.block if wd else None, wd.error if wd else None, LESION_NOTICEABLE,
                         "agrees" if rise <= LESION_NOTICEABLE else "contradicts",
                         plain.model if plain is not None else None,
                         plain.baseline if plain is not None and pe else None, stats.median(pe) if pe else None)


@dataclass(frozen=True)
class DeletionVerdict:
    """Veit et al. 2016 §4: error rises smoothly as more random blocks are deleted."""

    k: tuple[int, ...]
    error: tuple[float, ...]  # mean over trials per k
    top: float  # the curve's maximum
    plateau_k: int | None  # first k within DELETION_PLATEAU of the maximum (None: only at the last k)
    smooth: bool  # no drop of more than DELETION_DIP before the plateau
    relation: Relation
    at10: float | None
    at20: float | None
    plateau: float  # DELETION_PLATEAU
    dip: float  # DELETION_DIP


def deletion_verdict(d: Deletion) -> DeletionVerdict | None:
    """Judge the k-deletion curve (None with fewer than two finite points)."""
    pts = [(int(k), float(m)) for k, m in zip(d.k, d.mean, strict=False) if _fin(m)]  # type: ignore[arg-type]
    if len(pts) < 2:
        return None
    top = max(m for _, m in pts)
    cut = next(i for i, (_, m) in enumerate(pts) if m >= top - DELETION_PLATEAU)
    rising = pts[: cut + 1]
    smooth = all(b[1] >= a[1] - DELETION_DIP for a, b in zip(rising, rising[1:], strict=False))
    at = dict(pts)
    return DeletionVerdict(tuple(k for k, _ in pts), tuple(m for _, m in pts), top,
                           pts[cut][0] if cut < len(pts) - 1 else None, smooth,
                           "agrees" if smooth else "contradicts", at.get(10), at.get(20), DELETION_PLATEAU,
                           DELETION_DIP)


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
           if _fin(t) and _fin(m)]  # type: ignore[arg-type]
    if len(pts) < MIN_FIT_POINTS:
        return None
    c = stats.pearson([t for t, _ in pts], [m for _, m in pts])
    corr = c if math.isfinite(c) else None
    ok = corr is not None and corr < REORDER_CORRELATION
    return ReorderVerdict(tuple(t for t, _ in pts), tuple(m for _, m in pts), corr, REORDER_CORRELATION,
                          "agrees" if ok else "contradicts")


# -- shattering and the Jacobian spectrum -------------------------------------------------


@dataclass(frozen=True)
class ShatteringVerdict:
    """Balduzzi et al. 2017: gradient correlation decays about as 2^-L in plain nets and about as
    L^(-1/2) in residual nets with BN. Only those two settings are judged."""

    family: str
    arch: str
    norm: str
    depths: tuple[int, ...]
    log2_slope: float | None  # per block
    power: float | None  # fitted exponent of the depth
    rule: Literal["exponential", "power-law"] | None  # what was checked
    threshold: float | None  # SHATTER_PLAIN_LOG2_SLOPE, or SHATTER_POWER
    tolerance: float | None  # SHATTER_POWER_TOLERANCE for the power law
    relation: Relation | None  # None: a setting Balduzzi et al. give no rate for, or non-finite


def shattering_verdict(fit: ShatteringFit) -> ShatteringVerdict:
    """Plain nets: agrees when log2_slope < SHATTER_PLAIN_LOG2_SLOPE. Residual + BN: agrees when
    |power - SHATTER_POWER| <= SHATTER_POWER_TOLERANCE."""
    depths = tuple(fit.depths)
    ls = fit.log2_slope if _fin(fit.log2_slope) else None
    pw = fit.power if _fin(fit.power) else None
    if fit.arch == "plain":
        rel: Relation | None = None if ls is None else "agrees" if ls < SHATTER_PLAIN_LOG2_SLOPE else "contradicts"
        return ShatteringVerdict(fit.family, fit.arch, fit.norm, depths, ls, pw, "exponential",
                                 SHATTER_PLAIN_LOG2_SLOPE, None, rel)
    if fit.arch == "residual" and fit.norm == "batch":
        rel = None if pw is None else "agrees" if abs(pw - SHATTER_POWER) <= SHATTER_POWER_TOLERANCE else "contradicts"
        return ShatteringVerdict(fit.family, fit.arch, fit.norm, depths, ls, pw, "power-law", SHATTER_POWER,
                                 SHATTER_POWER_TOLERANCE, rel)
    return ShatteringVerdict(fit.family, fit.arch, fit.norm, depths, ls, pw, None, None, None, None)


@dataclass(frozen=True)
class SpectrumVerdict:
    """Pennington et al. 2017: ReLU nets cannot reach dynamical isometry (all singular values near 1)."""

    family: str
    arch: str
    norm: str
    act: str
    depth: int
    q10: float | None
    median: float | None
    q90: float | None
    factor: float  # ISOMETRY_FACTOR
    isometric: bool | None  # q10 >= 1/factor and q90 <= factor (None: non-finite)
    relation: Relation | None  # ReLU nets only: agrees when not isometric


def spectrum_verdict(row: SpectrumRow) -> SpectrumVerdict:
    """Judge one spectrum row against dynamical isometry."""
    q10 = row.q10 if _fin(row.q10) else None
    q90 = row.q90 if _fin(row.q90) else None
    iso = None if q10 is None or q90 is None else (q10 >= 1 / ISOMETRY_FACTOR and q90 <= ISOMETRY_FACTOR)
    rel: Relation | None = None if iso is None or row.act != "relu" else "contradicts" if iso else "agrees"
    return SpectrumVerdict(row.family, row.arch, row.norm, row.act, row.depth, q10,
                           row.median if _fin(row.median) else None, q90, ISOMETRY_FACTOR, iso, rel)


# ---- diagnose: named causes -------------------------------------------------------------

# A ReLU layer is "dead" when more than this share of its units never fire over the batch
# (a unit: one output element, all but the batch dim). At a random init about half the
# pre-activations are positive per example, so over a batch of B the share never active is
# ~2^-B: above one half only when something (a large negative bias, a collapsed input) is wrong.
DEAD_RELU_FRACTION = 0.5


# ---- Transformers: pre-LN vs post-LN vs no skip (experiments/transformer.py) -------------
# Inputs are the records of results/transformer.py. Errors are fractions.

__all__ += [
    "GROWTH_TOWARD_OUTPUT", "WARMUP_TOLERANCE", "WARMUP_SDS", "TRAINED_BELOW_CHANCE", "REMOVAL_TOLERANCE",
    "REMOVABLE_SHARE", "ANGULAR_MATCH", "REORDER_GRACEFUL",
    "growth_trend", "GrowthVerdict", "growth_verdict", "WarmupVerdict", "warmup_verdict",
    "TrainsVerdict", "trains_verdict", "RemovalVerdict", "removal_verdict", "PaintersVerdict", "painters_verdict",
    "StreamVerdict", "stream_verdict",
]

# Xiong et al. 2020 Fig. 3: at initialisation post-LN's weight gradients grow with the layer
# index toward the output; pre-LN's stay about level. A twin's gradient "grows toward the
# output" when its last layer's weight-gradient norm is more than 1.5x its first layer's,
# "shrinks" below 1/1.5, and is "level" in between (a rise of half again is a clear slope on
# Fig. 3's axis; a factor below it is within what one initialisation to the next moves).
GROWTH_TOWARD_OUTPUT = 1.5
# Xiong et al. 2020 §3, Fig. 2: post-LN without warm-up ends far worse than with it (their
# translation BLEU collapses); pre-LN needs none. A twin "fails without warm-up" when the
# no-warm-up cell's mean test error exceeds the warm-up cell's by more than 2 points (twice
# DEGRADE_MARGIN's 1-point resolution argument: a failure as in Xiong et al. is far larger) ...
WARMUP_TOLERANCE = 0.02
# ... and by more than 2 standard deviations of that difference over seeds (about a 95% margin,
# as DEGRADE_SDS), or when more seeds diverge (non-finite loss) without warm-up than with.
WARMUP_SDS = 2.0
# A twin "trains" when its test error sits more than 5 points below chance (always the most
# frequent test label). The binomial sd of an error near 90% is about 1 point on MNIST-1D's
# 1,000 test examples and 1.9 points on the quick preset's 256: 5 points is beyond that noise.
TRAINED_BELOW_CHANCE = 0.05
# Layer deletion (Gromov et al. 2024; Men et al. 2024): k consecutive layers "can be removed"
# when the test error stays within 2 points of the intact net's (the same "no noticeable
# change" as LESION_NOTICEABLE; both papers speak of keeping most of the performance).
REMOVAL_TOLERANCE = 0.02
# Men et al. 2024 keep most of the performance removing ~25% of the layers, Gromov et al. up to
# about half (after a healing fine-tune, which is not done here): the smaller claim, a quarter
# of the layers, is what a net must reach to agree.
REMOVABLE_SHARE = 0.25
# Gromov et al.'s angular-distance pick "matches" the best start when its error is within 1
# point of the best (an oracle choice over all starts; starts closer than that are noise-level ties).
ANGULAR_MATCH = 0.01
# Sun et al. 2024: running the middle layers in another order "degrades gracefully". Graceful
# here: the error rises by less than half of the way from the intact net's error to chance (still
# clearly better than guessing; a collapse would go all the way).
REORDER_GRACEFUL = 0.5

Trend = Literal["toward the output", "level", "toward the input"]


def growth_trend(growth: float | None) -> Trend | None:
    """Where a twin's weight gradient grows (``growth`` = last / first layer's norm), by GROWTH_TOWARD_OUTPUT."""
    if not _fin(growth):
        return None
    assert growth is not None
    return ("toward the output" if growth > GROWTH_TOWARD_OUTPUT else
            "toward the input" if growth < 1 / GROWTH_TOWARD_OUTPUT else "level")


@dataclass(frozen=True)
class GrowthVerdict:
    """Xiong et al. 2020 Fig. 3: at initialisation post-LN's weight gradients grow toward the output
    and pre-LN's are about the same in every layer; judged at the deepest depth with both twins."""

    depth: int
    depths: tuple[int, ...]  # every depth measured, shallow first
    growth: dict[str, tuple[float | None, ...]]  # per twin, per depth (last / first layer)
    postln: float | None  # at ``depth``
    preln: float | None
    noskip: float | None
    postln_seeds: tuple[float | None, ...]
    postln_trend: Trend | None
    preln_trend: Trend | None
    onset: int | None  # shallowest depth from which post-LN grows toward the output at every deeper depth
    factor: float  # GROWTH_TOWARD_OUTPUT
    relation: Relation | None  # agrees: post-LN grows, pre-LN level; partly: post-LN grows and exceeds a
    #                            non-level pre-LN; contradicts otherwise; None: non-finite


def growth_verdict(rows: Sequence[TransformerFlowRow]) -> GrowthVerdict | None:
    """Judge Fig. 3 on the flow rows (None without a depth where pre-LN and post-LN were both measured)."""
    by = {(r.kind, r.depth): r for r in rows}
    depths = tuple(sorted({r.depth for r in rows}))
    both = [d for d in depths if ("postln", d) in by and ("preln", d) in by]
    if not both:
        return None
    d = both[-1]
    growth = {k: tuple(by[(k, x)].growth if (k, x) in by and _fin(by[(k, x)].growth) else None for x in depths)
              for k in ("preln", "postln", "noskip")}
    post, pre = by[("postln", d)], by[("preln", d)]
    noskip = by.get(("noskip", d))
    pg = post.growth if _fin(post.growth) else None
    qg = pre.growth if _fin(pre.growth) else None
    onset = None
    for x, g in zip(reversed(depths), reversed(growth["postln"]), strict=True):
        if growth_trend(g) != "toward the output":
            break
        onset = x
    pt, qt = growth_trend(pg), growth_trend(qg)
    relation: Relation | None
    if pt is None or qt is None:
        relation = None
    elif pt == "toward the output" and qt == "level":
        relation = "agrees"
    elif pt == "toward the output" and qg < pg:  # type: ignore[operator]
        relation = "partly"
    else:
        relation = "contradicts"
    return GrowthVerdict(d, depths, growth, pg, qg, noskip.growth if noskip is not None and _fin(noskip.growth) else None,
                         tuple(g if _fin(g) else None for g in post.per_seed_growth), pt, qt, onset,
                         GROWTH_TOWARD_OUTPUT, relation)


@dataclass(frozen=True)
class StreamVerdict:
    """He et al. 2016 Eq. 5 in a Transformer: with an identity skip (pre-LN) the residual-stream
    gradient does not vanish toward the input; without the skip it may. Judged at the deepest depth
    with FLOW_THRESHOLD_DECADES, the flow experiment's rule for vanishing / exploding."""

    depth: int
    ratio: dict[str, float | None]  # per twin: ‖∂L/∂h‖ at the first unit / after the last
    label: dict[str, FlowLabel]  # vanishing (ratio <= 10^-decades), exploding (>= 10^decades), healthy
    decades: float  # FLOW_THRESHOLD_DECADES
    relation: Relation | None  # agrees: pre-LN's does not vanish; contradicts: it does; None: non-finite


def stream_verdict(rows: Sequence[TransformerFlowRow]) -> StreamVerdict | None:
    """Label every twin's stream ratio at the deepest depth measured (None without rows)."""
    if not rows:
        return None
    d = max(r.depth for r in rows)
    ratio: dict[str, float | None] = {}
    label: dict[str, FlowLabel] = {}
    for r in rows:
        if r.depth != d:
            continue
        v = r.stream_ratio if _fin(r.stream_ratio) and r.stream_ratio > 0 else None  # type: ignore[operator]
        ratio[r.kind] = v
        if v is None:
            label[r.kind] = "non-finite"
        else:
            dec = math.log10(v)
            label[r.kind] = ("vanishing" if dec <= -FLOW_THRESHOLD_DECADES else
                             "exploding" if dec >= FLOW_THRESHOLD_DECADES else "healthy")
    pre = label.get("preln")
    relation: Relation | None = (None if pre in (None, "non-finite") else
                                 "contradicts" if pre == "vanishing" else "agrees")
    return StreamVerdict(d, ratio, label, FLOW_THRESHOLD_DECADES, relation)


def _cell(cells: Sequence[TrainCell], kind: str, warmup: bool) -> TrainCell | None:
    return next((c for c in cells if c.kind == kind and c.warmup == warmup), None)


@dataclass(frozen=True)
class WarmupVerdict:
    """Xiong et al. 2020 §3: post-LN needs a learning-rate warm-up; pre-LN trains without one."""

    kind: str
    cold: float | None  # mean test error without warm-up (finite seeds)
    warm: float | None  # with warm-up
    difference: float | None  # cold - warm
    std: float  # sd of that difference: hypot of the two cells' seed sds
    margin: float  # max(WARMUP_TOLERANCE, WARMUP_SDS * std)
    seeds: int
    cold_diverged: int
    warm_diverged: int
    failed: bool | None  # fails without warm-up (None: neither cell finite)
    relation: Relation | None  # post-LN: agrees when it fails; pre-LN: agrees when it does not; others: None


def warmup_verdict(cells: Sequence[TrainCell], kind: str) -> WarmupVerdict | None:
    """Judge ``kind``'s cells with and without warm-up (None when one of the two is missing)."""
    cold, warm = _cell(cells, kind, False), _cell(cells, kind, True)
    if cold is None or warm is None:
        return None
    ce = cold.test_error if _fin(cold.test_error) else None
    we = warm.test_error if _fin(warm.test_error) else None
    sd = math.hypot(cold.test_error_std if _fin(cold.test_error_std) else 0.0,
                    warm.test_error_std if _fin(warm.test_error_std) else 0.0)
    margin = max(WARMUP_TOLERANCE, WARMUP_SDS * sd)
    diff = ce - we if ce is not None and we is not None else None
    failed: bool | None
    if cold.diverged > warm.diverged:
        failed = True
    elif diff is None:
        failed = None
    else:
        failed = diff > margin
    relation: Relation | None = None
    if failed is not None and kind == "postln":
        relation = "agrees" if failed else "contradicts"
    elif failed is not None and kind == "preln":
        relation = "contradicts" if failed else "agrees"
    return WarmupVerdict(kind, ce, we, diff, sd, margin, min(cold.n_seeds, warm.n_seeds), cold.diverged,
                         warm.diverged, failed, relation)


@dataclass(frozen=True)
class TrainsVerdict:
    """Does a twin train at all: its better cell (with or without warm-up) against chance?"""

    kind: str
    error: float | None  # the lower mean test error of its two cells
    warmup: bool | None  # the cell that was (None: no finite cell)
    chance: float | None
    margin: float  # TRAINED_BELOW_CHANCE
    below_chance: float | None  # chance - error
    trained: bool | None  # None: no finite error or chance


def trains_verdict(cells: Sequence[TrainCell], kind: str, chance: float | None) -> TrainsVerdict | None:
    """Trained when the better cell's test error is more than TRAINED_BELOW_CHANCE below ``chance``."""
    mine = [c for c in cells if c.kind == kind]
    if not mine:
        return None
    fin = [c for c in mine if _fin(c.test_error)]
    chance = chance if _fin(chance) else None
    if not fin:
        return TrainsVerdict(kind, None, None, chance, TRAINED_BELOW_CHANCE, None, None)
    best = min(fin, key=lambda c: c.test_error)  # type: ignore[arg-type,return-value]
    err = float(best.test_error)  # type: ignore[arg-type]
    if chance is None:
        return TrainsVerdict(kind, err, best.warmup, None, TRAINED_BELOW_CHANCE, None, None)
    return TrainsVerdict(kind, err, best.warmup, chance, TRAINED_BELOW_CHANCE, chance - err,
                         chance - err > TRAINED_BELOW_CHANCE)


def _trained(les: LayerLesion) -> bool:
    return _fin(les.base) and _fin(les.chance) and les.chance - les.base > TRAINED_BELOW_CHANCE  # type: ignore[operator]


@dataclass(frozen=True)
class RemovalVerdict:
    """Gromov et al. 2024 / Men et al. 2024: many layers of a trained Transformer can be removed with
    little loss, and the block with the smallest angular distance is a good one to remove."""

    kind: str
    layers: int
    base: float | None
    chance: float | None
    tolerance: float  # REMOVAL_TOLERANCE
    trained: bool  # base more than TRAINED_BELOW_CHANCE below chance (else nothing to lose)
    ks: tuple[int, ...]
    best: tuple[float | None, ...]  # per k: the lowest error over starts
    angular: tuple[float | None, ...]  # per k: the error at the angular pick
    removable_best: int  # most consecutive layers removable within tolerance (best start; every smaller k too)
    removable_angular: int  # the same at the angular pick
    share: float  # removable_best / layers
    single_within: int  # single layers whose deletion stays within tolerance
    single_worst: float | None
    single_worst_layer: int | None
    matches: tuple[int, ...]  # the ks where the angular pick is within ANGULAR_MATCH of the best
    match_tolerance: float  # ANGULAR_MATCH
    relation: Relation | None  # agrees: share >= REMOVABLE_SHARE; partly: > 0; contradicts: 0; None: untrained
    angular_relation: Relation | None  # agrees: every k matches; partly: some; contradicts: none; None: untrained


def _removable(errors: Sequence[float | None], limit: float) -> int:
    n = 0
    for e in errors:
        if not (_fin(e) and e <= limit):  # type: ignore[operator]
            break
        n += 1
    return n


def removal_verdict(les: LayerLesion) -> RemovalVerdict:
    """Judge the single and k-consecutive layer deletions of one twin."""
    cons = sorted(les.consecutive, key=lambda c: c.k)
    ks = tuple(c.k for c in cons)
    best = tuple(c.best if _fin(c.best) else None for c in cons)
    ang = tuple(c.angular_error if _fin(c.angular_error) else None for c in cons)
    base = les.base if _fin(les.base) else None
    trained = _trained(les)
    limit = (base + REMOVAL_TOLERANCE) if base is not None else -math.inf
    contiguous = [c for i, c in enumerate(cons) if c.k == i + 1]  # k = 1, 2, ... without gaps
    rb = _removable([c.best for c in contiguous], limit)
    ra = _removable([c.angular_error for c in contiguous], limit)
    single = [(i, e) for i, e in enumerate(les.single) if _fin(e)]
    worst = max(single, key=lambda t: t[1]) if single else None  # type: ignore[arg-type,return-value]
    matches = tuple(c.k for c in cons if _fin(c.angular_error) and _fin(c.best)
                    and c.angular_error - c.best <= ANGULAR_MATCH)  # type: ignore[operator]
    share = rb / les.layers if les.layers else 0.0
    relation: Relation | None = None
    angular: Relation | None = None
    if trained:
        relation = "agrees" if share >= REMOVABLE_SHARE else "partly" if rb > 0 else "contradicts"
        if ks:
            angular = "agrees" if len(matches) == len(ks) else "partly" if matches else "contradicts"
    return RemovalVerdict(les.kind, les.layers, base, les.chance if _fin(les.chance) else None, REMOVAL_TOLERANCE,
                          trained, ks, best, ang, rb, ra, share,
                          sum(1 for _, e in single if e <= limit), worst[1] if worst else None,  # type: ignore[operator]
                          worst[0] if worst else None, matches, ANGULAR_MATCH, relation, angular)


@dataclass(frozen=True)
class PaintersVerdict:
    """Sun et al. 2024: the first and last layers are special; the middle layers share a
    representation space, so running them in another order degrades gracefully."""

    kind: str
    layers: tuple[int, ...]  # the middle layers moved
    base: float | None
    chance: float | None
    reversed: float | None
    shuffled_mean: float | None
    reversed_share: float | None  # (reversed - base) / (chance - base): 0 intact, 1 chance
    shuffled_share: float | None
    graceful: float  # REORDER_GRACEFUL
    trained: bool
    first_last: tuple[float | None, float | None]  # error after deleting the first, the last layer
    middle_worst: float | None  # the largest error after deleting one middle layer
    ends_special: bool | None  # deleting the first or the last layer hurts more than any middle layer
    relation: Relation | None  # agrees: both orders graceful; partly: one; contradicts: neither; None: untrained


def painters_verdict(les: LayerLesion) -> PaintersVerdict | None:
    """Judge the reordered middle layers of one twin (None without a reordering: fewer than 4 layers)."""
    ro = les.reorder
    if ro is None:
        return None
    base = les.base if _fin(les.base) else None
    chance = les.chance if _fin(les.chance) else None
    trained = _trained(les)

    def share(e: float | None) -> float | None:
        if not (trained and _fin(e)):
            return None
        return (e - base) / (chance - base)  # type: ignore[operator]

    rev = ro.reversed if _fin(ro.reversed) else None
    shf = ro.shuffled_mean if _fin(ro.shuffled_mean) else None
    rs, ss = share(rev), share(shf)
    single = list(les.single)
    ends = (single[0] if single and _fin(single[0]) else None, single[-1] if single and _fin(single[-1]) else None)
    mid = [e for e in single[1:-1] if _fin(e)]
    mw = max(mid) if mid else None  # type: ignore[type-var]
    fin_ends = [e for e in ends if e is not None]
    special = None if mw is None or not fin_ends else max(fin_ends) > mw
    relation: Relation | None = None
    if rs is not None and ss is not None:
        ok = (rs <= REORDER_GRACEFUL) + (ss <= REORDER_GRACEFUL)
        relation = "agrees" if ok == 2 else "partly" if ok == 1 else "contradicts"
    return PaintersVerdict(les.kind, tuple(ro.layers), base, chance, rev, shf, rs, ss, REORDER_GRACEFUL, trained,
                           ends, mw, special, relation)
