"""Gradient flow at initialisation: vanishing / healthy / exploding, the skip's effect, and the papers
(He et al. 2015 §4.1, He et al. 2016 Eq. 5, Balduzzi et al. 2017, Pennington et al. 2017).

Inputs are the records of results/flow.py.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from ..results.flow import FlowGroup, ShatteringFit, SpectrumRow
from ._base import FlowLabel, Relation, finite

__all__ = ['FLOW_THRESHOLD_DECADES', 'FLOW_CI_LEVEL', 'GROWTH_REDUCED', 'flow_verdict', 'SkipEffect', 'skip_effect', 'DeepestFlow', 'deepest', 'VerdictCounts', 'verdict_counts', 'BnPlainVerdict', 'he2015_bn_plain', 'Eq5Verdict', 'he2016_eq5', 'TwinsVerdict', 'vanishing_twins', 'SHATTER_PLAIN_LOG2_SLOPE', 'SHATTER_POWER', 'SHATTER_POWER_TOLERANCE', 'ISOMETRY_FACTOR', 'ShatteringVerdict', 'shattering_verdict', 'SpectrumVerdict', 'spectrum_verdict']

# A gradient whose fitted change across the net is at least 2 decades (100x) is called
# vanishing/exploding: the default of experiments/flow.py, large against the seed-to-seed
# spread of a quick grid, small against the tens of decades a sigmoid plain net loses.
FLOW_THRESHOLD_DECADES = 2.0
# The slope's Student-t interval across seeds must exclude 0 at this level (flow.py's default).
FLOW_CI_LEVEL = 0.95
# "The skip reduced the growth": the residual twin's |log10 ratio| is at most this share of
# the plain net's, i.e. at least half the decades of growth are gone (a coarse, visible change).
GROWTH_REDUCED = 0.5


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
    if not finite(slope):
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
    elif (plain.verdict == "exploding" and residual.verdict == "exploding" and finite(pl) and finite(rl)
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
    worst = max(off, key=lambda g: abs(g.log10_ratio) if finite(g.log10_ratio) else math.inf) if off else None
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
    """Where a plain net's gradient vanished, did its residual twin's?

    ``rescued_pairs`` and ``lost_pairs`` split the pairs with a twin by the twin's own verdict, so a
    sentence quoting a twin that "did not vanish" takes it from the pairs it counts."""

    pairs: tuple[tuple[FlowGroup, FlowGroup | None], ...]  # every vanishing plain net, its twin
    with_twin: int
    rescued: int  # twins that did not vanish
    answer: Literal["all", "some", "none", "no-vanishing", "no-twins"]
    rescued_pairs: tuple[tuple[FlowGroup, FlowGroup], ...] = ()  # the twin's verdict is not "vanishing"
    lost_pairs: tuple[tuple[FlowGroup, FlowGroup], ...] = ()  # the twin vanished too


def vanishing_twins(groups: Sequence[FlowGroup]) -> TwinsVerdict:
    """Count the vanishing plain nets whose residual twin did not vanish."""
    pairs = tuple((g, _twin(groups, g)) for g in groups if g.arch == "plain" and g.verdict == "vanishing")
    with_twin = [(p, t) for p, t in pairs if t is not None]
    rescued_pairs = tuple((p, t) for p, t in with_twin if t.verdict != "vanishing")
    lost_pairs = tuple((p, t) for p, t in with_twin if t.verdict == "vanishing")
    rescued = len(rescued_pairs)
    answer: Literal["all", "some", "none", "no-vanishing", "no-twins"] = (
        "no-vanishing" if not pairs else "no-twins" if not with_twin else
        "all" if rescued == len(with_twin) else "some" if rescued else "none")
    return TwinsVerdict(pairs, len(with_twin), rescued, answer, rescued_pairs, lost_pairs)



# -- shattering and the Jacobian spectrum -------------------------------------------------

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

@dataclass(frozen=True)
class ShatteringVerdict:
    """Balduzzi et al. 2017: gradient correlation decays about as 2^-L in plain nets and about as
    L^(-1/2) in residual nets with BN. Only those two settings are judged.

    A correlation at or below the fit's noise floor (``fit.floor``) carries no trend and does not
    enter the log fits, so where the correlation falls that far the fitted rate describes only the
    depths before the fall: the verdict then rests on the fall itself (``decorrelated_at``)."""

    family: str
    arch: str
    norm: str
    depths: tuple[int, ...]
    log2_slope: float | None  # per block, fitted over the correlations above the floor
    power: float | None  # fitted exponent of the depth, over the same
    rule: Literal["exponential", "power-law"] | None  # what was checked
    threshold: float | None  # SHATTER_PLAIN_LOG2_SLOPE, or SHATTER_POWER
    tolerance: float | None  # SHATTER_POWER_TOLERANCE for the power law
    relation: Relation | None  # None: a setting Balduzzi et al. give no rate for, or non-finite
    floor: float | None = None  # the white-noise floor of the fit
    decorrelated_at: int | None = None  # the shallowest depth whose correlation is at or below the floor
    bound: float | None = None  # the steepest log2 change per block between neighbouring depths up to
    #                             decorrelated_at (the floor standing in there: the fall was at least that steep)
    stretch: tuple[int, int] | None = None  # the two depths of that steepest stretch


def _decorrelated(fit: ShatteringFit) -> tuple[int | None, float | None, tuple[int, int] | None]:
    """The first depth at or below the floor, and the steepest log2 fall per block between neighbouring
    depths up to it (the floor standing in for the value there: the fall was at least that steep)."""
    pts = [(d, c) for d, c in zip(fit.depths, fit.neighbor, strict=False) if finite(c)]
    if len(pts) < 2 or not finite(fit.floor) or fit.floor <= 0 or pts[0][1] <= fit.floor:  # type: ignore[operator]
        return None, None, None
    hit = next((i for i, (_, c) in enumerate(pts) if c <= fit.floor), None)  # type: ignore[operator]
    if hit is None or fit.used >= len(pts):  # every depth entered the fits: they describe the whole curve
        return None, None, None
    upto = [(d, c if i < hit else fit.floor) for i, (d, c) in enumerate(pts[: hit + 1])]
    steps = [(math.log2(c1 / c0) / (d1 - d0), (d0, d1)) for (d0, c0), (d1, c1) in zip(upto, upto[1:], strict=False)]
    slope, stretch = min(steps)
    return pts[hit][0], slope, stretch


def shattering_verdict(fit: ShatteringFit) -> ShatteringVerdict:
    """Plain nets: agrees when log2_slope < SHATTER_PLAIN_LOG2_SLOPE. Residual + BN: agrees when
    |power - SHATTER_POWER| <= SHATTER_POWER_TOLERANCE.

    Where the correlation falls to the noise floor: a plain net agrees when its steepest stretch
    (``bound``) falls faster than SHATTER_PLAIN_LOG2_SLOPE, and partly otherwise (it shatters, at a
    rate these depths cannot pin down); a residual net with BN contradicts (a
    power law near -1/2 stays far above the floor over any depths a grid measures)."""
    depths = tuple(fit.depths)
    ls = fit.log2_slope if finite(fit.log2_slope) else None
    pw = fit.power if finite(fit.power) else None
    floor = fit.floor if finite(fit.floor) else None
    at, bound, stretch = _decorrelated(fit)
    rel: Relation | None
    if fit.arch == "plain":
        if at is not None:
            rel = "agrees" if bound < SHATTER_PLAIN_LOG2_SLOPE else "partly"  # type: ignore[operator]
        else:
            rel = None if ls is None else "agrees" if ls < SHATTER_PLAIN_LOG2_SLOPE else "contradicts"
        return ShatteringVerdict(fit.family, fit.arch, fit.norm, depths, ls, pw, "exponential",
                                 SHATTER_PLAIN_LOG2_SLOPE, None, rel, floor, at, bound, stretch)
    if fit.arch == "residual" and fit.norm == "batch":
        if at is not None:
            rel = "contradicts"
        else:
            rel = (None if pw is None else "agrees" if abs(pw - SHATTER_POWER) <= SHATTER_POWER_TOLERANCE
                   else "contradicts")
        return ShatteringVerdict(fit.family, fit.arch, fit.norm, depths, ls, pw, "power-law", SHATTER_POWER,
                                 SHATTER_POWER_TOLERANCE, rel, floor, at, bound, stretch)
    return ShatteringVerdict(fit.family, fit.arch, fit.norm, depths, ls, pw, None, None, None, None, floor, at, bound,
                             stretch)


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
    q10 = row.q10 if finite(row.q10) else None
    q90 = row.q90 if finite(row.q90) else None
    iso = None if q10 is None or q90 is None else (q10 >= 1 / ISOMETRY_FACTOR and q90 <= ISOMETRY_FACTOR)
    rel: Relation | None = None if iso is None or row.act != "relu" else "contradicts" if iso else "agrees"
    return SpectrumVerdict(row.family, row.arch, row.norm, row.act, row.depth, q10,
                           row.median if finite(row.median) else None, q90, ISOMETRY_FACTOR, iso, rel)
