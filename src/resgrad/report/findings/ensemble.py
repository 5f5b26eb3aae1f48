"""Findings on the ensemble view of a trained residual net (an EnsembleResult; Veit et al. 2016).
"""

from __future__ import annotations

from typing import Any

from resgrad import verdicts as V

from .._fmt import pct, sig, times
from .._read import Sections, pretty_model
from .._refs import PUBLISHED, cite_text
from ._base import Finding, finding, signed, spread

__all__ = ["ensemble_findings", "CHANCE"]


# The chance error the k-deletion level is compared against where the caller names none: 10 classes,
# as the ensemble figures draw their chance line (MNIST-1D and CIFAR-10 both have 10).
CHANCE = 0.9


def ensemble_findings(s: Sections, chance: float | None = CHANCE) -> list[Finding]:
    """The ensemble view's findings; ``chance``: the chance error of the data (None: not known)."""
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
        out.append(finding(f"ensemble.window.{kind}", "ensemble", text + ".",
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
        out.append(finding("ensemble.decay", "ensemble", text + ".",
                            {"factor_per_block": dv.factor_per_block, "log10_slope": dv.log10_slope,
                             "lengths": list(dv.lengths)}, dv,
                            paper=cite_text("veit2016", "§5, Fig. 6"),
                            claim="the gradient magnitude of a path decreases exponentially with its length",
                            relation=dv.relation))

    lesion = e.lesion or {}
    lv = V.lesion_verdict(lesion["residual"], lesion.get("plain")) if "residual" in lesion else None
    if lv is not None:
        text = (f"Deleting any single non-downsampling block of {pretty_model(lv.model) if lv.model else model} "
                f"changes test error from {pct(lv.baseline)} to at most {pct(lv.worst)} ({signed(100 * lv.rise)} "
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
        out.append(finding("ensemble.lesion", "ensemble", text + ".", nums, lv,
                            paper=cite_text("veit2016", "§4"),
                            claim="deleting one block (not downsampling) causes no noticeable change; a VGG layer: chance",
                            relation=lv.relation))

    d = (e.deletion or {}).get("residual")
    kv = V.deletion_verdict(d, n, chance) if d is not None else None
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
        text += (f"; Veit et al. 2016 (§4) report about {pct(V.VEIT_DELETED_ERROR)} after deleting 10 of {vn} blocks "
                 f"on CIFAR-10, {pct(kv.paper_way)} of the way from the intact error to chance")
        if kv.way is not None:
            text += (f"; here, with the same share of the blocks deleted ({sig(kv.veit_k)} of {n}), the error is "
                     f"{pct(kv.veit_error)}, {pct(kv.way)} of the way to chance ({pct(kv.chance)})")
        text += " — " + {
            "agrees": f"within {spread(kv.tolerance)} of theirs, as Veit et al. found",
            "partly": (f"smooth, as Veit et al. found, but {'faster' if (kv.way or 0) > kv.paper_way else 'slower'} "
                       f"than their level (more than {spread(kv.tolerance)} of the way apart)" if kv.way is not None
                       else f"smooth, as Veit et al. found; the intact net is within {spread(V.DELETION_TRAINED_MARGIN)} "
                            f"of chance ({pct(kv.chance)}), so the level is not compared" if kv.near_chance
                       else "smooth, as Veit et al. found; without a chance error for these data the level is not "
                            "compared") if kv.smooth else "",
            "contradicts": "not the smooth rise Veit et al. found",
        }[kv.relation]
        out.append(finding("ensemble.deletion", "ensemble", text + ".",
                           {"k": list(kv.k), "error": list(kv.error), "smooth": kv.smooth, "plateau_k": kv.plateau_k,
                            "at10": kv.at10, "at20": kv.at20, "veit_k": kv.veit_k, "veit_error": kv.veit_error,
                            "way": kv.way, "paper_way": kv.paper_way, "chance": kv.chance}, kv,
                           paper=cite_text("veit2016", "§4"),
                           claim=f"error rises smoothly as more blocks are deleted, to about "
                                 f"{pct(V.VEIT_DELETED_ERROR)} after 10 of {vn} blocks",
                           relation=kv.relation))

    rv = V.reorder_verdict(e.reorder) if e.reorder is not None else None
    if rv is not None:
        pts = list(zip(rv.tau, rv.error, strict=True))
        hi_tau, lo_tau = max(pts), min(pts)
        text = (f"Reordering blocks of {model}: test error {pct(hi_tau[1])} at Kendall τ = {sig(hi_tau[0])}, "
                f"{pct(lo_tau[1])} at τ = {sig(lo_tau[0])} (correlation of error with τ: {sig(rv.correlation)})")
        text += (" — error rises smoothly as the order is corrupted, as Veit et al. 2016 (§4) found"
                 if rv.relation == "agrees" else " — error does not track the corruption, unlike Veit et al. 2016 (§4)")
        out.append(finding("ensemble.reorder", "ensemble", text + ".",
                            {"tau": list(rv.tau), "error": list(rv.error), "correlation": rv.correlation}, rv,
                            paper=cite_text("veit2016", "§4"),
                            claim="error rises smoothly with the level of corruption (Kendall τ)",
                            relation=rv.relation))
    return out
