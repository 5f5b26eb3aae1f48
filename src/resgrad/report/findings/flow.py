"""Findings on gradient flow at initialisation, shattering and the Jacobian spectrum (a FlowResult).
"""

from __future__ import annotations

from typing import Any

from resgrad import verdicts as V
from resgrad.results.flow import FlowGroup, FlowResult, Signal

from .._fmt import NA, pct, pow10, sig
from .._read import headline_groups, label
from .._refs import cite_text
from ._base import Finding, Quote, finding, how, ratio, signed

__all__ = ["flow_findings", "signal_findings"]


def _flow_numbers(g: FlowGroup) -> dict[str, Any]:
    return {"family": g.family, "depth": g.depth, "layers": g.layers, "norm": g.norm,
            "ratio": g.ratio_first_last, "log10_ratio": g.log10_ratio, "slope": g.slope,
            "slope_ci": list(g.slope_ci) if g.slope_ci else [None, None], "decades": g.decades,
            "verdict": g.verdict}


_DIRECTION = {
    "exploding": "the gradient grows toward the input: it explodes rather than vanishes",
    "vanishing": "the gradient shrinks toward the input: it vanishes",
    "healthy": "the gradient neither vanishes nor explodes",
    "non-finite": "the measured gradient is not finite (NaN or Inf)",
}




def _norms(gs: list[FlowGroup]) -> list[str]:
    return sorted({g.norm for g in gs}, key=lambda s: (s != "batch", s))




# -- gradient flow ------------------------------------------------------------------------


def flow_findings(flow: FlowResult) -> list[Finding]:
    groups = flow.groups
    head = headline_groups(groups)
    out: list[Finding] = []
    if not groups:
        return out
    ci_name = f"{pct(flow.thresholds.ci_level)} CI"
    for norm in _norms(head):
        d = V.deepest(head, norm)
        if d is None:
            continue
        p, twin = d.plain, d.residual
        lo, hi = p.slope_ci or (None, None)
        blocks = f" ({p.depth} blocks)" if p.family != "mlp" else ""
        if p.log10_ratio is None:
            text = (f"{label(p)}{blocks}: the first/last gradient ratio is not finite (a loss or norm was "
                    f"NaN or Inf; verdict: {p.verdict})")
        else:
            text = (f"{label(p)}{blocks}: ‖∂L/∂x‖ at the first block is {ratio(p)} the last "
                    f"(slope {signed(p.slope)} decades per block toward the input, {ci_name} "
                    f"{sig(lo)} to {sig(hi)}; verdict: {p.verdict}) — {_DIRECTION[p.verdict]}")
        nums = _flow_numbers(p)
        quoted = [Quote(f"{label(p)}{blocks}", p, (p.verdict,))]
        if twin is not None:
            named = f"its residual twin {label(twin, with_norm=False)}: {ratio(twin)} ({twin.verdict})"
            text += f"; {named}"
            quoted.append(Quote(named, twin, (twin.verdict,), True))
            nums.update(twin_ratio=twin.ratio_first_last, twin_log10_ratio=twin.log10_ratio,
                        twin_verdict=twin.verdict)
        out.append(finding(f"flow.deepest.{p.family}.{norm}", "flow", text + ".", nums, d, quoted=quoted))

    bn = V.he2015_bn_plain(head)
    if bn is not None:
        if bn.off:
            assert bn.worst is not None
            text = (f"He et al. 2015 (§4.1) state that their BN plain nets' backward gradients have healthy norms; "
                    f"measured here at initialisation, BN plain nets are {' and '.join(bn.kinds)} at "
                    f"{_depths(list(bn.off))}" + (f" (healthy at {_depths(list(bn.healthy))})" if bn.healthy else "")
                    + f", the first/last ratio reaching {ratio(bn.worst)} for {label(bn.worst, with_norm=False)} — "
                    f"this contradicts §4.1 for these nets")
            if bn.philipp:
                text += (", and agrees with Philipp et al. 2018 (arXiv 1712.05577) that batch normalisation "
                         "does not stop gradients from exploding")
        else:
            text = (f"He et al. 2015 (§4.1) state that BN plain nets have healthy gradient norms; measured at "
                    f"initialisation, BN plain nets are healthy at every depth measured ({_depths(list(bn.healthy))}; "
                    f"first/last ratio {_range(list(bn.healthy))}) — this agrees with §4.1")
        text += " (their check was on ImageNet plain nets during training; this is at initialisation)."
        quoted = [Quote(_depths(list(bn.off)), g, tuple(bn.kinds)) for g in bn.off]
        quoted += [Quote(_depths(list(bn.healthy)), g, ("healthy",)) for g in bn.healthy]
        if bn.worst is not None:
            quoted.append(Quote(f"{ratio(bn.worst)} for {label(bn.worst, with_norm=False)}", bn.worst, tuple(bn.kinds),
                                True))
        out.append(finding("flow.he2015-4.1", "flow", text,
                            {"depths": [g.depth for g in bn.groups], "layers": [g.layers for g in bn.groups],
                             "log10_ratios": [g.log10_ratio for g in bn.groups],
                             "verdicts": [g.verdict for g in bn.groups]}, bn,
                            paper=cite_text("he2015", "§4.1"),
                            claim="BN plain nets: \"the backward propagated gradients exhibit healthy norms\"",
                            relation=bn.relation, quoted=quoted))

    fam = head[0].family
    eq5 = V.he2016_eq5([g for g in groups if g.family == fam])
    if eq5 is not None:
        res = [g for g in head if g.arch == "residual"]
        parts = []
        for norm in _norms(res):
            rs = sorted([g for g in res if g.norm == norm], key=lambda g: g.depth)
            ps = [g for g in head if g.arch == "plain" and g.norm == norm]
            s = f"{how(norm)}, residual nets' first/last ratio is {_range(rs)} over {_depths(rs)}"
            if ps:
                s += f" (plain: {_range(ps)})"
            parts.append(s)
        setting = _activation_init(res)
        text = (f"{setting}: " + "; ".join(parts)) if parts and setting else "; ".join(parts) or f"Residual nets ({fam})"
        text = text[0].upper() + text[1:]
        if eq5.relation == "contradicts":
            text += (f" — but the residual gradient vanishes in {_grouped(list(eq5.vanishing))}, which contradicts "
                     f"Eq. 5 as a general claim: it holds only for an identity skip path with nothing after the "
                     f"addition (He et al. 2016 §3), and a post-activation unit applies its activation there")
        elif eq5.relation == "partly":
            text += (f" — no residual net vanishes, as Eq. 5 predicts, but {_grouped(list(eq5.exploding))} explode: "
                     f"the identity term rules out vanishing, not growth (1 + ∂F/∂x can exceed 1)")
        else:
            text += " — no residual net vanishes or explodes, as the identity term of Eq. 5 predicts"
        quoted = [Quote(_grouped(list(eq5.vanishing)), g, ("vanishing",)) for g in eq5.vanishing]
        if eq5.relation == "partly":
            quoted += [Quote(_grouped(list(eq5.exploding)), g, ("exploding",)) for g in eq5.exploding]
        out.append(finding("flow.he2016-eq5", "flow", text + ".",
                            {"depths": [g.depth for g in eq5.groups], "norms": [g.norm for g in eq5.groups],
                             "activations": [g.act for g in eq5.groups],
                             "log10_ratios": [g.log10_ratio for g in eq5.groups],
                             "verdicts": [g.verdict for g in eq5.groups]}, eq5,
                            paper=cite_text("he2016", "Eq. 5"),
                            claim="the gradient of a layer does not vanish even when the weights are arbitrarily small",
                            relation=eq5.relation, quoted=quoted))

    tw = V.vanishing_twins(groups)
    if tw.pairs:
        n = len(tw.pairs)
        text = (f"The plain net's gradient vanished in {n} configuration{'s' if n != 1 else ''} "
                f"({_grouped([p for p, _ in tw.pairs])}); its residual twin's did not in "
                f"{tw.rescued} of {tw.with_twin}")
        quoted: list[Quote] = []

        def quote(pairs: tuple[tuple[FlowGroup, FlowGroup], ...]) -> str:
            # The most vanished plain nets first; each pair taken from the pairs the count counts.
            shown = sorted(pairs, key=lambda pt: pt[0].log10_ratio if pt[0].log10_ratio is not None else 0)[:2]
            parts = []
            for p, t in shown:
                s = f"{label(p)}, {p.act}: {ratio(p)} vs {ratio(t)} ({t.verdict})"
                quoted.extend([Quote(s, p, ("vanishing",), True), Quote(s, t, (t.verdict,), True)])
                parts.append(s)
            return "; ".join(parts) + ("; …" if len(pairs) > len(shown) else "")

        if tw.rescued_pairs:
            text += f" ({quote(tw.rescued_pairs)})"
        if tw.lost_pairs:
            text += f", and vanished too in {len(tw.lost_pairs)} ({quote(tw.lost_pairs)})"
        out.append(finding("flow.vanishing-twins", "flow", text + ".",
                           {"plain_vanishing": n, "with_twin": tw.with_twin, "rescued": tw.rescued,
                            "rescued_pairs": [[p.log10_ratio, t.log10_ratio] for p, t in tw.rescued_pairs],
                            "lost_pairs": [[p.log10_ratio, t.log10_ratio] for p, t in tw.lost_pairs]}, tw,
                           quoted=quoted))

    vc = V.verdict_counts(groups)
    text = (f"Across all {vc.n} configurations measured at initialisation ({vc.depths[0]}–{vc.depths[-1]} blocks): "
            if vc.depths else f"Across all {vc.n} configurations measured at initialisation: ")
    text += "; ".join(f"{a} — " + ", ".join(f"{n} {v}" for v, n in c.items()) for a, c in vc.counts.items())
    if vc.vanishing:
        text += (f". Vanishing gradients appear in: {', '.join(label(g) + _extra(g) for g in vc.vanishing[:4])}"
                 + (" …" if len(vc.vanishing) > 4 else ""))
    quoted = [Quote(label(g) + _extra(g), g, ("vanishing",)) for g in vc.vanishing[:4]]
    out.append(finding("flow.verdicts", "flow", text + ".", {"counts": vc.counts, "n_configs": vc.n}, vc,
                       quoted=quoted))
    if flow.signal is not None:
        out += signal_findings(flow.signal)
    return out


def _extra(g: FlowGroup) -> str:
    s = _activation_init([g])
    return f" ({s})" if s else ""


def _depths(gs: list[FlowGroup]) -> str:
    """``20, 56 and 110 layers`` for the He et al. family, ``4 and 16 blocks`` for MLPs."""
    if not gs:
        return NA
    mlp = any(g.family == "mlp" for g in gs)
    ds = [str(g.depth if mlp else g.layers) for g in gs]
    unit = "blocks" if mlp else "layers"
    return (", ".join(ds[:-1]) + " and " + ds[-1] if len(ds) > 1 else ds[0]) + f" {unit}"


def _range(gs: list[FlowGroup]) -> str:
    v = [g.log10_ratio for g in gs if g.log10_ratio is not None]
    if not v:
        return NA
    return f"{pow10(v[0])}×" if len(v) == 1 else f"{pow10(min(v))}× to {pow10(max(v))}×"


def _grouped(gs: list[FlowGroup]) -> str:
    """``relu ResNets without normalisation (20, 56 and 110 layers)``: one group per family, arch, norm, act."""
    by: dict[tuple[str, ...], list[FlowGroup]] = {}
    for g in gs:
        by.setdefault((g.family, g.arch, g.norm, g.act), []).append(g)
    parts = []
    for (fam, arch, norm, act), g in by.items():
        name = ("plain" if arch == "plain" else "residual") + " MLPs" if fam == "mlp" else (
            "plain nets" if arch == "plain" else "ResNets")
        how = "with BN" if norm == "batch" else "without normalisation" if norm == "none" else f"({norm})"
        parts.append(f"{f'{act} ' if act else ''}{name} {how} ({_depths(g)})")
    return ", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else parts[0] if parts else NA


_NAMES = {"relu": "ReLU", "gelu": "GELU", "he": "He", "xavier": "Xavier"}


def _activation_init(gs: list[FlowGroup]) -> str:
    """``ReLU, He init``: the activation and init a set of groups share."""
    acts = sorted({_NAMES.get(g.act, g.act) for g in gs if g.act})
    inits = sorted({_NAMES.get(g.init, g.init) for g in gs if g.init})
    bits = ([", ".join(acts)] if acts else []) + ([", ".join(inits) + " init"] if inits else [])
    return ", ".join(bits)


# -- shattering and the Jacobian spectrum -------------------------------------------------


_SHATTER_CLAIM = {  # Balduzzi et al. 2017's two rates, as the comparison table quotes them
    "exponential": "gradient correlation decays exponentially with depth in plain nets (about 2^-L)",
    "power-law": "with skip connections and BN, gradient correlation decays about as 1/sqrt(L)",
}


def _rate_words(v: Any) -> str:
    """A shattering verdict's fitted rate and how it stands to Balduzzi et al. 2017's claim for its rule:
    the log2 slope per block against exponential decay, or the power of depth against 1/sqrt(L)."""
    if v.rule == "exponential":
        fitted = f" (log2 slope {signed(v.log2_slope)} per block)"
        words = {"agrees": f" — exponential decay (steeper than {sig(v.threshold)} per block in log2), as "
                           "Balduzzi et al. 2017 find for plain nets (about 2^-L)",
                 "contradicts": f" — slower than exponential decay (the log2 slope is not below {sig(v.threshold)} "
                                "per block), unlike the 2^-L of Balduzzi et al. 2017"}
    else:
        fitted = f" (fitted power of depth {signed(v.power)})"
        words = {"agrees": f" — a power law within {sig(v.tolerance)} of {sig(v.threshold)}, the 1/sqrt(L) "
                           "Balduzzi et al. 2017 find with skips and BN",
                 "contradicts": f" — not within {sig(v.tolerance)} of the power {sig(v.threshold)} (1/sqrt(L)) "
                                "Balduzzi et al. 2017 find with skips and BN"}
    return fitted + (" — not finite, so the decay rate cannot be judged" if v.relation is None else words[v.relation])


def signal_findings(sig_: Signal) -> list[Finding]:
    out: list[Finding] = []
    for fit in sig_.fits:
        v = V.shattering_verdict(fit)
        if v.rule is None:
            continue
        pts = [(d, c) for d, c in zip(fit.depths, fit.neighbor, strict=False) if c is not None]
        if not pts:
            continue
        name = f"{'plain' if fit.arch == 'plain' else 'residual'} {fit.family} nets {how(fit.norm)}"
        series = ", ".join(f"{sig(c)} at {d}" for d, c in pts)
        text = (f"Shattering, {name}: the gradient correlation between neighbouring inputs is {series} blocks")
        if v.decorrelated_at is not None:
            # The log fits use only the correlations above the noise floor: the fall to it is the measurement.
            a, b = v.stretch or (pts[0][0], v.decorrelated_at)
            text += (f" — it falls to the noise floor ({sig(v.floor)}) or below by {v.decorrelated_at} blocks, which "
                     f"the log fits (over the correlations above the floor) cannot follow; its steepest stretch, "
                     f"{a} to {b} blocks, falls at least {sig(-v.bound)} per block in log2")
            if v.rule == "exponential":
                text += {
                    "agrees": f", steeper than the {sig(-v.threshold)} taken as exponential: the gradient shatters "
                              "with exponential decay, as Balduzzi et al. 2017 find for plain nets (about 2^-L)",
                    "partly": f": the gradient shatters, as Balduzzi et al. 2017 find for plain nets, but these depths "
                              f"cannot tell whether it falls as fast as the {sig(-v.threshold)} per block in log2 taken "
                              "as exponential (about 2^-L)",
                }[v.relation]
            else:
                text += (": far faster than the 1/sqrt(L) (power -0.5) Balduzzi et al. 2017 find with skips and BN, "
                         "which stays well above the floor at these depths")
        else:
            text += _rate_words(v)
        claim = _SHATTER_CLAIM[v.rule]
        out.append(finding(f"flow.shattering.{fit.family}.{fit.arch}.{fit.norm}", "flow", text + ".",
                            {"depths": list(fit.depths), "neighbor": list(fit.neighbor), "log2_slope": v.log2_slope,
                             "power": v.power, "floor": v.floor, "decorrelated_at": v.decorrelated_at,
                             "bound": v.bound, "stretch": list(v.stretch) if v.stretch else None}, v,
                            paper=cite_text("balduzzi2017"), claim=claim,
                            relation=v.relation))
    deepest: dict[tuple[str, str, str, str], Any] = {}
    for row in sig_.spectrum:
        k = (row.family, row.arch, row.norm, row.act)
        if k not in deepest or row.depth > deepest[k].depth:
            deepest[k] = row
    for (fam, arch, norm, act), row in sorted(deepest.items()):
        v = V.spectrum_verdict(row)
        if v.relation is None:
            continue
        text = (f"Jacobian singular values of {act} {arch} {fam} nets {how(norm)} at {row.depth} blocks: median "
                f"{sig(v.median)}, 10–90% {sig(v.q10)} to {sig(v.q90)}")
        text += (f" — not all within a factor {sig(v.factor)} of 1: no dynamical isometry, as Pennington et al. 2017 "
                 "show ReLU nets cannot reach" if v.relation == "agrees" else
                 f" — within a factor {sig(v.factor)} of 1 (near isometry), which contradicts Pennington et al. 2017 "
                 "for ReLU nets")
        out.append(finding(f"flow.spectrum.{fam}.{arch}.{norm}.{act}", "flow", text + ".",
                            {"depth": row.depth, "q10": v.q10, "median": v.median, "q90": v.q90}, v,
                            paper=cite_text("pennington2017"),
                            claim="ReLU networks cannot reach dynamical isometry", relation=v.relation))
    return out
