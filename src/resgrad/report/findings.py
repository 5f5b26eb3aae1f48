"""Findings: sentences generated from the measured numbers, with the numbers in them.

``findings(results)`` is a pure function of the results dict. Every sentence is built
from values read out of it (none is hard-coded); each finding carries the numbers it
used, and, where a paper made a claim about the same thing, the citation, the claim and
whether the measurement agrees with it or contradicts it.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from ._fmt import NA, num, pct, pow10, sig, times
from ._read import (
    data_name,
    degradation_table,
    ensemble_view,
    flow_rows,
    flow_thresholds,
    headline_rows,
    pretty_model,
    row_label,
    section,
    train_epochs,
    weighted_length,
)
from ._refs import PUBLISHED, cite_text

__all__ = ["findings", "Finding", "DEGRADE_MARGIN", "LESION_NOTICEABLE"]

Finding = dict[str, Any]

DEGRADE_MARGIN = 0.01  # train error must rise by > 1 point (and > 2 seed std) to count as degradation
LESION_NOTICEABLE = 0.02  # a single deletion "noticeably" changes error above +2 points (Veit §4)


def _finding(id: str, section: str, sentence: str, numbers: dict[str, Any], *, paper: str | None = None,
             claim: str | None = None, relation: str | None = None) -> Finding:
    return {"id": id, "section": section, "sentence": sentence, "numbers": numbers,
            "paper": paper, "claim": claim, "relation": relation}


def _points(x: float | None) -> str:
    """A change of a fraction as signed percentage points: -0.134 -> -13.4 points."""
    return NA if x is None else f"{_signed(100 * x)} points"


def _signed(x: float | None) -> str:
    return NA if x is None else ("+" if x > 0 else "") + sig(x)


def _ratio(r: dict[str, Any]) -> str:
    """The first/last ratio as ``4.6e7×``, from its log10 where the ratio itself overflowed."""
    if r.get("ratio") is not None:
        return times(r["ratio"])
    return f"{pow10(r['log10_ratio'])}×" if r.get("log10_ratio") is not None else NA


_DIRECTION = {
    "exploding": "the gradient grows toward the input: it explodes rather than vanishes",
    "vanishing": "the gradient shrinks toward the input: it vanishes",
    "healthy": "the gradient neither vanishes nor explodes",
    "non-finite": "the measured gradient is not finite (NaN or Inf)",
}


# -- gradient flow ------------------------------------------------------------------------


def _flow_findings(flow: dict[str, Any]) -> list[Finding]:
    rows = flow_rows(flow)
    head = headline_rows(rows)
    out: list[Finding] = []
    if not rows:
        return out
    level = num(flow_thresholds(flow).get("ci_level"))
    ci_name = f"{pct(level)} CI" if level else "CI"
    for norm in sorted({r["norm"] for r in head}, key=lambda s: (s != "batch", s)):
        plain = [r for r in head if r["arch"] == "plain" and r["norm"] == norm and r["depth"]]
        res = [r for r in head if r["arch"] == "residual" and r["norm"] == norm and r["depth"]]
        if not plain:
            continue
        p = max(plain, key=lambda r: r["depth"])
        twin = next((r for r in res if r["depth"] == p["depth"]), None)
        lo, hi = p["slope_ci"]
        blocks = f" ({p['depth']} blocks)" if p.get("family") != "mlp" else ""
        if p["log10_ratio"] is None:
            text = (f"{row_label(p)}{blocks}: the first/last gradient ratio is not finite (a loss or norm was "
                    f"NaN or Inf; verdict: {p['verdict'] or NA})")
        else:
            text = (f"{row_label(p)}{blocks}: ‖∂L/∂x‖ at the first block is {_ratio(p)} the last "
                    f"(slope {_signed(p['slope'])} decades per block toward the input, {ci_name} "
                    f"{sig(lo)} to {sig(hi)}; verdict: {p['verdict'] or NA})")
            if p["verdict"] in _DIRECTION:
                text += f" — {_DIRECTION[p['verdict']]}"
        nums: dict[str, Any] = {"family": p["family"], "depth": p["depth"], "layers": p["layers"], "norm": norm,
                                "ratio": p["ratio"], "log10_ratio": p["log10_ratio"], "slope": p["slope"],
                                "slope_ci": [lo, hi], "decades": p["decades"], "verdict": p["verdict"]}
        if twin is not None:
            text += f"; its residual twin {row_label(twin, with_norm=False)}: {_ratio(twin)} ({twin['verdict'] or NA})"
            nums.update(twin_ratio=twin["ratio"], twin_log10_ratio=twin["log10_ratio"], twin_verdict=twin["verdict"])
        out.append(_finding(f"flow.deepest.{p['family'] or 'net'}.{norm}", "flow", text + ".", nums))

    # He et al. 2015 §4: BN plain nets have healthy backward norms.
    bn_plain = sorted([r for r in head if r["arch"] == "plain" and r["norm"] == "batch"], key=lambda r: r["depth"] or 0)
    if bn_plain:
        bad = [r for r in bn_plain if r["verdict"] in ("exploding", "vanishing")]
        ok = [r for r in bn_plain if r["verdict"] == "healthy"]
        claim = "BN plain nets: \"the backward propagated gradients exhibit healthy norms\""
        paper = cite_text("he2015", "§4.1")
        if bad:
            worst = max(bad, key=lambda r: abs(r["log10_ratio"]) if r["log10_ratio"] is not None else math.inf)
            kinds = sorted({r["verdict"] for r in bad})
            text = (f"He et al. 2015 (§4.1) state that their BN plain nets' backward gradients have healthy norms; "
                    f"measured here at initialisation, BN plain nets are {' and '.join(kinds)} at "
                    f"{_depths(bad)}" + (f" (healthy at {_depths(ok)})" if ok else "") +
                    f", the first/last ratio reaching {_ratio(worst)} for {row_label(worst, with_norm=False)} — "
                    f"this contradicts §4.1 for these nets")
            if "exploding" in kinds:
                text += (", and agrees with Philipp et al. 2018 (arXiv 1712.05577) that batch normalisation "
                         "does not stop gradients from exploding")
            relation = "contradicts"
        else:
            text = (f"He et al. 2015 (§4.1) state that BN plain nets have healthy gradient norms; measured at "
                    f"initialisation, BN plain nets are healthy at every depth measured ({_depths(ok)}; "
                    f"first/last ratio {_range(ok)}) — this agrees with §4.1")
            relation = "agrees" if ok else None
        text += " (their check was on ImageNet plain nets during training; this is at initialisation)."
        out.append(_finding("flow.he2015-4.1", "flow", text,
                            {"depths": [r["depth"] for r in bn_plain], "layers": [r["layers"] for r in bn_plain],
                             "log10_ratios": [r["log10_ratio"] for r in bn_plain],
                             "verdicts": [r["verdict"] for r in bn_plain]},
                            paper=paper, claim=claim, relation=relation))

    # He et al. 2016 Eq. 5: the identity term keeps the gradient from vanishing.
    fam = head[0]["family"] if head else rows[0]["family"]
    res_all = [r for r in rows if r["arch"] == "residual" and r["family"] == fam]
    res = [r for r in head if r["arch"] == "residual"]
    if res_all:
        vanish = [r for r in res_all if r["verdict"] == "vanishing"]
        explode = [r for r in res_all if r["verdict"] == "exploding"]
        parts = []
        for norm in sorted({r["norm"] for r in res}, key=lambda s: (s != "batch", s)):
            rs = sorted([r for r in res if r["norm"] == norm], key=lambda r: r["depth"] or 0)
            ps = [r for r in head if r["arch"] == "plain" and r["norm"] == norm]
            s = (f"{'with BN' if norm == 'batch' else 'without normalisation' if norm == 'none' else norm}, "
                 f"residual nets' first/last ratio is {_range(rs)} over {_depths(rs)}")
            if ps:
                s += f" (plain: {_range(ps)})"
            parts.append(s)
        setting = _activation_init(res)
        text = (f"{setting}: " + "; ".join(parts)) if parts and setting else "; ".join(parts) or f"Residual nets ({fam})"
        text = text[0].upper() + text[1:]
        if vanish:
            text += (f" — but the residual gradient vanishes in {_grouped(vanish, by_act=True)}, which contradicts "
                     f"Eq. 5 as a general claim: it holds only for an identity skip path with nothing after the "
                     f"addition (He et al. 2016 §3), and a post-activation unit applies its activation there")
            relation = "contradicts"
        elif explode:
            text += (f" — no residual net vanishes, as Eq. 5 predicts, but {_grouped(explode, by_act=True)} explode: "
                     f"the identity term rules out vanishing, not growth (1 + ∂F/∂x can exceed 1)")
            relation = "partly"
        else:
            text += " — no residual net vanishes or explodes, as the identity term of Eq. 5 predicts"
            relation = "agrees"
        out.append(_finding("flow.he2016-eq5", "flow", text + ".",
                            {"depths": [r["depth"] for r in res_all], "norms": [r["norm"] for r in res_all],
                             "activations": [r["activation"] for r in res_all],
                             "log10_ratios": [r["log10_ratio"] for r in res_all],
                             "verdicts": [r["verdict"] for r in res_all]},
                            paper=cite_text("he2016", "Eq. 5"),
                            claim="the gradient of a layer does not vanish even when the weights are arbitrarily small",
                            relation=relation))

    # Where a plain net's gradient vanished: did its residual twin's?
    pairs = _vanishing_pairs(rows)
    if pairs:
        rescued = [(p, t) for p, t in pairs if t is not None and t["verdict"] != "vanishing"]
        with_twin = [(p, t) for p, t in pairs if t is not None]
        text = (f"The plain net's gradient vanished in {len(pairs)} configuration{'s' if len(pairs) != 1 else ''} "
                f"({_grouped([p for p, _ in pairs], by_act=True)}); its residual twin's did not in "
                f"{len(rescued)} of {len(with_twin)}")
        examples = sorted(with_twin, key=lambda pt: pt[0]["log10_ratio"] if pt[0]["log10_ratio"] is not None else 0)[:2]
        text += " (" + "; ".join(f"{row_label(p)}, {p['activation']}: {_ratio(p)} vs {_ratio(t)}"
                                 for p, t in examples) + ")" if examples else ""
        out.append(_finding("flow.vanishing-twins", "flow", text + ".",
                            {"plain_vanishing": len(pairs), "with_twin": len(with_twin), "rescued": len(rescued),
                             "examples": [[p["log10_ratio"], t["log10_ratio"]] for p, t in examples]}))

    # The whole grid: verdict counts per architecture.
    kinds = ["vanishing", "healthy", "exploding"] + (["non-finite"] if any(r["verdict"] == "non-finite" for r in rows) else [])
    counts = {a: {v: sum(1 for r in rows if r["arch"] == a and r["verdict"] == v) for v in kinds}
              for a in ("plain", "residual")}
    depths = sorted({r["depth"] for r in rows if r["depth"]})
    text = (f"Across all {len(rows)} configurations measured at initialisation ({depths[0]}–{depths[-1]} blocks): "
            if depths else f"Across all {len(rows)} configurations measured at initialisation: ")
    text += "; ".join(f"{a} — " + ", ".join(f"{c[v]} {v}" for v in kinds) for a, c in counts.items())
    vanishing = [r for r in rows if r["verdict"] == "vanishing"]
    if vanishing:
        text += f". Vanishing gradients appear in: {_labels(vanishing[:4], full=True)}" + (" …" if len(vanishing) > 4 else "")
    out.append(_finding("flow.verdicts", "flow", text + ".", {"counts": counts, "n_configs": len(rows)}))
    return out


def _depths(rs: list[dict[str, Any]]) -> str:
    """``20, 56 and 110 layers`` for the He et al. family, ``4 and 16 blocks`` for MLPs."""
    if not rs:
        return NA
    mlp = any(r.get("family") == "mlp" for r in rs)
    ds = [str(r["depth"] if mlp or not r.get("layers") else r["layers"]) for r in rs]
    unit = "blocks" if mlp or not rs[0].get("layers") else "layers"
    return (", ".join(ds[:-1]) + " and " + ds[-1] if len(ds) > 1 else ds[0]) + f" {unit}"


def _range(rs: list[dict[str, Any]]) -> str:
    v = [r["log10_ratio"] for r in rs if r["log10_ratio"] is not None]
    if not v:
        return NA
    return f"{pow10(v[0])}×" if len(v) == 1 else f"{pow10(min(v))}× to {pow10(max(v))}×"


def _grouped(rs: list[dict[str, Any]], by_act: bool = False) -> str:
    """``ResNets without normalisation (20, 56 and 110 layers)``: one group per family, arch, norm
    (and activation)."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for r in rs:
        groups.setdefault((r["family"], r["arch"], r["norm"], r["activation"] if by_act else ""), []).append(r)
    parts = []
    for (fam, arch, norm, act), g in groups.items():
        name = ("plain" if arch == "plain" else "residual") + " MLPs" if fam == "mlp" else (
            "plain nets" if arch == "plain" else "ResNets")
        how = "with BN" if norm == "batch" else "without normalisation" if norm == "none" else f"({norm})"
        parts.append(f"{f'{act} ' if act else ''}{name} {how} ({_depths(g)})")
    return ", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else parts[0] if parts else NA


_NAMES = {"relu": "ReLU", "gelu": "GELU", "he": "He", "xavier": "Xavier"}


def _activation_init(rs: list[dict[str, Any]]) -> str:
    """``ReLU, He init``: the activation and init a group of rows share."""
    acts = sorted({_NAMES.get(r["activation"], r["activation"]) for r in rs if r.get("activation")})
    inits = sorted({_NAMES.get(r["init"], r["init"]) for r in rs if r.get("init")})
    bits = ([", ".join(acts)] if acts else []) + ([", ".join(inits) + " init"] if inits else [])
    return ", ".join(bits)


def _twin(rows: list[dict[str, Any]], r: dict[str, Any]) -> dict[str, Any] | None:
    """The same config with the other architecture."""
    other = "residual" if r["arch"] == "plain" else "plain"
    key = ("family", "norm", "activation", "init", "depth")
    return next((t for t in rows if t["arch"] == other and all(t[k] == r[k] for k in key)), None)


def _vanishing_pairs(rows: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
    return [(p, _twin(rows, p)) for p in rows if p["arch"] == "plain" and p["verdict"] == "vanishing"]


def _labels(rs: list[dict[str, Any]], full: bool = False) -> str:
    def one(r: dict[str, Any]) -> str:
        extra = f" ({_activation_init([r])})" if full and r.get("activation") else ""
        return row_label(r) + extra

    return ", ".join(one(r) for r in rs)


# -- degradation --------------------------------------------------------------------------


def _deg_findings(deg: dict[str, Any]) -> list[Finding]:
    table = degradation_table(deg)
    out: list[Finding] = []
    epochs = train_epochs(deg)
    for arch in ("plain", "residual"):
        cells = [(t["depth"], t[arch]) for t in table if isinstance(t.get(arch), dict)
                 and num(t[arch].get("train_error")) is not None]
        if len(cells) < 2:
            continue
        (d0, c0), (d1, c1) = cells[0], cells[-1]
        e0, e1 = num(c0["train_error"]), num(c1["train_error"])
        sd = math.hypot(num(c0.get("train_error_std")) or 0.0, num(c1.get("train_error_std")) or 0.0)
        degraded = e1 - e0 > max(DEGRADE_MARGIN, 2 * sd)
        seeds = c1.get("n_seeds")
        name = "plain" if arch == "plain" else "ResNet"
        series = ", ".join(f"{pct(c['train_error'])} at depth {d}" for d, c in cells)
        text = (f"{'Plain' if arch == 'plain' else 'Residual'} nets, final train error "
                f"{'(mean of ' + str(seeds) + ' seeds) ' if seeds and seeds != 1 else '(1 seed) ' if seeds else ''}"
                f"{'after ' + str(epochs) + ' epochs' if epochs else ''}: {series}").replace(" :", ":")
        if arch == "plain":
            if degraded:
                text += (f" — {name}-{d1} trains worse than {name}-{d0}: the degradation problem, as He et al. 2015 "
                         f"report on CIFAR-10 (Fig. 1, Fig. 6 left)")
                relation = "agrees"
            else:
                text += (f" — no degradation with depth here (change {_points(e1 - e0)}, margin "
                         f"{_points(max(DEGRADE_MARGIN, 2 * sd))}), which does not reproduce He et al. 2015 Fig. 1/6 "
                         f"at these depths and epochs")
                relation = "contradicts"
            claim = "\"The deep plain nets suffer from increased depth, and exhibit higher training error when going deeper\""
        else:
            if degraded:
                text += (f" — the residual nets also degrade with depth ({_points(e1 - e0)}), unlike He et al. "
                         f"2015 Fig. 6 (middle)")
                relation = "contradicts"
            else:
                text += (f" — no degradation with depth (change {_points(e1 - e0)}), as He et al. 2015 "
                         f"report for ResNets (Fig. 6 middle)")
                relation = "agrees"
            claim = "ResNets overcome the optimisation difficulty: deeper ones do not train worse"
        out.append(_finding(f"degradation.{arch}", "degradation", text + ".",
                            {"depths": [d for d, _ in cells], "train_errors": [num(c["train_error"]) for _, c in cells],
                             "first": e0, "last": e1, "std": sd, "degraded": degraded},
                            paper=cite_text("he2015", "Fig. 1, Fig. 6"), claim=claim, relation=relation))

    # The deepest depth with both: the gap between twins.
    both = [t for t in table if isinstance(t.get("plain"), dict) and isinstance(t.get("residual"), dict)]
    if both:
        t = both[-1]
        pe, re_ = num(t["plain"].get("test_error")), num(t["residual"].get("test_error"))
        pt, rt = num(t["plain"].get("train_error")), num(t["residual"].get("train_error"))
        text = (f"At depth {t['depth']}, same parameters and recipe: plain test error {pct(pe)} "
                f"(train {pct(pt)}) vs residual {pct(re_)} (train {pct(rt)})")
        nums = {"depth": t["depth"], "plain_test": pe, "residual_test": re_, "plain_train": pt, "residual_train": rt}
        data = data_name(deg) or ""
        ref = PUBLISHED["he2015_table6"].get(int(t["depth"]))
        paper = claim = relation = None
        if "cifar" in data.lower() and ref is not None and re_ is not None:
            text += (f"; He et al. 2015 Table 6 report {pct(ref)} for ResNet-{t['depth']} on CIFAR-10 "
                     f"(measured {sig(100 * (re_ - ref))} points {'above' if re_ > ref else 'below'})")
            nums["he2015_table6"] = ref
            paper, claim = cite_text("he2015", "Table 6"), f"ResNet-{t['depth']} CIFAR-10 test error {pct(ref)}"
            relation = "agrees" if abs(re_ - ref) <= 0.02 else "contradicts"
        out.append(_finding("degradation.gap", "degradation", text + ".", nums,
                            paper=paper, claim=claim, relation=relation))
    return out


# -- the ensemble view --------------------------------------------------------------------


def _ens_findings(ens: dict[str, Any]) -> list[Finding]:
    v = ensemble_view(ens)
    out: list[Finding] = []
    if not v:
        return out
    n = v["n"]
    model = pretty_model(v["model"]) if v["model"] else "the residual net"
    vlo, vhi = PUBLISHED["veit_window"]
    vn, vshare = PUBLISHED["veit_blocks"], PUBLISHED["veit_share"]
    for kind, label in (("exact", "exact decomposition (norm of the summed path gradient per length)"),
                        ("sampled", "sampled single paths (count × mean magnitude per length)")):
        w = v[f"eff_{kind}"]
        if not w or n is None:
            continue
        mass = w["mass"] if w["mass"] is not None else 0.9
        if kind == "exact":
            per_length = v["exact_norms"]
        else:
            per_length = [None] * (n + 1)
            for k, t in zip(v["sampled_lengths"], v["sampled_total"], strict=False):
                if 0 <= k <= n:
                    per_length[k] = t
        wl = weighted_length(per_length)
        mid, sd = n / 2, math.sqrt(n) / 2  # a random path's length: Binomial(n, 1/2)
        relation = (None if wl is None else "contradicts" if wl >= mid else "agrees" if wl < mid - 2 * sd
                    else "partly")
        text = (f"{model} ({n} blocks), {label}: {pct(mass)} of the gradient magnitude comes from paths "
                f"{w['lo']}–{w['hi']} blocks long, {pct(w['share'])} of all 2^{n} paths; weighted by gradient "
                f"magnitude the mean path length is {sig(wl)} blocks, against {mid:g} ± {sig(sd)} for a random path. "
                f"Veit et al. 2016 report {vlo}–{vhi} of {vn} blocks, {pct(vshare)} of paths")
        if n != vn:
            text += (f" (relative to depth {pct(vlo / vn)}–{pct(vhi / vn)} of the blocks; here "
                     f"{pct(w['lo'] / n)}–{pct(w['hi'] / n)})")
        text += " — " + {
            None: "the per-length magnitudes are not finite, so the comparison cannot be made",
            "agrees": "the gradient comes from paths much shorter than a typical path, as Veit et al. found",
            "partly": "shorter than a typical path, but by less than two standard deviations of the path-length "
                      "distribution, so only partly as Veit et al. found",
            "contradicts": "the gradient is not concentrated on short paths, which contradicts Veit et al.",
        }[relation]
        if n < 20:
            text += f" (with only {n} blocks path lengths barely spread, so this is a weak test)"
        out.append(_finding(f"ensemble.window.{kind}", "ensemble", text + ".",
                            {"n_blocks": n, "lo": w["lo"], "hi": w["hi"], "mass": mass, "share": w["share"],
                             "weighted_length": wl, "random_length": mid, "random_sd": sd},
                            paper=cite_text("veit2016", "§5"),
                            claim=f"effective paths {vlo}–{vhi} of {vn} modules long, {pct(vshare)} of all paths",
                            relation=relation))

    ks, ms = v["sampled_lengths"], v["sampled_mean"]
    pts = [(k, m) for k, m in zip(ks, ms, strict=False) if m is not None and m > 0]
    if len(pts) >= 3:
        slope = _fit_slope([k for k, _ in pts], [math.log10(m) for _, m in pts])
        factor = 10 ** (-slope)
        text = (f"The mean gradient magnitude of a single path falls by {times(factor)} per extra block on it "
                f"(log-linear fit over lengths {pts[0][0]}–{pts[-1][0]}"
                + (f", {v['samples']} samples per length" if v["samples"] else "") + ")")
        text += (" — exponential decay with path length, as Veit et al. 2016 Fig. 6(b) show" if factor > 1 else
                 " — it does not decay with path length, which contradicts Veit et al. 2016 Fig. 6(b)")
        out.append(_finding("ensemble.decay", "ensemble", text + ".",
                            {"factor_per_block": factor, "log10_slope": slope, "lengths": [k for k, _ in pts]},
                            paper=cite_text("veit2016", "§5, Fig. 6"),
                            claim="the gradient magnitude of a path decreases exponentially with its length",
                            relation="agrees" if factor > 1 else "contradicts"))

    lr, lp = v["lesion_res"], v["lesion_plain"]
    if lr and lr["baseline"] is not None and lr["blocks"]:
        normal = [b["error"] for b in lr["blocks"] if not b["downsample"] and b["error"] is not None]
        down = [b for b in lr["blocks"] if b["downsample"] and b["error"] is not None]
        if normal:
            worst = max(normal)
            rise = worst - lr["baseline"]
            text = (f"Deleting any single non-downsampling block of {pretty_model(lr['model']) if lr['model'] else model} changes test error from "
                    f"{pct(lr['baseline'])} to at most {pct(worst)} ({_signed(100 * rise)} points, median "
                    f"{pct(statistics.median(normal))})")
            nums = {"baseline": lr["baseline"], "worst": worst, "rise": rise, "median": statistics.median(normal)}
            if down:
                wd = max(down, key=lambda b: b["error"])
                text += f"; deleting downsampling block {wd['block']} gives {pct(wd['error'])}"
                nums["downsample_worst"] = wd["error"]
            agrees = rise <= LESION_NOTICEABLE
            if lp and lp["baseline"] is not None:
                pe = [b["error"] for b in lp["blocks"] if b["error"] is not None]
                if pe:
                    med = statistics.median(pe)
                    text += (f"; deleting a single block of its plain twin {pretty_model(lp['model']) if lp['model'] else ''} gives a median "
                             f"{pct(med)} (baseline {pct(lp['baseline'])})")
                    nums.update(plain_baseline=lp["baseline"], plain_median=med)
            if agrees:
                text += (" — no noticeable change for the residual net, as Veit et al. 2016 (§4) found "
                         "(deleting a residual block: harmless; deleting a VGG layer: error to chance)")
            else:
                text += (f" — a noticeable change (above {sig(100 * LESION_NOTICEABLE)} points), which contradicts "
                         "Veit et al. 2016 (§4), who found deleting a single residual block harmless")
            out.append(_finding("ensemble.lesion", "ensemble", text + ".", nums,
                                paper=cite_text("veit2016", "§4"),
                                claim="deleting one block (not downsampling) causes no noticeable change; a VGG layer: chance",
                                relation="agrees" if agrees else "contradicts"))

    d = v["del_res"]
    if d:
        pts = [(k, m) for k, m in zip(d["x"], d["mean"], strict=False) if k is not None and m is not None]
        if len(pts) >= 2:
            at = {int(k): m for k, m in pts}
            # Judge the rise up to where the curve reaches its plateau (within 5 points of its
            # maximum, typically chance); wobbles on the plateau are trial noise, not a dip.
            top = max(m for _, m in pts)
            cut = next(i for i, (_, m) in enumerate(pts) if m >= top - 0.05)
            rising = pts[: cut + 1]
            smooth = all(b[1] >= a[1] - 0.02 for a, b in zip(rising, rising[1:], strict=False))
            plateau = int(pts[cut][0]) if cut < len(pts) - 1 else None
            text = f"Deleting k random blocks of {model}: test error {pct(pts[0][1])} at k={int(pts[0][0])}"
            for k in (10, 20):
                if k in at:
                    text += f", {pct(at[k])} at k={k}"
            if int(pts[-1][0]) not in (10, 20):
                text += f", {pct(pts[-1][1])} at k={int(pts[-1][0])}"
            text += (" — it rises smoothly with k" if smooth else " — it does not rise smoothly with k")
            if plateau is not None:
                text += f" and levels off near {pct(top)} from k={plateau}"
            text += (f"; Veit et al. 2016 (§4) report about {pct(PUBLISHED['veit_delete10'])} after deleting 10 "
                     f"of {vn} blocks on CIFAR-10 and a severe drop at 20")
            out.append(_finding("ensemble.deletion", "ensemble", text + ".",
                                {"k": [int(k) for k, _ in pts], "error": [m for _, m in pts], "smooth": smooth, "plateau_k": plateau,
                                 "at10": at.get(10), "at20": at.get(20)},
                                paper=cite_text("veit2016", "§4"),
                                claim="error rises smoothly as more blocks are deleted",
                                relation="agrees" if smooth else "contradicts"))

    r = v["reorder"]
    if r:
        pts = [(t, m) for t, m in zip(r["x"], r["mean"], strict=False) if t is not None and m is not None]
        if len(pts) >= 3:
            corr = _pearson([t for t, _ in pts], [m for _, m in pts])
            hi_tau, lo_tau = max(pts), min(pts)
            text = (f"Reordering blocks of {model}: test error {pct(hi_tau[1])} at Kendall τ = {sig(hi_tau[0])}, "
                    f"{pct(lo_tau[1])} at τ = {sig(lo_tau[0])} (correlation of error with τ: {sig(corr)})")
            ok = corr is not None and corr < -0.5
            text += (" — error rises smoothly as the order is corrupted, as Veit et al. 2016 (§4) found" if ok else
                     " — error does not track the corruption, unlike Veit et al. 2016 (§4)")
            out.append(_finding("ensemble.reorder", "ensemble", text + ".",
                                {"tau": [t for t, _ in pts], "error": [m for _, m in pts], "correlation": corr},
                                paper=cite_text("veit2016", "§4"),
                                claim="error rises smoothly with the level of corruption (Kendall τ)",
                                relation="agrees" if ok else "contradicts"))
    return out


def _fit_slope(x: list[float], y: list[float]) -> float:
    mx, my = sum(x) / len(x), sum(y) / len(y)
    sxx = sum((a - mx) ** 2 for a in x)
    return sum((a - mx) * (b - my) for a, b in zip(x, y, strict=False)) / sxx if sxx else 0.0


def _pearson(x: list[float], y: list[float]) -> float | None:
    mx, my = sum(x) / len(x), sum(y) / len(y)
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    if sxx == 0 or syy == 0:
        return None
    return sum((a - mx) * (b - my) for a, b in zip(x, y, strict=False)) / math.sqrt(sxx * syy)


# -- the measured answer ------------------------------------------------------------------


def _answer(results: dict[str, Any], found: list[Finding]) -> Finding | None:
    """One hedged sentence over the three kinds of evidence, from the findings' numbers."""
    by = {f["id"]: f for f in found}
    verdicts: list[str] = []
    clauses: list[str] = []
    used: dict[str, Any] = {}

    rows = flow_rows(section(results, "flow"))
    pairs = _vanishing_pairs(rows)
    with_twin = [(p, t) for p, t in pairs if t is not None]
    rescued = [(p, t) for p, t in with_twin if t["verdict"] != "vanishing"]
    if with_twin:
        used.update(plain_vanishing=len(with_twin), rescued=len(rescued))
        if len(rescued) == len(with_twin):
            verdicts.append(f"yes where gradients vanished: in all {len(with_twin)} configurations where a plain net's "
                            f"gradient vanished, its residual twin's did not")
        elif rescued:
            verdicts.append(f"partly: in {len(rescued)} of the {len(with_twin)} configurations where a plain net's "
                            f"gradient vanished, its residual twin's did not")
        else:
            verdicts.append(f"no: in all {len(with_twin)} configurations where a plain net's gradient vanished, its "
                            f"residual twin's vanished too")
    elif rows:
        verdicts.append("no plain net's gradient vanished here, so there was no vanishing gradient to solve")

    head = headline_rows(rows)
    norm = "batch" if any(r["norm"] == "batch" for r in head) else (head[0]["norm"] if head else None)
    ps = [r for r in head if r["arch"] == "plain" and r["norm"] == norm and r["depth"]]
    if ps:
        p = max(ps, key=lambda r: r["depth"])
        t = _twin(head, p)
        s = f"at initialisation, {row_label(p)}'s gradient is {p['verdict'] or NA} ({_ratio(p)} first/last)"
        where = (f"in the He et al. setting ({row_label(p)})" if p["family"] == "he2015" and norm == "batch"
                 else f"for {row_label(p)}")
        used.update(plain_log10_ratio=p["log10_ratio"], plain_verdict=p["verdict"])
        if t is not None:
            s += f", its residual twin's {t['verdict'] or NA} ({_ratio(t)})"
            used.update(residual_log10_ratio=t["log10_ratio"], residual_verdict=t["verdict"])
            pl, rl = p["log10_ratio"], t["log10_ratio"]
            if p["verdict"] == "exploding" and t["verdict"] == "healthy":
                verdicts.append(f"{where} the plain gradient did not vanish but "
                                f"exploded, and the skip kept it healthy")
            elif p["verdict"] == "exploding" and t["verdict"] == "exploding" and pl and rl is not None and abs(rl) < abs(pl) / 2:
                verdicts.append(f"{where} the plain gradient did not vanish but "
                                f"exploded, and the skip reduced that growth ({_ratio(t)} vs {_ratio(p)}) without "
                                f"removing it")
            elif p["verdict"] == "exploding":
                verdicts.append(f"{where} the plain gradient exploded and the skip "
                                f"did not tame it")
            elif p["verdict"] == "healthy" and t["verdict"] == "healthy":
                verdicts.append(f"{where} neither gradient vanished or exploded")
        clauses.append(s)
    v = by.get("flow.vanishing-twins")
    if v:
        clauses.append(v["sentence"][0].lower() + v["sentence"][1:-1])

    dp, dr = by.get("degradation.plain"), by.get("degradation.residual")
    if dp:
        n = dp["numbers"]
        s = (f"plain nets {'degrade' if n['degraded'] else 'do not degrade'} with depth (train error "
             f"{pct(n['first'])} → {pct(n['last'])}, depth {n['depths'][0]} → {n['depths'][-1]})")
        if dr:
            m = dr["numbers"]
            s += f" while residual nets {'also degrade' if m['degraded'] else 'do not'} ({pct(m['first'])} → {pct(m['last'])})"
        clauses.append(s)
        used.update(plain_degraded=n["degraded"], residual_degraded=dr["numbers"]["degraded"] if dr else None)
        if n["degraded"] and dr and not dr["numbers"]["degraded"]:
            verdicts.append("residual nets train where deep plain ones fail")
        elif not n["degraded"]:
            verdicts.append("the deep plain nets trained as well as the shallow ones here")

    w = by.get("ensemble.window.exact") or by.get("ensemble.window.sampled")
    if w:
        n = w["numbers"]
        clauses.append(f"90% of the trained residual net's gradient magnitude comes from paths {n['lo']}–{n['hi']} "
                       f"of {n['n_blocks']} blocks long ({pct(n['share'])} of paths; magnitude-weighted mean length "
                       f"{sig(n['weighted_length'])} vs {n['random_length']:g} for a random path)")
        used.update(window=[n["lo"], n["hi"]], n_blocks=n["n_blocks"], weighted_length=n["weighted_length"])
        if w["relation"] == "agrees":
            verdicts.append("and the trained residual net's gradient travels mostly along short paths, as in Veit "
                            "et al.'s ensemble view, rather than through its full depth")
    if not clauses and not verdicts:
        return None
    verdict = "; ".join(verdicts) if verdicts else "the evidence measured is partial"
    verdict = verdict[0].upper() + verdict[1:]
    setting = _setting(results)
    lead = f"Measured answer{' (' + setting + ')' if setting else ''}"
    hedge = "This holds for the nets, data and depths measured here, not in general."
    text = f"{lead}: {verdict}. Evidence: " + "; ".join(clauses) + ". " + hedge
    f = _finding("answer", "answer", text, used)
    # The same sentence in parts, for the report's headline box.
    f.update(lead=lead, verdict=verdict, evidence=clauses, hedge=hedge)
    return f


def _setting(results: dict[str, Any]) -> str:
    """``mnist1d, 12 epochs × 1 seed of training``: what the answer rests on."""
    parts = []
    data = next((d for d in (data_name(section(results, m)) for m in ("degradation", "ensemble", "flow")) if d),
                data_name(results))
    if data:
        parts.append(data)
    deg = section(results, "degradation")
    epochs = train_epochs(deg)
    c = (deg or {}).get("config") if isinstance((deg or {}).get("config"), dict) else {}
    seeds = c.get("seeds")
    n = len(seeds) if isinstance(seeds, list) else seeds if isinstance(seeds, int) else None
    if epochs and n:
        parts.append(f"{epochs} epochs × {n} seed{'s' if n != 1 else ''} of training")
    elif epochs:
        parts.append(f"{epochs} epochs of training")
    return ", ".join(parts)


def findings(results: dict[str, Any]) -> list[Finding]:
    """Every finding the numbers in ``results`` support, the overall measured answer first.

    Each is ``{"id", "section", "sentence", "numbers", "paper", "claim", "relation"}``;
    ``relation`` is "agrees", "contradicts", "partly" or None when no paper is compared.
    """
    if not isinstance(results, dict):
        raise TypeError(f"findings() needs a results dict, received {type(results).__name__}")
    found: list[Finding] = []
    for name, fn in (("flow", _flow_findings), ("degradation", _deg_findings), ("ensemble", _ens_findings)):
        sec = section(results, name)
        if sec:
            found += fn(sec)
    answer = _answer(results, found)
    return ([answer] if answer else []) + found
