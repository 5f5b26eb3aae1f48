"""The study's measured answer: its verdict (``resgrad.verdicts.study_verdict``) over the records the
other findings hold, put into the headline's words; and ``findings(result)``, every finding of a result.
"""

from __future__ import annotations

from typing import Any

from resgrad import verdicts as V

from .._fmt import pct, sig, times
from .._read import Reportable, Sections, as_result, data_name, headline_groups, label, sections
from ..registry import parts
from ._base import TWIN, Answer, Finding, Quote, ratio

__all__ = ["answer", "setting", "findings"]


def answer(s: Sections, found: list[Finding]) -> Answer | None:
    """One hedged sentence over the three kinds of evidence, from the findings' records."""
    by = {f.id: f for f in found}
    verdicts: list[str] = []
    clauses: list[str] = []
    used: dict[str, Any] = {}
    quoted: list[Quote] = []

    groups = s.flow.groups if s.flow is not None else []
    head = headline_groups(groups)
    norm = "batch" if any(g.norm == "batch" for g in head) else (head[0].norm if head else None)
    # The records the flow findings judged, not a second selection: the twins finding exists
    # where a plain net vanished; without one, the same verdict over the same groups says so.
    tw_f, dp_f = by.get("flow.vanishing-twins"), by.get(f"flow.deepest.{head[0].family}.{norm}") if head else None
    dp, dr = by.get("degradation.plain"), by.get("degradation.residual")
    w = by.get("ensemble.window.exact") or by.get("ensemble.window.sampled")
    st = by.get("transformer.stream")
    sv_ = V.study_verdict(tw_f.verdict if tw_f else V.vanishing_twins(groups) if groups else None,
                          dp_f.verdict if dp_f else None, dp.verdict if dp else None, dr.verdict if dr else None,
                          w.verdict if w else None, st.verdict if st else None)
    if sv_.twins is not None:
        tw = sv_.twins
        used.update(plain_vanishing=tw.with_twin, rescued=tw.rescued)
        if tw.answer == "all":
            verdicts.append(f"yes where gradients vanished: in all {tw.with_twin} configurations where a plain net's "
                            f"gradient vanished, its residual twin's did not")
        elif tw.answer == "some":
            verdicts.append(f"partly: in {tw.rescued} of the {tw.with_twin} configurations where a plain net's "
                            f"gradient vanished, its residual twin's did not")
        elif tw.answer == "none":
            verdicts.append(f"no: in all {tw.with_twin} configurations where a plain net's gradient vanished, its "
                            f"residual twin's vanished too")
        else:
            verdicts.append("no plain net's gradient vanished here, so there was no vanishing gradient to solve")

    dp_ = sv_.deepest
    if dp_ is not None:
        p, t = dp_.plain, dp_.residual
        text = f"at initialisation, {label(p)}'s gradient is {p.verdict} ({ratio(p)} first/last)"
        quoted.append(Quote(text, p, (p.verdict,), True))
        where = (f"in the He et al. setting ({label(p)})" if p.family == "he2015" and norm == "batch"
                 else f"for {label(p)}")
        used.update(plain_log10_ratio=p.log10_ratio, plain_verdict=p.verdict)
        if t is not None and dp_.skip is not None:
            text += f", its residual twin's {t.verdict} ({ratio(t)})"
            quoted.append(Quote(text, t, (t.verdict,), True))
            used.update(residual_log10_ratio=t.log10_ratio, residual_verdict=t.verdict)
            kind = dp_.skip.kind
            if kind == "tamed":
                verdicts.append(f"{where} the plain gradient did not vanish but exploded, and the skip kept it healthy")
            elif kind == "reduced":
                verdicts.append(f"{where} the plain gradient did not vanish but exploded, and the skip reduced that "
                                f"growth ({ratio(t)} vs {ratio(p)}) without removing it")
            elif kind == "not-tamed":
                verdicts.append(f"{where} the plain gradient exploded and the skip did not tame it")
            elif kind == "neither":
                verdicts.append(f"{where} neither gradient vanished or exploded")
        clauses.append(text)
    if tw_f:
        clauses.append(tw_f.sentence[0].lower() + tw_f.sentence[1:-1])
        quoted += tw_f.quoted

    if sv_.plain is not None:
        pv = sv_.plain
        text = (f"plain nets {'degrade' if pv.degraded else 'do not degrade'} with depth (train error "
                f"{pct(pv.first)} → {pct(pv.last)}, depth {pv.depths[0]} → {pv.depths[-1]})")
        if sv_.residual is not None:
            rv = sv_.residual
            text += f" while residual nets {'also degrade' if rv.degraded else 'do not'} ({pct(rv.first)} → {pct(rv.last)})"
        clauses.append(text)
        used.update(plain_degraded=pv.degraded, residual_degraded=sv_.residual.degraded if sv_.residual else None)
        if sv_.training == "residual-trains":
            verdicts.append("residual nets train where deep plain ones fail")
        elif sv_.training == "plain-trains":
            verdicts.append("the deep plain nets trained as well as the shallow ones here")

    if sv_.window is not None:
        wv = sv_.window
        clauses.append(f"{pct(wv.mass)} of the trained residual net's gradient magnitude comes from paths "
                       f"{wv.lo}–{wv.hi} of {wv.n} blocks long ({pct(wv.share_of_paths)} of paths; magnitude-weighted "
                       f"mean length {sig(wv.weighted_length)} vs {wv.random_mean:g} for a random path)")
        used.update(window=[wv.lo, wv.hi], mass=wv.mass, n_blocks=wv.n, weighted_length=wv.weighted_length)
        if sv_.short_paths:
            verdicts.append("and the trained residual net's gradient travels mostly along short paths, as in Veit "
                            "et al.'s ensemble view, rather than through its full depth")
    if sv_.stream is not None and (clauses or verdicts):  # beside the three main kinds, with the Transformer stage
        sv = sv_.stream
        clauses.append(f"in {sv.depth}-layer Transformers at initialisation the residual-stream gradient's "
                       "first/last ratio is " + ", ".join(f"{TWIN.get(k, k)} {times(v)} ({sv.label[k]})"
                                                         for k, v in sv.ratio.items()))
        used.update(transformer_stream=sv.ratio)
    if not clauses and not verdicts:
        return None
    verdict = "; ".join(verdicts) if verdicts else "the evidence measured is partial"
    verdict = verdict[0].upper() + verdict[1:]
    basis = setting(s)
    lead = f"Measured answer{' (' + basis + ')' if basis else ''}"
    hedge = "This holds for the nets, data and depths measured here, not in general."
    text = f"{lead}: {verdict}. Evidence: " + "; ".join(clauses) + ". " + hedge
    return Answer("answer", "answer", text, used, verdict=sv_, quoted=tuple(quoted), lead=lead, verdict_text=verdict,
                  evidence=tuple(clauses), hedge=hedge)  # the headline box, in parts


def setting(s: Sections) -> str:
    """``mnist1d, 12 epochs × 1 seed of training``: what the answer rests on."""
    parts = []
    data = data_name(s)
    if data:
        parts.append(data)
    deg = s.degradation
    if deg is not None:
        epochs, n = deg.epochs, len(deg.seeds)
        if epochs and n:
            parts.append(f"{epochs} epochs × {n} seed{'s' if n != 1 else ''} of training")
        elif epochs:
            parts.append(f"{epochs} epochs of training")
    return ", ".join(parts)


def findings(result: Reportable | dict[str, Any]) -> list[Finding]:
    """Every finding the numbers in ``result`` support, the overall measured answer first.

    ``result``: a StudyResult (or another result whose fields hold registered parts), a registered
    part's result alone (flow, degradation, ensemble, transformer, ...), or its parsed JSON
    (validated first: a bad one raises a one-line ResultError).
    Each registered part the result holds contributes its findings, in registration order.
    """
    s = sections(as_result(result))
    found: list[Finding] = []
    for p in parts():
        held = getattr(s, p.key)
        if held is not None:
            found += p.findings(held, s)
    a = answer(s, found)
    return ([a] if a else []) + found
