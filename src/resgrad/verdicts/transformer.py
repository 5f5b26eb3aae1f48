"""Transformers: pre-LN vs post-LN vs no skip (Xiong et al. 2020; Gromov et al. 2024; Men et al. 2024;
Sun et al. 2024). Inputs are the records of results/transformer.py; errors are fractions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from ..results.transformer import FlowRow as TransformerFlowRow
from ..results.transformer import LayerLesion, TrainCell
from ._base import FlowLabel, Relation, finite
from .flow import FLOW_THRESHOLD_DECADES

__all__ = ['GROWTH_TOWARD_OUTPUT', 'WARMUP_TOLERANCE', 'WARMUP_SDS', 'TRAINED_BELOW_CHANCE', 'REMOVAL_TOLERANCE', 'REMOVABLE_SHARE', 'ANGULAR_MATCH', 'REORDER_GRACEFUL', 'Trend', 'growth_trend', 'GrowthVerdict', 'growth_verdict', 'StreamVerdict', 'stream_verdict', 'WarmupVerdict', 'warmup_verdict', 'TrainsVerdict', 'trains_verdict', 'RemovalVerdict', 'removal_verdict', 'PaintersVerdict', 'painters_verdict']

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
    if not finite(growth):
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
    growth = {k: tuple(by[(k, x)].growth if (k, x) in by and finite(by[(k, x)].growth) else None for x in depths)
              for k in ("preln", "postln", "noskip")}
    post, pre = by[("postln", d)], by[("preln", d)]
    noskip = by.get(("noskip", d))
    pg = post.growth if finite(post.growth) else None
    qg = pre.growth if finite(pre.growth) else None
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
    return GrowthVerdict(d, depths, growth, pg, qg, noskip.growth if noskip is not None and finite(noskip.growth) else None,
                         tuple(g if finite(g) else None for g in post.per_seed_growth), pt, qt, onset,
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
        v = r.stream_ratio if finite(r.stream_ratio) and r.stream_ratio > 0 else None  # type: ignore[operator]
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
    ce = cold.test_error if finite(cold.test_error) else None
    we = warm.test_error if finite(warm.test_error) else None
    sd = math.hypot(cold.test_error_std if finite(cold.test_error_std) else 0.0,
                    warm.test_error_std if finite(warm.test_error_std) else 0.0)
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
    fin = [c for c in mine if finite(c.test_error)]
    chance = chance if finite(chance) else None
    if not fin:
        return TrainsVerdict(kind, None, None, chance, TRAINED_BELOW_CHANCE, None, None)
    best = min(fin, key=lambda c: c.test_error)  # type: ignore[arg-type,return-value]
    err = float(best.test_error)  # type: ignore[arg-type]
    if chance is None:
        return TrainsVerdict(kind, err, best.warmup, None, TRAINED_BELOW_CHANCE, None, None)
    return TrainsVerdict(kind, err, best.warmup, chance, TRAINED_BELOW_CHANCE, chance - err,
                         chance - err > TRAINED_BELOW_CHANCE)


def _trained(les: LayerLesion) -> bool:
    return finite(les.base) and finite(les.chance) and les.chance - les.base > TRAINED_BELOW_CHANCE  # type: ignore[operator]


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
        if not (finite(e) and e <= limit):  # type: ignore[operator]
            break
        n += 1
    return n


def removal_verdict(les: LayerLesion) -> RemovalVerdict:
    """Judge the single and k-consecutive layer deletions of one twin."""
    cons = sorted(les.consecutive, key=lambda c: c.k)
    ks = tuple(c.k for c in cons)
    best = tuple(c.best if finite(c.best) else None for c in cons)
    ang = tuple(c.angular_error if finite(c.angular_error) else None for c in cons)
    base = les.base if finite(les.base) else None
    trained = _trained(les)
    limit = (base + REMOVAL_TOLERANCE) if base is not None else -math.inf
    contiguous = [c for i, c in enumerate(cons) if c.k == i + 1]  # k = 1, 2, ... without gaps
    rb = _removable([c.best for c in contiguous], limit)
    ra = _removable([c.angular_error for c in contiguous], limit)
    single = [(i, e) for i, e in enumerate(les.single) if finite(e)]
    worst = max(single, key=lambda t: t[1]) if single else None  # type: ignore[arg-type,return-value]
    matches = tuple(c.k for c in cons if finite(c.angular_error) and finite(c.best)
                    and c.angular_error - c.best <= ANGULAR_MATCH)  # type: ignore[operator]
    share = rb / les.layers if les.layers else 0.0
    relation: Relation | None = None
    angular: Relation | None = None
    if trained:
        relation = "agrees" if share >= REMOVABLE_SHARE else "partly" if rb > 0 else "contradicts"
        if ks:
            angular = "agrees" if len(matches) == len(ks) else "partly" if matches else "contradicts"
    return RemovalVerdict(les.kind, les.layers, base, les.chance if finite(les.chance) else None, REMOVAL_TOLERANCE,
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
    base = les.base if finite(les.base) else None
    chance = les.chance if finite(les.chance) else None
    trained = _trained(les)

    def share(e: float | None) -> float | None:
        if not (trained and finite(e)):
            return None
        return (e - base) / (chance - base)  # type: ignore[operator]

    rev = ro.reversed if finite(ro.reversed) else None
    shf = ro.shuffled_mean if finite(ro.shuffled_mean) else None
    rs, ss = share(rev), share(shf)
    single = list(les.single)
    ends = (single[0] if single and finite(single[0]) else None, single[-1] if single and finite(single[-1]) else None)
    mid = [e for e in single[1:-1] if finite(e)]
    mw = max(mid) if mid else None  # type: ignore[type-var]
    fin_ends = [e for e in ends if e is not None]
    special = None if mw is None or not fin_ends else max(fin_ends) > mw
    relation: Relation | None = None
    if rs is not None and ss is not None:
        ok = (rs <= REORDER_GRACEFUL) + (ss <= REORDER_GRACEFUL)
        relation = "agrees" if ok == 2 else "partly" if ok == 1 else "contradicts"
    return PaintersVerdict(les.kind, tuple(ro.layers), base, chance, rev, shf, rs, ss, REORDER_GRACEFUL, trained,
                           ends, mw, special, relation)
