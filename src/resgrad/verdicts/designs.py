"""The residual designs of today against their papers' claims (a DesignsResult; results/designs.py).

One rule per design: the figure its paper's claim is about, measured here, judged with a named
threshold into "agrees", "partly" or "contradicts" (None: the figure was not measured). A
design without a rule is reported with relation None. Losses are nats per character (the LM's
validation loss); errors are fractions.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..results.designs import DesignCell, DesignInit, DesignsResult
from ._base import Relation, finite

__all__ = ["LEVEL_FACTOR", "SLOWER", "COLLAPSE", "AMAX_NEAR_ONE", "AMAX_LARGE", "MATCH_NATS", "DEGRADE_MARGIN_CNN",
           "NORM_FREE_MATCH", "SPIKE_MARGIN", "DesignVerdict", "design_verdict", "design_verdicts", "layer_norms",
           "variance_growth"]

# Xiong et al. 2020 Fig. 3 (as verdicts/transformer.GROWTH_TOWARD_OUTPUT): a weight gradient is
# "level" across layers when the last layer's is within 1.5x of the first's either way.
LEVEL_FACTOR = 1.5
# He and Hofmann 2023: without skips about 5x the iterations. "Slower" here: at least 2x the
# reference's steps to the target (or never reaching it): less than their 5x, but beyond the
# seed-to-seed spread of a step count (measured here within ~30% between seeds).
SLOWER = 2.0
# Noci et al. 2022: rank collapse is the token cosine going to 1; 0.9 after the last unit is
# collapsed (a pre-LN net at init stays well below it: measured 0.2 to 0.6 from 2 to 32 layers).
COLLAPSE = 0.9
# DeepSeek-AI 2025 Fig. 3 and 7: mHC's composite gain stays "near 1" (their curves within ~1.6);
# 2 is the bound here. Hyper-connections' gain "grows": above 10 (their runs reach thousands; a
# small reproduction 9x at 10M parameters: an order of magnitude is the smallest growth claimed).
AMAX_NEAR_ONE = 2.0
AMAX_LARGE = 10.0
# DyT (Zhu et al. 2025) "matches" the normalised net: the mean validation losses within 0.02
# nats per character (about 1% of a char-LM's loss near 2 nats; below it the ranking of two
# designs is within the seed-to-seed spread of these runs) or their t-intervals overlap.
MATCH_NATS = 0.02
# He et al. 2015 degradation on the CNNs (MNIST-1D, or CIFAR-10's subset): the deeper net's training
# error is higher by more than 1 point (as verdicts/degradation's resolution argument: over 4,000
# MNIST-1D or 5,000 CIFAR-10 training examples an error's binomial sd is under 1 point).
DEGRADE_MARGIN_CNN = 0.01
# Fixup / SkipInit / NF "train as well as" the BN ResNet: final test error within 2 points of it (every
# design is scored on the same test images, so their sampling noise largely cancels in the difference;
# CIFAR-10's default 1,000 test images alone give an error a binomial sd of ~1.6 points).
NORM_FREE_MATCH = 0.02
# Peri-LN "fewer gradient spikes": its mean spike count at most the reference's (pre-LN) plus 0.5
# (half a spike per run: a difference of one spike in one seed out of three is not a trend).
SPIKE_MARGIN = 0.5


@dataclass(frozen=True)
class DesignVerdict:
    """One design's claim judged on one figure."""

    design: str
    figure: str  # what was compared, in words ("steps to the target loss vs pre-LN")
    measured: dict[str, Any]  # the numbers the relation rests on
    relation: Relation | None
    rule: str  # the threshold, in words
    thresholds: dict[str, float] = field(default_factory=dict)


def _cells(r: DesignsResult, design: str) -> list[DesignCell]:
    return sorted((c for c in r.cells if c.design == design), key=lambda c: c.depth)


def _deep_init(r: DesignsResult, design: str) -> DesignInit | None:
    rows = [i for i in r.init if i.design == design]
    return max(rows, key=lambda i: i.depth) if rows else None


def layer_norms(row: DesignInit) -> list[float]:
    """Per layer: sqrt(attention² + MLP²) of the per-unit weight-gradient norms (Transformers), or per unit."""
    p = row.param_norms
    if row.family == "transformer" and len(p) == 2 * row.depth and all(finite(v) for v in p):
        return [math.hypot(p[2 * i], p[2 * i + 1]) for i in range(row.depth)]  # type: ignore[arg-type]
    return [v for v in p if finite(v)]  # type: ignore[misc]


def variance_growth(row: DesignInit) -> float | None:
    """SPP: the last unit's output variance over the first's."""
    v = [x for x in row.variance if finite(x)]
    return v[-1] / v[0] if len(v) >= 2 and v[0] > 0 else None  # type: ignore[operator]


def _spread(row: DesignInit | None) -> float | None:
    if row is None:
        return None
    ls = [v for v in layer_norms(row) if v > 0]
    return max(ls) / min(ls) if len(ls) >= 2 else None


def _steps_ratio(r: DesignsResult, design: str, ref: str) -> tuple[float | None, int | None]:
    """(the design's mean steps to target / the reference's, at the deepest LM depth), and that depth;
    inf when no seed of the design reached the target while the reference's did."""
    a, b = _cells(r, design), _cells(r, ref)
    if not a or not b:
        return None, None
    ca, cb = a[-1], next((c for c in b if c.depth == a[-1].depth), None)
    if cb is None or not finite(cb.steps_to_target.mean):
        return None, ca.depth
    if ca.reached == 0:
        return math.inf, ca.depth
    return ca.steps_to_target.mean / cb.steps_to_target.mean, ca.depth  # type: ignore[operator]


def _deep_cell(r: DesignsResult, design: str, depth: int | None = None) -> DesignCell | None:
    cs = _cells(r, design)
    if depth is not None:
        cs = [c for c in cs if c.depth == depth]
    return cs[-1] if cs else None


def _overlap(a: DesignCell, b: DesignCell) -> bool:
    fa, fb = a.final, b.final
    if not (finite(fa.ci_low) and finite(fb.ci_low)):
        return False
    return fa.ci_low <= fb.ci_high and fb.ci_low <= fa.ci_high  # type: ignore[operator]


def _reference(r: DesignsResult) -> str:
    names = [c.design for c in r.cells if c.family == "transformer"]
    want = str(r.config.get("target_design", "preln"))
    return want if want in names else (names[0] if names else want)


# ---- the rules, one per design ---------------------------------------------------------------


def _growth_rule(want: str) -> Callable[[DesignsResult, str], DesignVerdict]:
    def rule(r: DesignsResult, d: str) -> DesignVerdict:
        row = _deep_init(r, d)
        g = row.growth if row is not None else None
        rel: Relation | None = None
        if finite(g):
            level = 1 / LEVEL_FACTOR <= g <= LEVEL_FACTOR  # type: ignore[operator]
            if want == "level":
                rel = "agrees" if level else "partly" if 1 / LEVEL_FACTOR ** 2 <= g <= LEVEL_FACTOR ** 2 else "contradicts"  # type: ignore[operator]
            else:
                rel = "agrees" if g > LEVEL_FACTOR else "partly" if g > 1 else "contradicts"  # type: ignore[operator]
        return DesignVerdict(d, "last / first layer weight-gradient norm at initialisation",
                             {"growth": g, "depth": row.depth if row else None}, rel,
                             f"level: within {LEVEL_FACTOR:g}x either way; grows: above {LEVEL_FACTOR:g}x",
                             {"LEVEL_FACTOR": LEVEL_FACTOR})
    return rule


def _noskip(r: DesignsResult, d: str) -> DesignVerdict:
    ref = _reference(r)
    ratio, depth = _steps_ratio(r, d, ref)
    row = _deep_init(r, d)
    cos = row.token_cosine[-1] if row is not None and row.token_cosine else None
    slow = ratio is not None and ratio >= SLOWER
    collapsed = finite(cos) and cos >= COLLAPSE  # type: ignore[operator]
    known = [x for x in (ratio is not None, finite(cos)) if x]
    rel: Relation | None = None if not known else (
        "agrees" if (slow or ratio is None) and (collapsed or not finite(cos)) else
        "partly" if slow or collapsed else "contradicts")
    return DesignVerdict(d, f"steps to the target loss vs {ref}, and the token cosine after the last unit at init",
                         {"steps_ratio": ratio, "depth": depth, "token_cosine": cos,
                          "init_depth": row.depth if row else None, "reference": ref}, rel,
                         f"slower: at least {SLOWER:g}x the steps (or never); collapsed: cosine >= {COLLAPSE:g}",
                         {"SLOWER": SLOWER, "COLLAPSE": COLLAPSE})


def _faster(r: DesignsResult, d: str) -> DesignVerdict:
    ref = _reference(r)
    ratio, depth = _steps_ratio(r, d, ref)
    rel: Relation | None = None if ratio is None else (
        "agrees" if ratio < 1 else "partly" if ratio <= 1.2 else "contradicts")
    return DesignVerdict(d, f"steps to the target loss vs {ref} (deepest trained depth)",
                         {"steps_ratio": ratio, "depth": depth, "reference": ref}, rel,
                         "faster: fewer steps than the reference; partly: within 1.2x", {})


def _stable(r: DesignsResult, d: str) -> DesignVerdict:
    c = _deep_cell(r, d)
    post = _deep_cell(r, "postln", c.depth if c else None)
    if c is None:
        return DesignVerdict(d, "divergence and final validation loss at the deepest depth", {}, None, "", {})
    better = post is not None and finite(c.final.mean) and (not finite(post.final.mean)
                                                           or c.final.mean <= post.final.mean + MATCH_NATS)  # type: ignore[operator]
    rel: Relation = "contradicts" if c.diverged else "agrees" if better or post is None else "partly"
    return DesignVerdict(d, "divergence and final validation loss at the deepest depth, beside post-LN",
                         {"diverged": c.diverged, "n_seeds": c.n_seeds, "depth": c.depth, "loss": c.final.mean,
                          "postln_loss": post.final.mean if post else None}, rel,
                         f"stable: no seed diverges and the loss is at most post-LN's + {MATCH_NATS:g} nats",
                         {"MATCH_NATS": MATCH_NATS})


def _spikes(r: DesignsResult, d: str) -> DesignVerdict:
    ref = _reference(r)
    c, p = _deep_cell(r, d), _deep_cell(r, ref)
    if c is None or p is None or not (finite(c.spikes.mean) and finite(p.spikes.mean)):
        return DesignVerdict(d, f"gradient spikes vs {ref}", {}, None, "", {})
    p2 = _deep_cell(r, ref, c.depth) or p
    fewer = c.spikes.mean <= p2.spikes.mean + SPIKE_MARGIN  # type: ignore[operator]
    no_worse = finite(c.final.mean) and finite(p2.final.mean) and c.final.mean <= p2.final.mean + MATCH_NATS  # type: ignore[operator]
    rel: Relation = "agrees" if fewer and no_worse and not c.diverged else "partly" if fewer or no_worse else "contradicts"
    return DesignVerdict(d, f"gradient spikes and final validation loss vs {ref}",
                         {"spikes": c.spikes.mean, "ref_spikes": p2.spikes.mean, "loss": c.final.mean,
                          "ref_loss": p2.final.mean, "depth": c.depth, "reference": ref}, rel,
                         f"fewer spikes: at most the reference's + {SPIKE_MARGIN:g}; loss at most its + {MATCH_NATS:g}",
                         {"SPIKE_MARGIN": SPIKE_MARGIN, "MATCH_NATS": MATCH_NATS})


def _lns(r: DesignsResult, d: str) -> DesignVerdict:
    ref = "preln"
    a, b = _deep_init(r, d), _deep_init(r, ref)
    ga, gb = (variance_growth(a) if a else None), (variance_growth(b) if b else None)
    c, p = _deep_cell(r, d), _deep_cell(r, ref)
    curbed = finite(ga) and finite(gb) and ga < gb  # type: ignore[operator]
    better = c is not None and p is not None and finite(c.final.mean) and finite(p.final.mean) and \
        c.final.mean <= p.final.mean  # type: ignore[operator]
    rel: Relation | None = None if not (finite(ga) and finite(gb)) else (
        "agrees" if curbed and (better or c is None) else "partly" if curbed or better else "contradicts")
    return DesignVerdict(d, "output-variance growth across depth at init (SPP) and final loss, vs pre-LN",
                         {"variance_growth": ga, "preln_variance_growth": gb, "loss": c.final.mean if c else None,
                          "preln_loss": p.final.mean if p else None}, rel,
                         "curbed: a smaller last/first variance than pre-LN's; better: a lower mean loss", {})


def _uniform(r: DesignsResult, d: str) -> DesignVerdict:
    s = _spread(_deep_init(r, d))
    pre, post = _spread(_deep_init(r, "preln")), _spread(_deep_init(r, "postln"))
    beats = [x for x in (pre, post) if finite(x)]
    rel: Relation | None = None if not (finite(s) and beats) else (
        "agrees" if all(s < x for x in beats) else "partly" if any(s < x for x in beats) else "contradicts")  # type: ignore[operator]
    return DesignVerdict(d, "spread of per-layer weight-gradient norms at init (max / min), vs pre-LN and post-LN",
                         {"spread": s, "preln_spread": pre, "postln_spread": post}, rel,
                         "more uniform: a smaller spread than both", {})


def _matches(r: DesignsResult, d: str) -> DesignVerdict:
    ref = "preln"
    pairs = [(c, _deep_cell(r, ref, c.depth)) for c in _cells(r, d)]
    pairs = [(c, p) for c, p in pairs if p is not None and finite(c.final.mean) and finite(p.final.mean)]
    if not pairs:
        return DesignVerdict(d, "final validation loss vs pre-LN", {}, None, "", {})
    ok = [abs(c.final.mean - p.final.mean) <= MATCH_NATS or _overlap(c, p) for c, p in pairs]  # type: ignore[operator]
    rel: Relation = "agrees" if all(ok) else "partly" if any(ok) else "contradicts"
    return DesignVerdict(d, "final validation loss vs pre-LN at each trained depth",
                         {"depths": [c.depth for c, _ in pairs], "loss": [c.final.mean for c, _ in pairs],
                          "preln_loss": [p.final.mean for _, p in pairs], "match": ok}, rel,
                         f"matches: within {MATCH_NATS:g} nats or overlapping t-intervals", {"MATCH_NATS": MATCH_NATS})


def _better_than(other: str) -> Callable[[DesignsResult, str], DesignVerdict]:
    def rule(r: DesignsResult, d: str) -> DesignVerdict:
        c, o = _deep_cell(r, d), _deep_cell(r, other)
        if c is None or o is None or not (finite(c.final.mean) and finite(o.final.mean)):
            return DesignVerdict(d, f"final validation loss vs {other}", {}, None, "", {})
        diff = c.final.mean - o.final.mean  # type: ignore[operator]
        rel: Relation = "agrees" if diff < -MATCH_NATS else "partly" if diff <= MATCH_NATS else "contradicts"
        return DesignVerdict(d, f"final validation loss vs {other} (deepest trained depth)",
                             {"loss": c.final.mean, "other_loss": o.final.mean, "depth": c.depth, "other": other}, rel,
                             f"better: lower by more than {MATCH_NATS:g} nats; partly: within it",
                             {"MATCH_NATS": MATCH_NATS})
    return rule


def _amax_of(r: DesignsResult, d: str) -> float | None:
    trained = [x for run in r.runs if run.design == d for x in run.amax[:1] if finite(x)]
    if trained:
        return max(trained)  # type: ignore[type-var]
    row = _deep_init(r, d)
    return row.amax_forward if row is not None and finite(row.amax_forward) else None


def _mhc(r: DesignsResult, d: str) -> DesignVerdict:
    a, h = _amax_of(r, d), _amax_of(r, "hc")
    near = finite(a) and a <= AMAX_NEAR_ONE  # type: ignore[operator]
    grows = finite(h) and h > AMAX_LARGE  # type: ignore[operator]
    rel: Relation | None = None if not finite(a) else ("agrees" if near and grows else "partly" if near else "contradicts")
    return DesignVerdict(d, "Amax (the mixing product's largest row sum) after training, beside hyper-connections",
                         {"amax": a, "hc_amax": h}, rel,
                         f"near 1: at most {AMAX_NEAR_ONE:g}; hyper-connections' grows: above {AMAX_LARGE:g}",
                         {"AMAX_NEAR_ONE": AMAX_NEAR_ONE, "AMAX_LARGE": AMAX_LARGE})


def _train_error(r: DesignsResult, design: str, depth: int) -> float | None:
    vals = [run.final.get("train_error") for run in r.runs if run.design == design and run.depth == depth]
    return sum(vals) / len(vals) if vals and all(finite(v) for v in vals) else None  # type: ignore[arg-type]


def _cnn_depth(degrades: bool) -> Callable[[DesignsResult, str], DesignVerdict]:
    """He et al. 2015 Fig. 1 and §4.2: the deeper plain net's *training* error is higher (mean over seeds)."""
    def rule(r: DesignsResult, d: str) -> DesignVerdict:
        depths = sorted({run.depth for run in r.runs if run.design == d})
        errs = [(x, _train_error(r, d, x)) for x in depths]
        errs = [(x, e) for x, e in errs if e is not None]
        if len(errs) < 2:
            return DesignVerdict(d, "training error, deepest vs shallowest trained depth", {}, None, "", {})
        (d0, e0), (d1, e1) = errs[0], errs[-1]
        diff = e1 - e0
        worse = diff > DEGRADE_MARGIN_CNN
        rel: Relation = ("agrees" if worse else "contradicts") if degrades else ("contradicts" if worse else "agrees")
        return DesignVerdict(d, "training error, deepest vs shallowest trained depth (mean over seeds)",
                             {"shallow": e0, "deep": e1, "depths": [d0, d1], "diff": diff}, rel,
                             f"degrades: deeper higher by more than {DEGRADE_MARGIN_CNN:g}",
                             {"DEGRADE_MARGIN_CNN": DEGRADE_MARGIN_CNN})
    return rule


def _norm_free(r: DesignsResult, d: str) -> DesignVerdict:
    c, b = _deep_cell(r, d), _deep_cell(r, "resnet")
    if c is None or b is None or b.depth != c.depth or not (finite(c.final.mean) and finite(b.final.mean)):
        return DesignVerdict(d, "test error vs the BN ResNet at the deepest depth", {}, None, "", {})
    diff = c.final.mean - b.final.mean  # type: ignore[operator]
    rel: Relation = "agrees" if diff <= NORM_FREE_MATCH else "partly" if diff <= 2.5 * NORM_FREE_MATCH else "contradicts"
    return DesignVerdict(d, "test error vs the BN ResNet at the deepest trained depth",
                         {"error": c.final.mean, "resnet_error": b.final.mean, "depth": c.depth, "diff": diff}, rel,
                         f"as well as BN: within {NORM_FREE_MATCH:g} of its error; partly: within {2.5 * NORM_FREE_MATCH:g}",
                         {"NORM_FREE_MATCH": NORM_FREE_MATCH})


RULES: dict[str, Callable[[DesignsResult, str], DesignVerdict]] = {
    "preln": _growth_rule("level"), "postln": _growth_rule("grows"), "noskip": _noskip,
    "deepnorm": _stable, "periln": _spikes, "lns": _lns, "mixln": _uniform, "rezero": _faster, "dyt": _matches,
    "hc": _faster, "hc-dynamic": _better_than("hc"), "mhc": _mhc,
    "plain": _cnn_depth(True), "resnet": _cnn_depth(False), "fixup": _norm_free, "skipinit": _norm_free,
    "nf": _norm_free,
}


def design_verdict(r: DesignsResult, design: str) -> DesignVerdict:
    """The verdict of ``design``'s claim on ``r`` (relation None for a design without a rule)."""
    rule = RULES.get(design)
    if rule is None:
        return DesignVerdict(design, "no rule for this design", {}, None, "", {})
    return rule(r, design)


def design_verdicts(r: DesignsResult) -> list[DesignVerdict]:
    """Every design of ``r``, in its order."""
    return [design_verdict(r, d.name) for d in r.designs]
