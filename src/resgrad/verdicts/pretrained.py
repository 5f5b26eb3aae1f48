"""Pretrained models on real text (Xiong et al. 2020; Sun et al. 2025; Gromov et al. 2024; Men et al. 2024;
Sun et al. 2024; Veit et al. 2016). Inputs are the records of results/pretrained.py (one ModelReport each).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..results.pretrained import ModelReport, Removal
from ._base import FlowLabel, Relation, finite
from .flow import FLOW_THRESHOLD_DECADES
from .transformer import GROWTH_TOWARD_OUTPUT, REMOVABLE_SHARE, REORDER_GRACEFUL, Trend, growth_trend

__all__ = ["CHANCE_MARGIN", "HIDDEN_GROWTH", "NEAR_IDENTITY", "PERPLEXITY_KEPT", "COSINE_KEPT", "PICK_MATCH", "SHORT_WINDOW",
           "ModelFlowVerdict", "model_flow_verdict", "ModelIdentityVerdict", "model_identity_verdict", "ModelRemovalVerdict",
           "model_removal_verdict", "ModelPaintersVerdict", "model_painters_verdict", "ModelPathsVerdict", "model_paths_verdict"]

# Sun et al. 2025 (arXiv 2502.05795) Fig. 1: the residual stream of a pre-LN model grows with depth. The stream
# "grows" when its mean token norm after the last layer is more than twice that at the first layer's input (a
# doubling is well beyond the few per cent one batch of text to the next moves it).
HIDDEN_GROWTH = 2.0
# Sun et al. 2025: the deep layers of a pre-LN model come close to the identity. A unit is "near the identity"
# when the cosine of its input and output is at least 0.9 (the output keeps 90% of the input's direction:
# arccos 0.9 is 26 degrees, an angular distance of 0.14 in Gromov et al.'s units).
NEAR_IDENTITY = 0.9
# Layer removal without the papers' healing fine-tune: k layers "can be removed" when the perplexity stays
# within 25% of the full model's (a quarter more; beyond it the LM is measurably worse on the same text) ...
PERPLEXITY_KEPT = 1.25
# ... or, for the sentence encoder, when its embeddings keep a cosine of at least 0.95 to the full model's.
COSINE_KEPT = 0.95
# Gromov's angular pick or ShortGPT's Block Influence pick "matches" the oracle when its loss is within 0.1 nats
# of the best start's (perplexity within about 10%).
PICK_MATCH = 0.1
# The painters verdict measures a reorder's loss as a share of the way from the full model's loss to chance;
# with the full model within 10% of chance on the batch (a short encoder batch can be) that way is too short
# to measure a share of, and the verdict says nothing.
CHANCE_MARGIN = 0.1
# Veit et al. 2016 §5: the effective paths are short, 5-17 of 54 blocks. Here "short" means the exact window
# holding 90% of the gradient ends at or below half of the units.
SHORT_WINDOW = 0.5


def _label(ratio: float | None) -> FlowLabel:
    if not finite(ratio):
        return "non-finite"
    assert ratio is not None
    if ratio <= 10 ** -FLOW_THRESHOLD_DECADES:
        return "vanishing"
    return "exploding" if ratio >= 10 ** FLOW_THRESHOLD_DECADES else "healthy"


@dataclass(frozen=True)
class ModelFlowVerdict:
    """Gradient flow through a trained model; relation to Xiong et al. 2020 Fig. 3 (measured untrained)."""

    spec: str
    norm: str  # "pre" | "post"
    stream_ratio: float | None  # ||dL/dh|| at the first unit's input over after the last
    label: FlowLabel  # by FLOW_THRESHOLD_DECADES
    growth: float | None  # last layer's weight-gradient norm over the first's
    trend: Trend | None  # by GROWTH_TOWARD_OUTPUT
    factor: float
    decades: float
    relation: Relation | None  # pre-LN level / post-LN toward the output: agrees


def model_flow_verdict(m: ModelReport) -> ModelFlowVerdict:
    trend = growth_trend(m.flow.param_growth)
    want = "level" if m.norm == "pre" else "toward the output"
    rel: Relation | None = None if trend is None else "agrees" if trend == want else "contradicts"
    return ModelFlowVerdict(m.spec, m.norm, m.flow.stream_ratio, _label(m.flow.stream_ratio), m.flow.param_growth, trend,
                       GROWTH_TOWARD_OUTPUT, FLOW_THRESHOLD_DECADES, rel)


@dataclass(frozen=True)
class ModelIdentityVerdict:
    """How close the units are to the identity, shallow vs deep half; relation to Sun et al. 2025."""

    spec: str
    norm: str
    hidden_growth: float | None  # stream norm after the last layer / at the first layer's input
    grows: bool | None  # by HIDDEN_GROWTH
    shallow_cosine: float | None  # mean unit input/output cosine, first half of the units
    deep_cosine: float | None  # the second half
    near_identity: int  # units with cosine >= NEAR_IDENTITY
    units: int
    jacobian_below_one: int  # units whose branch gain ||J_F u|| / ||u|| is below the skip's 1
    branch_share: float | None  # mean share of the gradient at a unit's input that comes through its branch
    threshold: float
    relation: Relation | None  # pre-LN: grows and deep half near the identity -> agrees


def _mean(xs: list[float | None]) -> float | None:
    v = [x for x in xs if finite(x)]
    return sum(v) / len(v) if v else None  # type: ignore[arg-type]


def model_identity_verdict(m: ModelReport) -> ModelIdentityVerdict:
    cos = m.flow.cosine
    h = len(cos) // 2
    shallow, deep = _mean(cos[:h]), _mean(cos[h:])
    g = m.stream.growth
    grows = None if not finite(g) else g > HIDDEN_GROWTH  # type: ignore[operator]
    rel: Relation | None = None
    if m.norm == "pre" and grows is not None and finite(deep):
        near = deep >= NEAR_IDENTITY  # type: ignore[operator]
        rel = "agrees" if grows and near else "partly" if grows or near else "contradicts"
    return ModelIdentityVerdict(m.spec, m.norm, g, grows, shallow, deep,
                           sum(1 for c in cos if finite(c) and c >= NEAR_IDENTITY), len(cos),  # type: ignore[operator]
                           sum(1 for j in m.flow.jacobian if finite(j) and j < 1), _mean(m.flow.branch_share),  # type: ignore[operator]
                           NEAR_IDENTITY, rel)


def _kept(r: Removal, score: dict) -> bool | None:
    v, full = score.get(r.primary), r.full.get(r.primary)
    if not (finite(v) and finite(full)):
        return False if r.primary == "perplexity" and v is None else None
    return v <= PERPLEXITY_KEPT * full if r.primary == "perplexity" else v >= COSINE_KEPT  # type: ignore[operator]


def _loss(score: dict) -> float | None:
    v = score.get("loss")
    return v if finite(v) else None


@dataclass(frozen=True)
class ModelRemovalVerdict:
    """How many consecutive layers can go, by each choice; relation to Men et al. 2024 (and Gromov et al. 2024)."""

    spec: str
    primary: str  # perplexity | cosine
    layers: int
    full: float | None
    worst_single: float | None
    worst_single_layer: int | None
    removable: dict[str, int]  # choice (oracle, angular, influence) -> largest k kept (PERPLEXITY_KEPT / COSINE_KEPT)
    angular_gap: list[float | None]  # per k: angular pick's loss minus the oracle's
    influence_gap: list[float | None]
    angular_matches: int  # ks where the angular pick is within PICK_MATCH of the oracle
    influence_matches: int
    share: float  # REMOVABLE_SHARE
    relation: Relation | None  # Block Influence removes >= share of the layers -> agrees


def model_removal_verdict(m: ModelReport) -> ModelRemovalVerdict | None:
    r = m.removal
    if r is None:
        return None
    higher = r.primary != "perplexity"
    vals = [s.get(r.primary) for s in r.single]
    idx = [i for i, v in enumerate(vals) if finite(v)]
    worst = (min if higher else max)(idx, key=lambda i: vals[i]) if idx else None
    removable: dict[str, int] = {}
    for choice in ("oracle", "angular", "influence"):
        k_ok = 0
        for c in r.consecutive:
            if _kept(r, getattr(c, choice)):
                k_ok = c.k
            else:
                break
        removable[choice] = k_ok

    def gap(c, choice: str) -> float | None:
        a, b = _loss(getattr(c, choice)), _loss(c.oracle)
        return None if a is None or b is None else a - b

    ag = [gap(c, "angular") for c in r.consecutive]
    ig = [gap(c, "influence") for c in r.consecutive]
    rel: Relation | None = None
    if r.consecutive:
        reach = math.ceil(REMOVABLE_SHARE * r.layers)
        covered = max(c.k for c in r.consecutive) >= reach
        if removable["influence"] >= reach:
            rel = "agrees"
        elif covered:
            rel = "partly" if removable["oracle"] >= reach else "contradicts"
    return ModelRemovalVerdict(m.spec, r.primary, r.layers, r.full.get(r.primary),
                          vals[worst] if worst is not None else None, worst, removable, ag, ig,
                          sum(1 for g in ag if g is not None and g <= PICK_MATCH),
                          sum(1 for g in ig if g is not None and g <= PICK_MATCH), REMOVABLE_SHARE, rel)


@dataclass(frozen=True)
class ModelPaintersVerdict:
    """The middle layers skipped, reversed, shuffled; relation to Sun et al. 2024."""

    spec: str
    chance_loss: float | None  # the loss of a uniform guess: log(vocabulary) or log(pairs)
    full_loss: float | None
    way: dict[str, float | None]  # skipped / reversed / shuffled: share of the way from the full loss to chance
    reversed_worst: bool | None  # reversing costs more than the mean shuffle (Sun et al.: the worst reorder)
    threshold: float  # REORDER_GRACEFUL
    relation: Relation | None  # reversed and shuffled both graceful -> agrees


def model_painters_verdict(m: ModelReport) -> ModelPaintersVerdict | None:
    r = m.removal
    if r is None or r.reorder is None:
        return None
    n = m.info.get("vocab_size") if m.task == "causal-lm" else m.batch.get("rows")
    chance = math.log(n) if isinstance(n, (int, float)) and n > 1 else None
    full = _loss(r.full)

    def way(score: dict | None) -> float | None:
        v = None if score is None else _loss(score)
        if v is None or chance is None or full is None or chance - full < CHANCE_MARGIN * chance:
            return None  # the full model is itself near chance on this batch: no way to measure against
        return (v - full) / (chance - full)

    sh = [_loss(s) for s in r.reorder.shuffled]
    sh_f = [s for s in sh if s is not None]
    sh_mean = {"loss": sum(sh_f) / len(sh_f)} if sh_f else None
    w = {"skipped": way(r.reorder.skipped), "reversed": way(r.reorder.reversed), "shuffled": way(sh_mean)}
    rv = _loss(r.reorder.reversed)
    worst = None if rv is None or sh_mean is None else rv > sh_mean["loss"]
    rel: Relation | None = None
    if w["reversed"] is not None and w["shuffled"] is not None:
        ok = [w["reversed"] < REORDER_GRACEFUL, w["shuffled"] < REORDER_GRACEFUL]
        rel = "agrees" if all(ok) else "partly" if any(ok) else "contradicts"
    return ModelPaintersVerdict(m.spec, chance, full, w, worst, REORDER_GRACEFUL, rel)


@dataclass(frozen=True)
class ModelPathsVerdict:
    """The exact effective window over the 2L units; relation to Veit et al. 2016 §5 (short paths)."""

    spec: str
    n: int
    lo: int | None
    hi: int | None
    held: float | None
    rel_error: float | None
    sampled_lo: int | None
    sampled_hi: int | None
    passes: float | None
    measured_passes: float | None
    cancellation: float | None  # the largest length's norm over the total's (>> 1: the lengths cancel)
    scaled_error: float | None  # ||sum - autograd|| over the largest length's norm (fp32 rounding: ~1e-6)
    threshold: float  # SHORT_WINDOW
    relation: Relation | None


def model_paths_verdict(m: ModelReport) -> ModelPathsVerdict | None:
    p = m.paths
    if p is None:
        return None
    ex = p.exact
    eff = ex.get("effective") or {}
    n = int(ex.get("n", 0))
    hi = eff.get("hi")
    s_eff = (p.sampled or {}).get("effective") or {}
    rel: Relation | None = None if hi is None or n == 0 else "agrees" if hi <= SHORT_WINDOW * n else "contradicts"
    norms = [x for x in ex.get("norms") or [] if finite(x)]
    top, total, err = (max(norms) if norms else None), ex.get("total_norm"), ex.get("rel_error")
    canc = top / total if finite(top) and finite(total) and total > 0 else None  # type: ignore[operator]
    scaled = err * total / top if finite(err) and finite(total) and finite(top) and top > 0 else None  # type: ignore[operator]
    return ModelPathsVerdict(m.spec, n, eff.get("lo"), hi, eff.get("held"), err, s_eff.get("lo"),
                             s_eff.get("hi"), p.passes, p.measured_passes, canc, scaled, SHORT_WINDOW, rel)

