"""Findings: the verdict records of :mod:`resgrad.verdicts`, put into words.

``findings(result)`` judges nothing itself: each finding words one verdict record, and
every number in its sentence comes from that record (or the typed record it holds).
A finding is ``{"id", "section", "sentence", "numbers", "paper", "claim", "relation",
"verdict"}``; ``verdict`` is the record, ``relation`` its relation to the cited paper.
"""

from __future__ import annotations

from typing import Any

from resgrad import verdicts as V
from resgrad.results.flow import FlowGroup, FlowResult, Signal
from resgrad.results.transformer import TransformerResult

from ._fmt import NA, pct, pow10, sig, times
from ._read import Reportable, Sections, as_result, data_name, headline_groups, label, pretty_model, sections
from ._refs import PUBLISHED, cite_text

__all__ = ["findings", "Finding"]

Finding = dict[str, Any]


def _finding(id: str, section: str, sentence: str, numbers: dict[str, Any], verdict: Any = None, *,
             paper: str | None = None, claim: str | None = None, relation: str | None = None) -> Finding:
    return {"id": id, "section": section, "sentence": sentence, "numbers": numbers, "paper": paper,
            "claim": claim, "relation": relation, "verdict": verdict}


def _points(x: float | None) -> str:
    """A change of a fraction as signed percentage points: -0.134 -> -13.4 points."""
    return NA if x is None else f"{_signed(100 * x)} points"


def _signed(x: float | None) -> str:
    return NA if x is None else ("+" if x > 0 else "") + sig(x)


def _ratio(g: FlowGroup) -> str:
    """The first/last ratio as ``4.6e7×``, from its log10 where the ratio itself overflowed."""
    if g.ratio_first_last is not None:
        return times(g.ratio_first_last)
    return f"{pow10(g.log10_ratio)}×" if g.log10_ratio is not None else NA


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


def _how(norm: str) -> str:
    return "with BN" if norm == "batch" else "without normalisation" if norm == "none" else norm


# -- gradient flow ------------------------------------------------------------------------


def _flow_findings(flow: FlowResult) -> list[Finding]:
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
            text = (f"{label(p)}{blocks}: ‖∂L/∂x‖ at the first block is {_ratio(p)} the last "
                    f"(slope {_signed(p.slope)} decades per block toward the input, {ci_name} "
                    f"{sig(lo)} to {sig(hi)}; verdict: {p.verdict}) — {_DIRECTION[p.verdict]}")
        nums = _flow_numbers(p)
        if twin is not None:
            text += f"; its residual twin {label(twin, with_norm=False)}: {_ratio(twin)} ({twin.verdict})"
            nums.update(twin_ratio=twin.ratio_first_last, twin_log10_ratio=twin.log10_ratio,
                        twin_verdict=twin.verdict)
        out.append(_finding(f"flow.deepest.{p.family}.{norm}", "flow", text + ".", nums, d))

    bn = V.he2015_bn_plain(head)
    if bn is not None:
        if bn.off:
            assert bn.worst is not None
            text = (f"He et al. 2015 (§4.1) state that their BN plain nets' backward gradients have healthy norms; "
                    f"measured here at initialisation, BN plain nets are {' and '.join(bn.kinds)} at "
                    f"{_depths(list(bn.off))}" + (f" (healthy at {_depths(list(bn.healthy))})" if bn.healthy else "")
                    + f", the first/last ratio reaching {_ratio(bn.worst)} for {label(bn.worst, with_norm=False)} — "
                    f"this contradicts §4.1 for these nets")
            if bn.philipp:
                text += (", and agrees with Philipp et al. 2018 (arXiv 1712.05577) that batch normalisation "
                         "does not stop gradients from exploding")
        else:
            text = (f"He et al. 2015 (§4.1) state that BN plain nets have healthy gradient norms; measured at "
                    f"initialisation, BN plain nets are healthy at every depth measured ({_depths(list(bn.healthy))}; "
                    f"first/last ratio {_range(list(bn.healthy))}) — this agrees with §4.1")
        text += " (their check was on ImageNet plain nets during training; this is at initialisation)."
        out.append(_finding("flow.he2015-4.1", "flow", text,
                            {"depths": [g.depth for g in bn.groups], "layers": [g.layers for g in bn.groups],
                             "log10_ratios": [g.log10_ratio for g in bn.groups],
                             "verdicts": [g.verdict for g in bn.groups]}, bn,
                            paper=cite_text("he2015", "§4.1"),
                            claim="BN plain nets: \"the backward propagated gradients exhibit healthy norms\"",
                            relation=bn.relation))

    fam = head[0].family
    eq5 = V.he2016_eq5([g for g in groups if g.family == fam])
    if eq5 is not None:
        res = [g for g in head if g.arch == "residual"]
        parts = []
        for norm in _norms(res):
            rs = sorted([g for g in res if g.norm == norm], key=lambda g: g.depth)
            ps = [g for g in head if g.arch == "plain" and g.norm == norm]
            s = f"{_how(norm)}, residual nets' first/last ratio is {_range(rs)} over {_depths(rs)}"
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
        out.append(_finding("flow.he2016-eq5", "flow", text + ".",
                            {"depths": [g.depth for g in eq5.groups], "norms": [g.norm for g in eq5.groups],
                             "activations": [g.act for g in eq5.groups],
                             "log10_ratios": [g.log10_ratio for g in eq5.groups],
                             "verdicts": [g.verdict for g in eq5.groups]}, eq5,
                            paper=cite_text("he2016", "Eq. 5"),
                            claim="the gradient of a layer does not vanish even when the weights are arbitrarily small",
                            relation=eq5.relation))

    tw = V.vanishing_twins(groups)
    if tw.pairs:
        n = len(tw.pairs)
        text = (f"The plain net's gradient vanished in {n} configuration{'s' if n != 1 else ''} "
                f"({_grouped([p for p, _ in tw.pairs])}); its residual twin's did not in "
                f"{tw.rescued} of {tw.with_twin}")
        examples = sorted([(p, t) for p, t in tw.pairs if t is not None],
                          key=lambda pt: pt[0].log10_ratio if pt[0].log10_ratio is not None else 0)[:2]
        if examples:
            text += " (" + "; ".join(f"{label(p)}, {p.act}: {_ratio(p)} vs {_ratio(t)}" for p, t in examples) + ")"
        out.append(_finding("flow.vanishing-twins", "flow", text + ".",
                            {"plain_vanishing": n, "with_twin": tw.with_twin, "rescued": tw.rescued,
                             "examples": [[p.log10_ratio, t.log10_ratio] for p, t in examples]}, tw))

    vc = V.verdict_counts(groups)
    text = (f"Across all {vc.n} configurations measured at initialisation ({vc.depths[0]}–{vc.depths[-1]} blocks): "
            if vc.depths else f"Across all {vc.n} configurations measured at initialisation: ")
    text += "; ".join(f"{a} — " + ", ".join(f"{n} {v}" for v, n in c.items()) for a, c in vc.counts.items())
    if vc.vanishing:
        text += (f". Vanishing gradients appear in: {', '.join(label(g) + _extra(g) for g in vc.vanishing[:4])}"
                 + (" …" if len(vc.vanishing) > 4 else ""))
    out.append(_finding("flow.verdicts", "flow", text + ".", {"counts": vc.counts, "n_configs": vc.n}, vc))
    if flow.signal is not None:
        out += _signal_findings(flow.signal)
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


def _signal_findings(sig_: Signal) -> list[Finding]:
    out: list[Finding] = []
    for fit in sig_.fits:
        v = V.shattering_verdict(fit)
        if v.rule is None:
            continue
        pts = [(d, c) for d, c in zip(fit.depths, fit.neighbor, strict=False) if c is not None]
        if not pts:
            continue
        name = f"{'plain' if fit.arch == 'plain' else 'residual'} {fit.family} nets {_how(fit.norm)}"
        text = (f"Shattering, {name}: the gradient correlation between neighbouring inputs is {sig(pts[0][1])} at "
                f"{pts[0][0]} blocks and {sig(pts[-1][1])} at {pts[-1][0]}")
        if v.rule == "exponential":
            text += f" (log2 slope {_signed(v.log2_slope)} per block)"
            text += {None: " — not finite, so the decay rate cannot be judged",
                     "agrees": f" — exponential decay (steeper than {sig(v.threshold)} per block in log2), as "
                               "Balduzzi et al. 2017 find for plain nets (about 2^-L)",
                     "contradicts": f" — slower than exponential decay (the log2 slope is not below {sig(v.threshold)} "
                                    "per block), unlike the 2^-L of Balduzzi et al. 2017"}[v.relation]
            claim = "gradient correlation decays exponentially with depth in plain nets (about 2^-L)"
        else:
            text += f" (fitted power of depth {_signed(v.power)})"
            text += {None: " — not finite, so the decay rate cannot be judged",
                     "agrees": f" — a power law within {sig(v.tolerance)} of {sig(v.threshold)}, the 1/sqrt(L) "
                               "Balduzzi et al. 2017 find with skips and BN",
                     "contradicts": f" — not within {sig(v.tolerance)} of the power {sig(v.threshold)} (1/sqrt(L)) "
                                    "Balduzzi et al. 2017 find with skips and BN"}[v.relation]
            claim = "with skip connections and BN, gradient correlation decays about as 1/sqrt(L)"
        out.append(_finding(f"flow.shattering.{fit.family}.{fit.arch}.{fit.norm}", "flow", text + ".",
                            {"depths": list(fit.depths), "neighbor": list(fit.neighbor), "log2_slope": v.log2_slope,
                             "power": v.power}, v, paper=cite_text("balduzzi2017"), claim=claim,
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
        text = (f"Jacobian singular values of {act} {arch} {fam} nets {_how(norm)} at {row.depth} blocks: median "
                f"{sig(v.median)}, 10–90% {sig(v.q10)} to {sig(v.q90)}")
        text += (f" — not all within a factor {sig(v.factor)} of 1: no dynamical isometry, as Pennington et al. 2017 "
                 "show ReLU nets cannot reach" if v.relation == "agrees" else
                 f" — within a factor {sig(v.factor)} of 1 (near isometry), which contradicts Pennington et al. 2017 "
                 "for ReLU nets")
        out.append(_finding(f"flow.spectrum.{fam}.{arch}.{norm}.{act}", "flow", text + ".",
                            {"depth": row.depth, "q10": v.q10, "median": v.median, "q90": v.q90}, v,
                            paper=cite_text("pennington2017"),
                            claim="ReLU networks cannot reach dynamical isometry", relation=v.relation))
    return out


# -- degradation --------------------------------------------------------------------------


def _deg_findings(s: Sections) -> list[Finding]:
    deg = s.degradation
    assert deg is not None
    out: list[Finding] = []
    epochs = deg.epochs
    for arch in ("plain", "residual"):
        v = V.degradation_verdict(deg.table, arch)  # type: ignore[arg-type]
        if v is None:
            continue
        name = "plain" if arch == "plain" else "ResNet"
        series = ", ".join(f"{pct(e)} at depth {d}" for d, e in zip(v.depths, v.train_errors, strict=True))
        seeds = v.seeds
        text = (f"{'Plain' if arch == 'plain' else 'Residual'} nets, final train error "
                f"{'(mean of ' + str(seeds) + ' seeds) ' if seeds and seeds != 1 else '(1 seed) ' if seeds else ''}"
                f"{'after ' + str(epochs) + ' epochs' if epochs else ''}: {series}").replace(" :", ":")
        if arch == "plain":
            if v.degraded:
                text += (f" — {name}-{v.depths[-1]} trains worse than {name}-{v.depths[0]}: the degradation problem, "
                         f"as He et al. 2015 report on CIFAR-10 (Fig. 1, Fig. 6 left)")
            else:
                text += (f" — no degradation with depth here (change {_points(v.change)}, margin "
                         f"{_points(v.margin)}), which does not reproduce He et al. 2015 Fig. 1/6 "
                         f"at these depths and epochs")
            claim = "\"The deep plain nets suffer from increased depth, and exhibit higher training error when going deeper\""
        else:
            if v.degraded:
                text += (f" — the residual nets also degrade with depth ({_points(v.change)}), unlike He et al. "
                         f"2015 Fig. 6 (middle)")
            else:
                text += (f" — no degradation with depth (change {_points(v.change)}), as He et al. 2015 "
                         f"report for ResNets (Fig. 6 middle)")
            claim = "ResNets overcome the optimisation difficulty: deeper ones do not train worse"
        out.append(_finding(f"degradation.{arch}", "degradation", text + ".",
                            {"depths": list(v.depths), "train_errors": list(v.train_errors), "first": v.first,
                             "last": v.last, "std": v.std, "degraded": v.degraded}, v,
                            paper=cite_text("he2015", "Fig. 1, Fig. 6"), claim=claim, relation=v.relation))

    if deg.table:
        t = max(deg.table, key=lambda t: t.depth)
        data = data_name(s) or ""
        v6 = V.table6_verdict(t.depth, t.residual.test_error, PUBLISHED["he2015_table6"].get(t.depth),
                              "cifar" in data.lower())
        text = (f"At depth {t.depth}, same parameters and recipe: plain test error {pct(t.plain.test_error)} "
                f"(train {pct(t.plain.train_error)}) vs residual {pct(t.residual.test_error)} "
                f"(train {pct(t.residual.train_error)})")
        nums = {"depth": t.depth, "plain_test": t.plain.test_error, "residual_test": t.residual.test_error,
                "plain_train": t.plain.train_error, "residual_train": t.residual.train_error}
        paper = claim = None
        if v6.relation is not None:
            assert v6.difference is not None
            text += (f"; He et al. 2015 Table 6 report {pct(v6.published)} for ResNet-{t.depth} on CIFAR-10 "
                     f"(measured {sig(100 * v6.difference)} points {'above' if v6.difference > 0 else 'below'})")
            nums["he2015_table6"] = v6.published
            paper, claim = cite_text("he2015", "Table 6"), f"ResNet-{t.depth} CIFAR-10 test error {pct(v6.published)}"
        out.append(_finding("degradation.gap", "degradation", text + ".", nums, v6,
                            paper=paper, claim=claim, relation=v6.relation))
    return out


# -- the ensemble view --------------------------------------------------------------------


def _ens_findings(s: Sections) -> list[Finding]:
    e = s.ensemble
    assert e is not None
    out: list[Finding] = []
    n = e.n
    model = pretty_model(e.model) if e.model else "the residual net"
    vlo, vhi = PUBLISHED["veit_window"]
    vn, vshare = PUBLISHED["veit_blocks"], PUBLISHED["veit_share"]
    exact, sampled = e.exact, e.sampled
    for kind, label_, w in (
        ("exact", "exact decomposition (norm of the summed path gradient per length)",
         exact.effective if exact else None),
        ("sampled", "sampled single paths (count × mean magnitude per length)",
         (sampled.effective or (e.effective.sampled if e.effective else None)) if sampled else None),
    ):
        if w is None or n is None:
            continue
        if kind == "exact":
            assert exact is not None
            per_length: list[float | None] = list(exact.norms)
        else:
            assert sampled is not None
            per_length = [None] * (n + 1)
            for k, t in zip(sampled.lengths, sampled.total, strict=False):
                if 0 <= k <= n:
                    per_length[k] = t
        v = V.window_verdict(n, per_length, w)
        text = (f"{model} ({n} blocks), {label_}: {pct(v.mass)} of the gradient magnitude comes from paths "
                f"{v.lo}–{v.hi} blocks long, {pct(v.share_of_paths)} of all 2^{n} paths; weighted by gradient "
                f"magnitude the mean path length is {sig(v.weighted_length)} blocks, against {v.random_mean:g} ± "
                f"{sig(v.random_sd)} for a random path. Veit et al. 2016 report {vlo}–{vhi} of {vn} blocks, "
                f"{pct(vshare)} of paths")
        if n != vn:
            text += (f" (relative to depth {pct(vlo / vn)}–{pct(vhi / vn)} of the blocks; here "
                     f"{pct(v.lo / n)}–{pct(v.hi / n)})")
        text += " — " + {
            None: "the per-length magnitudes are not finite, so the comparison cannot be made",
            "agrees": "the gradient comes from paths much shorter than a typical path, as Veit et al. found",
            "partly": f"shorter than a typical path, but by less than {sig(v.sds)} standard deviations of the "
                      "path-length distribution, so only partly as Veit et al. found",
            "contradicts": "the gradient is not concentrated on short paths, which contradicts Veit et al.",
        }[v.relation]
        if v.weak:
            text += f" (with only {n} blocks path lengths barely spread, so this is a weak test)"
        out.append(_finding(f"ensemble.window.{kind}", "ensemble", text + ".",
                            {"n_blocks": n, "lo": v.lo, "hi": v.hi, "mass": v.mass, "share": v.share_of_paths,
                             "weighted_length": v.weighted_length, "random_length": v.random_mean,
                             "random_sd": v.random_sd}, v,
                            paper=cite_text("veit2016", "§5"),
                            claim=f"effective paths {vlo}–{vhi} of {vn} modules long, {pct(vshare)} of all paths",
                            relation=v.relation))

    dv = V.decay_verdict(sampled.lengths, sampled.mean) if sampled else None
    if dv is not None:
        assert sampled is not None
        text = (f"The mean gradient magnitude of a single path falls by {times(dv.factor_per_block)} per extra block "
                f"on it (log-linear fit over lengths {dv.lengths[0]}–{dv.lengths[-1]}"
                + (f", {sampled.samples} samples per length" if sampled.samples else "") + ")")
        text += (" — exponential decay with path length, as Veit et al. 2016 Fig. 6(b) show" if dv.relation == "agrees"
                 else " — it does not decay with path length, which contradicts Veit et al. 2016 Fig. 6(b)")
        out.append(_finding("ensemble.decay", "ensemble", text + ".",
                            {"factor_per_block": dv.factor_per_block, "log10_slope": dv.log10_slope,
                             "lengths": list(dv.lengths)}, dv,
                            paper=cite_text("veit2016", "§5, Fig. 6"),
                            claim="the gradient magnitude of a path decreases exponentially with its length",
                            relation=dv.relation))

    lesion = e.lesion or {}
    lv = V.lesion_verdict(lesion["residual"], lesion.get("plain")) if "residual" in lesion else None
    if lv is not None:
        text = (f"Deleting any single non-downsampling block of {pretty_model(lv.model) if lv.model else model} "
                f"changes test error from {pct(lv.baseline)} to at most {pct(lv.worst)} ({_signed(100 * lv.rise)} "
                f"points, median {pct(lv.median)})")
        nums: dict[str, Any] = {"baseline": lv.baseline, "worst": lv.worst, "rise": lv.rise, "median": lv.median}
        if lv.downsample_block is not None:
            text += f"; deleting downsampling block {lv.downsample_block} gives {pct(lv.downsample_error)}"
            nums["downsample_worst"] = lv.downsample_error
        if lv.plain_median is not None:
            text += (f"; deleting a single block of its plain twin {pretty_model(lv.plain_model) if lv.plain_model else ''}"
                     f" gives a median {pct(lv.plain_median)} (baseline {pct(lv.plain_baseline)})")
            nums.update(plain_baseline=lv.plain_baseline, plain_median=lv.plain_median)
        if lv.relation == "agrees":
            text += (" — no noticeable change for the residual net, as Veit et al. 2016 (§4) found "
                     "(deleting a residual block: harmless; deleting a VGG layer: error to chance)")
        else:
            text += (f" — a noticeable change (above {sig(100 * lv.noticeable)} points), which contradicts "
                     "Veit et al. 2016 (§4), who found deleting a single residual block harmless")
        out.append(_finding("ensemble.lesion", "ensemble", text + ".", nums, lv,
                            paper=cite_text("veit2016", "§4"),
                            claim="deleting one block (not downsampling) causes no noticeable change; a VGG layer: chance",
                            relation=lv.relation))

    d = (e.deletion or {}).get("residual")
    kv = V.deletion_verdict(d) if d is not None else None
    if kv is not None:
        text = f"Deleting k random blocks of {model}: test error {pct(kv.error[0])} at k={kv.k[0]}"
        for k, at in ((10, kv.at10), (20, kv.at20)):
            if at is not None:
                text += f", {pct(at)} at k={k}"
        if kv.k[-1] not in (10, 20):
            text += f", {pct(kv.error[-1])} at k={kv.k[-1]}"
        text += " — it rises smoothly with k" if kv.smooth else " — it does not rise smoothly with k"
        if kv.plateau_k is not None:
            text += f" and levels off near {pct(kv.top)} from k={kv.plateau_k}"
        text += (f"; Veit et al. 2016 (§4) report about {pct(PUBLISHED['veit_delete10'])} after deleting 10 "
                 f"of {vn} blocks on CIFAR-10 and a severe drop at 20")
        out.append(_finding("ensemble.deletion", "ensemble", text + ".",
                            {"k": list(kv.k), "error": list(kv.error), "smooth": kv.smooth, "plateau_k": kv.plateau_k,
                             "at10": kv.at10, "at20": kv.at20}, kv,
                            paper=cite_text("veit2016", "§4"), claim="error rises smoothly as more blocks are deleted",
                            relation=kv.relation))

    rv = V.reorder_verdict(e.reorder) if e.reorder is not None else None
    if rv is not None:
        pts = list(zip(rv.tau, rv.error, strict=True))
        hi_tau, lo_tau = max(pts), min(pts)
        text = (f"Reordering blocks of {model}: test error {pct(hi_tau[1])} at Kendall τ = {sig(hi_tau[0])}, "
                f"{pct(lo_tau[1])} at τ = {sig(lo_tau[0])} (correlation of error with τ: {sig(rv.correlation)})")
        text += (" — error rises smoothly as the order is corrupted, as Veit et al. 2016 (§4) found"
                 if rv.relation == "agrees" else " — error does not track the corruption, unlike Veit et al. 2016 (§4)")
        out.append(_finding("ensemble.reorder", "ensemble", text + ".",
                            {"tau": list(rv.tau), "error": list(rv.error), "correlation": rv.correlation}, rv,
                            paper=cite_text("veit2016", "§4"),
                            claim="error rises smoothly with the level of corruption (Kendall τ)",
                            relation=rv.relation))
    return out


# -- Transformers: pre-LN vs post-LN vs no skip --------------------------------------------

TWIN = {"preln": "pre-LN", "postln": "post-LN", "noskip": "no skip"}


def _pts(x: float | None) -> str:
    """A size of a change of a fraction, unsigned: 0.02 -> 2 points."""
    if x is None:
        return NA
    v = sig(100 * x)
    return f"{v} point{'' if v == '1' else 's'}"


def _way(x: float | None) -> str:
    """A share of the way from the intact error to chance: 0.46 -> "46% of the way to chance"."""
    if x is None:
        return NA
    return "below the intact error" if x < 0 else f"{pct(x)} of the way to chance"


def _twins(values: dict[str, Any], fmt: Any = times) -> str:
    return ", ".join(f"{TWIN[k]} {fmt(v)}" for k, v in values.items())


def _transformer_findings(t: TransformerResult) -> list[Finding]:
    """The Transformer study's findings (section "transformer"), each from one verdict record."""
    out: list[Finding] = []
    xiong = cite_text("xiong2020", "Fig. 3")
    g = V.growth_verdict(t.flow.rows)
    if g is not None:
        text = (f"At initialisation, {g.depth} layers: the last layer's weight-gradient norm is "
                + _twins({"postln": g.postln, "preln": g.preln, "noskip": g.noskip})
                + " its first layer's")
        if g.onset is not None:
            text += (f"; post-LN's grows toward the output (above {sig(g.factor)}×) from {g.onset} layers on "
                     f"(depths measured: {', '.join(map(str, g.depths))})")
        else:
            text += f" (depths measured: {', '.join(map(str, g.depths))})"
        text += " — " + {
            None: "a growth is not finite, so Fig. 3 cannot be compared",
            "agrees": "post-LN's gradient grows toward the output and pre-LN's is level, as Xiong et al. 2020 "
                      "(Fig. 3) show",
            "partly": f"post-LN's gradient grows toward the output, as Xiong et al. 2020 (Fig. 3) show, but pre-LN's "
                      f"is not level here: it grows {g.preln_trend} (beyond {sig(g.factor)}× either way)"
                      + (", though less than post-LN's" if g.preln_trend == "toward the output" else ""),
            "contradicts": f"post-LN's gradient does not grow toward the output by more than {sig(g.factor)}× here, "
                           "unlike Xiong et al. 2020 (Fig. 3)",
        }[g.relation]
        if g.noskip is not None and V.growth_trend(g.noskip) == "toward the output":
            text += "; the no-skip twin's weight gradient shrinks from the output toward the input: it vanishes"
        out.append(_finding("transformer.growth", "transformer", text + ".",
                            {"depth": g.depth, "depths": list(g.depths), "growth": {k: list(v) for k, v in g.growth.items()},
                             "postln_seeds": list(g.postln_seeds), "onset": g.onset, "factor": g.factor}, g,
                            paper=xiong, claim="at initialisation post-LN's weight gradients grow with the layer "
                                               "index toward the output; pre-LN's are about the same in every layer",
                            relation=g.relation))

    sv = V.stream_verdict(t.flow.rows)
    if sv is not None and sv.ratio:
        text = (f"The residual-stream gradient at initialisation, {sv.depth} layers: ‖∂L/∂h‖ at the first unit over "
                f"after the last is " + ", ".join(f"{TWIN.get(k, k)} {times(v)} ({sv.label[k]})" for k, v in sv.ratio.items()))
        text += {None: " — not finite for pre-LN, so Eq. 5 cannot be checked",
                 "agrees": " — pre-LN's does not vanish, as He et al. 2016 Eq. 5 predicts for an identity skip",
                 "contradicts": " — pre-LN's vanishes despite its identity skip, against He et al. 2016 Eq. 5"}[sv.relation]
        if sv.label.get("noskip") == "vanishing":
            text += "; without the skip it vanishes"
        text += f" (vanishing: {pow10(-sv.decades)}× or less, the flow experiment's {sig(sv.decades)}-decade rule)"
        out.append(_finding("transformer.stream", "transformer", text + ".",
                            {"depth": sv.depth, "ratio": sv.ratio, "label": sv.label, "decades": sv.decades}, sv,
                            paper=cite_text("he2016", "Eq. 5"),
                            claim="with an identity skip the gradient of a layer does not vanish",
                            relation=sv.relation))

    chance = {k: les.chance for k, les in t.lesions.items()}
    trains = {k: V.trains_verdict(t.cells, k, chance[k]) for k in TWIN if k in chance}
    epochs = (t.config.get("train") or {}).get("epochs")
    ramp = t.config.get("warmup_epochs")
    for kind in ("postln", "preln", "noskip"):
        w = V.warmup_verdict(t.cells, kind)
        if w is None:
            continue
        text = (f"{TWIN[kind]}, {t.layers} layers{f', {epochs} epochs' if epochs else ''}, {w.seeds} "
                f"seed{'s' if w.seeds != 1 else ''}: test error {pct(w.cold)} without warm-up vs {pct(w.warm)} "
                f"with a{f' {sig(ramp)}-epoch' if ramp is not None else ''} linear warm-up (difference "
                f"{_points(w.difference)}, margin {_pts(w.margin)}"
                + (f"; diverged: {w.cold_diverged} without, {w.warm_diverged} with" if w.cold_diverged or w.warm_diverged
                   else "") + ")")
        if w.failed is None:
            text += " — neither cell has a finite error, so warm-up cannot be judged"
        elif kind == "postln":
            text += (" — post-LN fails without warm-up here, as Xiong et al. 2020 (§3) report" if w.failed else
                     " — post-LN trained fine without warm-up here (no worse than with it beyond the margin), which "
                     "does not reproduce Xiong et al. 2020 (§3) at this size")
        elif kind == "preln":
            text += (" — pre-LN does worse without warm-up here, unlike Xiong et al. 2020 (§3)" if w.failed else
                     " — pre-LN needs no warm-up, as Xiong et al. 2020 (§3) report")
        else:
            text += (" — the no-skip twin does worse without warm-up" if w.failed else
                     " — warm-up makes no difference beyond the margin for the no-skip twin")
        tv = trains.get(kind)
        if tv is not None and tv.trained is False:
            text += (f" (but its better cell is within {_pts(tv.margin)} of chance, {pct(tv.chance)}: "
                     "it barely trained, so the comparison says little)")
        nums = {"cold": w.cold, "warm": w.warm, "difference": w.difference, "margin": w.margin, "seeds": w.seeds,
                "cold_diverged": w.cold_diverged, "warm_diverged": w.warm_diverged, "failed": w.failed}
        if kind == "noskip":
            out.append(_finding(f"transformer.warmup.{kind}", "transformer", text + ".", nums, w))
        else:
            out.append(_finding(
                f"transformer.warmup.{kind}", "transformer", text + ".", nums, w, paper=cite_text("xiong2020", "§3"),
                claim="post-LN needs a learning-rate warm-up: without one it does not reach a usable model"
                if kind == "postln" else "pre-LN trains without warm-up", relation=w.relation))

    ns, pre = trains.get("noskip"), trains.get("preln")
    if ns is not None and ns.trained is not None:
        text = (f"The no-skip twin (the same {t.layers} layers and parameters without the skip) reaches a test error "
                f"of {pct(ns.error)} ({'with' if ns.warmup else 'without'} warm-up) against chance {pct(ns.chance)}: "
                + (f"it trains (more than {_pts(ns.margin)} below chance)" if ns.trained else
                   f"it does not train (within {_pts(ns.margin)} of chance)"))
        if pre is not None and pre.error is not None:
            text += f"; its pre-LN twin reaches {pct(pre.error)}"
            if not pre.trained:
                text += ", also within the margin of chance: too little training here to tell the twins apart"
        out.append(_finding("transformer.noskip", "transformer", text + ".",
                            {"error": ns.error, "chance": ns.chance, "margin": ns.margin, "trained": ns.trained,
                             "preln_error": pre.error if pre else None}, ns))

    if t.ensemble is not None:
        for f in _ens_findings(Sections(None, None, t.ensemble)):
            out.append({**f, "id": "transformer." + f["id"], "section": "transformer"})

    gromov, men, sun = cite_text("gromov2024"), cite_text("men2024"), cite_text("sun2024")
    for kind in TWIN:
        les = t.lesions.get(kind)
        if les is None:
            continue
        rv = V.removal_verdict(les)
        text = (f"{TWIN[kind]} ({rv.layers} layers, intact test error {pct(rv.base)}): deleting one layer keeps the "
                f"error within {_pts(rv.tolerance)} for {rv.single_within} of {rv.layers} layers (worst: layer "
                f"{rv.single_worst_layer}, {pct(rv.single_worst)}); "
                + (f"up to {rv.removable_best} consecutive layer{'s' if rv.removable_best != 1 else ''} "
                   f"({pct(rv.share)}) can be removed within that at the best start, {rv.removable_angular} at Gromov "
                   "et al.'s angular-distance pick" if rv.removable_best else
                   "no block of consecutive layers can be removed within that, at any start"))
        text += " — " + {
            None: f"the intact net is within {_pts(V.TRAINED_BELOW_CHANCE)} of chance ({pct(rv.chance)}), so there "
                  "is little to lose: not judged",
            "agrees": f"at least {pct(V.REMOVABLE_SHARE)} of the layers can go, as Men et al. 2024 (~25%) and Gromov "
                      "et al. 2024 (up to about half, after a healing fine-tune not done here) report for LLMs",
            "partly": f"some layers can go, but fewer than {pct(V.REMOVABLE_SHARE)} (Men et al. 2024: ~25%; Gromov et "
                      "al. 2024: up to about half, after healing)",
            "contradicts": "not even one layer can be removed within the tolerance (Men et al. 2024: ~25%; Gromov et "
                           "al. 2024: up to about half, after healing)",
        }[rv.relation]
        nums = {"layers": rv.layers, "base": rv.base, "chance": rv.chance, "tolerance": rv.tolerance,
                "ks": list(rv.ks), "best": list(rv.best), "angular": list(rv.angular),
                "removable_best": rv.removable_best, "removable_angular": rv.removable_angular,
                "single_within": rv.single_within}
        residual = kind != "noskip"
        out.append(_finding(f"transformer.removal.{kind}", "transformer", text + ".", nums, rv,
                            paper=f"{gromov}; {men}" if residual else None,
                            claim="a large share of a trained Transformer's layers (about 25% to half) can be "
                                  "removed with little loss" if residual else None,
                            relation=rv.relation if residual else None))
        if rv.angular_relation is not None:
            text = (f"{TWIN[kind]}: Gromov et al.'s pick (the k-layer block whose input and output are closest in "
                    f"angle) is within {_pts(rv.match_tolerance)} of the best start's error for "
                    f"{len(rv.matches)} of {len(rv.ks)} block sizes (k = {', '.join(map(str, rv.matches)) or 'none'})")
            text += {"agrees": " — it finds the best block to remove, as Gromov et al. 2024 propose",
                     "partly": " — it finds the best block for some sizes only",
                     "contradicts": " — it never finds the best block here, unlike Gromov et al. 2024"}[rv.angular_relation]
            out.append(_finding(f"transformer.angular.{kind}", "transformer", text + ".",
                                {"ks": list(rv.ks), "matches": list(rv.matches), "best": list(rv.best),
                                 "angular": list(rv.angular)}, rv,
                                paper=cite_text("gromov2024", "§3") if residual else None,
                                claim="remove the block whose input and output have the smallest angular distance"
                                if residual else None,
                                relation=rv.angular_relation if residual else None))
        pv = V.painters_verdict(les)
        if pv is None:
            continue
        text = (f"{TWIN[kind]}, middle layers {', '.join(map(str, pv.layers))} reordered: test error "
                f"{pct(pv.reversed)} reversed, {pct(pv.shuffled_mean)} shuffled (mean of {len(les.reorder.shuffled)}), "
                f"against {pct(pv.base)} intact and {pct(pv.chance)} chance")
        if pv.reversed_share is not None and pv.shuffled_share is not None:
            text += f" (reversed: {_way(pv.reversed_share)}; shuffled: {_way(pv.shuffled_share)})"
        if pv.ends_special is not None:
            text += ("; deleting the first or the last layer hurts more than deleting any middle one" if pv.ends_special
                     else "; deleting the first or the last layer hurts no more than deleting some middle one")
            text += f" ({pct(pv.first_last[0])}, {pct(pv.first_last[1])} vs at most {pct(pv.middle_worst)})"
        text += " — " + {
            None: "the intact net is too close to chance to judge",
            "agrees": f"graceful (less than {pct(pv.graceful)} of the way to chance), as Sun et al. 2024 find for "
                      "the middle layers of Llama2 and BERT",
            "partly": f"one order is graceful (less than {pct(pv.graceful)} of the way to chance), the other not "
                      "(Sun et al. 2024: graceful)",
            "contradicts": f"not graceful (at least {pct(pv.graceful)} of the way to chance), unlike the middle layers "
                           "in Sun et al. 2024",
        }[pv.relation]
        out.append(_finding(f"transformer.reorder.{kind}", "transformer", text + ".",
                            {"layers": list(pv.layers), "base": pv.base, "chance": pv.chance, "reversed": pv.reversed,
                             "shuffled_mean": pv.shuffled_mean, "reversed_share": pv.reversed_share,
                             "shuffled_share": pv.shuffled_share, "first_last": list(pv.first_last),
                             "middle_worst": pv.middle_worst}, pv,
                            paper=sun if residual else None,
                            claim="the middle layers share a representation space: skipping or reordering them "
                                  "degrades gracefully; the first and last layers are special" if residual else None,
                            relation=pv.relation if residual else None))
    return out


# -- the measured answer ------------------------------------------------------------------


def _answer(s: Sections, found: list[Finding]) -> Finding | None:
    """One hedged sentence over the three kinds of evidence, from the findings' records."""
    by = {f["id"]: f for f in found}
    verdicts: list[str] = []
    clauses: list[str] = []
    used: dict[str, Any] = {}

    groups = s.flow.groups if s.flow is not None else []
    if groups:
        tw = V.vanishing_twins(groups)
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

    head = headline_groups(groups)
    norm = "batch" if any(g.norm == "batch" for g in head) else (head[0].norm if head else None)
    dp_ = V.deepest(head, norm) if norm is not None else None
    if dp_ is not None:
        p, t = dp_.plain, dp_.residual
        text = f"at initialisation, {label(p)}'s gradient is {p.verdict} ({_ratio(p)} first/last)"
        where = (f"in the He et al. setting ({label(p)})" if p.family == "he2015" and norm == "batch"
                 else f"for {label(p)}")
        used.update(plain_log10_ratio=p.log10_ratio, plain_verdict=p.verdict)
        if t is not None and dp_.skip is not None:
            text += f", its residual twin's {t.verdict} ({_ratio(t)})"
            used.update(residual_log10_ratio=t.log10_ratio, residual_verdict=t.verdict)
            kind = dp_.skip.kind
            if kind == "tamed":
                verdicts.append(f"{where} the plain gradient did not vanish but exploded, and the skip kept it healthy")
            elif kind == "reduced":
                verdicts.append(f"{where} the plain gradient did not vanish but exploded, and the skip reduced that "
                                f"growth ({_ratio(t)} vs {_ratio(p)}) without removing it")
            elif kind == "not-tamed":
                verdicts.append(f"{where} the plain gradient exploded and the skip did not tame it")
            elif kind == "neither":
                verdicts.append(f"{where} neither gradient vanished or exploded")
        clauses.append(text)
    v = by.get("flow.vanishing-twins")
    if v:
        clauses.append(v["sentence"][0].lower() + v["sentence"][1:-1])

    dp, dr = by.get("degradation.plain"), by.get("degradation.residual")
    if dp:
        pv = dp["verdict"]
        text = (f"plain nets {'degrade' if pv.degraded else 'do not degrade'} with depth (train error "
                f"{pct(pv.first)} → {pct(pv.last)}, depth {pv.depths[0]} → {pv.depths[-1]})")
        if dr:
            rv = dr["verdict"]
            text += f" while residual nets {'also degrade' if rv.degraded else 'do not'} ({pct(rv.first)} → {pct(rv.last)})"
        clauses.append(text)
        used.update(plain_degraded=pv.degraded, residual_degraded=dr["verdict"].degraded if dr else None)
        if pv.degraded and dr and not dr["verdict"].degraded:
            verdicts.append("residual nets train where deep plain ones fail")
        elif not pv.degraded:
            verdicts.append("the deep plain nets trained as well as the shallow ones here")

    w = by.get("ensemble.window.exact") or by.get("ensemble.window.sampled")
    if w:
        wv = w["verdict"]
        clauses.append(f"{pct(wv.mass)} of the trained residual net's gradient magnitude comes from paths "
                       f"{wv.lo}–{wv.hi} of {wv.n} blocks long ({pct(wv.share_of_paths)} of paths; magnitude-weighted "
                       f"mean length {sig(wv.weighted_length)} vs {wv.random_mean:g} for a random path)")
        used.update(window=[wv.lo, wv.hi], mass=wv.mass, n_blocks=wv.n, weighted_length=wv.weighted_length)
        if wv.relation == "agrees":
            verdicts.append("and the trained residual net's gradient travels mostly along short paths, as in Veit "
                            "et al.'s ensemble view, rather than through its full depth")
    st = by.get("transformer.stream")
    if st and (clauses or verdicts):  # evidence beside the three main kinds, in a study with the Transformer stage
        sv = st["verdict"]
        clauses.append(f"in {sv.depth}-layer Transformers at initialisation the residual-stream gradient's "
                       "first/last ratio is " + ", ".join(f"{TWIN.get(k, k)} {times(v)} ({sv.label[k]})"
                                                         for k, v in sv.ratio.items()))
        used.update(transformer_stream=sv.ratio)
    if not clauses and not verdicts:
        return None
    verdict = "; ".join(verdicts) if verdicts else "the evidence measured is partial"
    verdict = verdict[0].upper() + verdict[1:]
    setting = _setting(s)
    lead = f"Measured answer{' (' + setting + ')' if setting else ''}"
    hedge = "This holds for the nets, data and depths measured here, not in general."
    text = f"{lead}: {verdict}. Evidence: " + "; ".join(clauses) + ". " + hedge
    f = _finding("answer", "answer", text, used)
    f.update(lead=lead, verdict_text=verdict, evidence=clauses, hedge=hedge)  # the headline box, in parts
    return f


def _setting(s: Sections) -> str:
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

    ``result``: a StudyResult, FlowResult, DegradationResult, EnsembleResult or
    TransformerResult, or its parsed JSON (validated first: a bad one raises a one-line ResultError).
    """
    s = sections(as_result(result))
    found: list[Finding] = []
    if s.flow is not None:
        found += _flow_findings(s.flow)
    if s.degradation is not None:
        found += _deg_findings(s)
    if s.ensemble is not None:
        found += _ens_findings(s)
    if s.transformer is not None:
        found += _transformer_findings(s.transformer)
    answer = _answer(s, found)
    return ([answer] if answer else []) + found

