"""Findings on pretrained models (a PretrainedResult): one sentence per verdict record per model."""

from __future__ import annotations

from resgrad import verdicts as V
from resgrad.results.pretrained import ModelReport, PretrainedResult

from .._fmt import NA, sig, times
from .._refs import cite_text
from ._base import Finding, finding

__all__ = ["pretrained_findings"]

_NORM = {"pre": "pre-LN", "post": "post-LN"}


def _name(m: ModelReport) -> str:
    return f"{m.spec} ({_NORM.get(m.norm, m.norm)}, {m.layers} layers)"


def _key(m: ModelReport) -> str:
    return m.spec.split(":", 1)[-1].replace("/", "-")


def _flow(m: ModelReport) -> Finding:
    v = V.model_flow_verdict(m)
    text = (f"{_name(m)}: the residual-stream gradient at the first unit's input is {times(v.stream_ratio)} that after "
            f"the last ({v.label}; {sig(v.decades)}-decade rule); the last layer's weight gradient is "
            f"{times(v.growth)} the first's ({v.trend or NA})")
    text += {None: "", "agrees": " — as Xiong et al. 2020 found for untrained models of this norm placement",
             "contradicts": " — unlike Xiong et al. 2020's untrained models of this norm placement (pre-LN level, "
                            "post-LN growing toward the output)", "partly": ""}[v.relation]
    return finding(f"pretrained.flow.{_key(m)}", "pretrained", text + ".",
                   {"stream_ratio": v.stream_ratio, "growth": v.growth, "factor": v.factor}, v,
                   paper=cite_text("xiong2020", "Fig. 3"),
                   claim="pre-LN weight gradients about equal in every layer; post-LN's grow toward the output "
                         "(at initialisation)", relation=v.relation)


def _identity(m: ModelReport) -> Finding:
    v = V.model_identity_verdict(m)
    text = (f"{_name(m)}: the hidden-state norm after the last layer is {times(v.hidden_growth)} that at the first "
            f"layer's input ({'grows' if v.grows else 'does not grow'} by the {sig(V.HIDDEN_GROWTH)}× rule); mean input/output cosine {sig(v.shallow_cosine)} over the shallow half of the units and "
            f"{sig(v.deep_cosine)} over the deep half ({v.near_identity} of {v.units} units at or above "
            f"{sig(v.threshold)}); {v.jacobian_below_one} of {v.units} branches have a gain below the skip's 1; "
            f"on average {sig(v.branch_share)} of the gradient reaching a unit's input comes through its branch")
    if m.norm == "pre" and v.relation is not None:
        text += {"agrees": " — as Sun et al. 2025 describe pre-LN LLMs: the stream grows and the deep layers sit "
                           "near the identity",
                 "partly": " — partly as Sun et al. 2025 describe (the stream grows, or the deep layers sit near the "
                           "identity, not both)",
                 "contradicts": " — unlike Sun et al. 2025's pre-LN LLMs"}[v.relation]
    return finding(f"pretrained.identity.{_key(m)}", "pretrained", text + ".",
                   {"hidden_growth": v.hidden_growth, "deep_cosine": v.deep_cosine, "threshold": v.threshold}, v,
                   paper=cite_text("sun2025", "Fig. 1") if m.norm == "pre" else None,
                   claim="pre-LN: the hidden-state variance grows with depth; deep layers come close to the identity"
                   if m.norm == "pre" else None, relation=v.relation if m.norm == "pre" else None)


def _removal(m: ModelReport) -> Finding | None:
    v = V.model_removal_verdict(m)
    if v is None:
        return None
    kept = (f"perplexity within {sig(V.PERPLEXITY_KEPT)}× the full model's {sig(v.full)}" if v.primary == "perplexity"
            else f"embedding cosine to the full model's of at least {sig(V.COSINE_KEPT)}")
    worst = NA if v.worst_single_layer is None else f"layer {v.worst_single_layer} ({v.primary} {sig(v.worst_single)})"
    text = (f"{_name(m)}: removing one layer hurts most at {worst}; consecutive layers removable with {kept}: "
            f"{v.removable['oracle']} (best start), {v.removable['angular']} (Gromov's angular pick), "
            f"{v.removable['influence']} (Block Influence) of {v.layers}; the angular pick is within "
            f"{sig(V.PICK_MATCH)} nats of the best start at {v.angular_matches} of {len(v.angular_gap)} k, Block "
            f"Influence at {v.influence_matches}")
    text += {None: "", "agrees": f" — ShortGPT's {sig(100 * v.share)}% of the layers go, as Men et al. 2024 report",
             "partly": f" — only the oracle removes {sig(100 * v.share)}% of the layers (Men et al. 2024: Block "
                       "Influence does), without a healing fine-tune",
             "contradicts": f" — not {sig(100 * v.share)}% of the layers, unlike Men et al. 2024 (no healing "
                            "fine-tune here; Gromov et al. heal after removal)"}[v.relation]
    return finding(f"pretrained.removal.{_key(m)}", "pretrained", text + ".",
                   {"removable": v.removable, "layers": v.layers, "share": v.share}, v,
                   paper=cite_text("men2024"), claim="removing ~25% of layers by lowest Block Influence keeps most "
                                                     "of the performance", relation=v.relation)


def _painters(m: ModelReport) -> Finding | None:
    v = V.model_painters_verdict(m)
    if v is None:
        return None
    w = {k: (NA if x is None else f"{sig(100 * x)}%") for k, x in v.way.items()}
    text = (f"{_name(m)}: with the middle layers skipped the loss goes {w['skipped']} of the way from the full "
            f"model's to chance, reversed {w['reversed']}, shuffled {w['shuffled']} (graceful: under "
            f"{sig(100 * v.threshold)}%)")
    if v.reversed_worst is not None:
        text += "; reversing costs more than shuffling" if v.reversed_worst else "; shuffling costs more than reversing"
    text += {None: "", "agrees": " — graceful, as Sun et al. 2024 found", "partly": " — partly graceful "
             "(Sun et al. 2024: both are)", "contradicts": " — not graceful, unlike Sun et al. 2024"}[v.relation]
    return finding(f"pretrained.painters.{_key(m)}", "pretrained", text + ".", {"way": v.way}, v,
                   paper=cite_text("sun2024"), claim="the middle layers can be skipped or reordered with graceful "
                                                     "degradation", relation=v.relation)


def _paths(m: ModelReport) -> Finding | None:
    v = V.model_paths_verdict(m)
    if v is None:
        return None
    text = (f"{_name(m)}: exactly split by path length over its {v.n} units (the sum within {sig(v.rel_error)} of "
            f"autograd's gradient, {sig(v.scaled_error)} of the largest length's norm; that norm is "
            f"{times(v.cancellation)} the total's, so the lengths cancel), 90% of the summed norms lies on paths through {v.lo} to {v.hi} branches"
            + (f"; the sampled view puts it at {v.sampled_lo} to {v.sampled_hi}" if v.sampled_lo is not None else "")
            + f"; the decomposition cost {sig(v.passes)} backward passes by count ({sig(v.measured_passes)} by time)")
    text += {None: "", "agrees": " — short paths carry the gradient, as Veit et al. 2016 found in ResNets",
             "contradicts": " — the window reaches past half the units, unlike Veit et al. 2016's short paths",
             "partly": ""}[v.relation]
    return finding(f"pretrained.paths.{_key(m)}", "pretrained", text + ".",
                   {"lo": v.lo, "hi": v.hi, "n": v.n, "rel_error": v.rel_error}, v,
                   paper=cite_text("veit2016", "§5"), claim="the effective paths are short (5-17 of 54 blocks)",
                   relation=v.relation)


def pretrained_findings(r: PretrainedResult) -> list[Finding]:
    """Every model's findings, in the section's order (section "pretrained")."""
    out: list[Finding] = []
    for m in r.models:
        for f in (_flow(m), _identity(m), _paths(m), _removal(m), _painters(m)):
            if f is not None:
                out.append(f)
    return out
