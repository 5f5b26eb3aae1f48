"""Findings on the Transformer study: pre-LN vs post-LN vs no skip (a TransformerResult).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from resgrad import verdicts as V
from resgrad.results.transformer import TransformerResult

from .._fmt import NA, pct, pow10, sig, times
from .._read import sections
from .._refs import cite_text
from ._base import TWIN, Finding, finding, points, spread
from .ensemble import ensemble_findings

__all__ = ["transformer_findings"]


def _way(x: float | None) -> str:
    """A share of the way from the intact error to chance: 0.46 -> "46% of the way to chance"."""
    if x is None:
        return NA
    return "below the intact error" if x < 0 else f"{pct(x)} of the way to chance"


def _twins(values: dict[str, Any], fmt: Any = times) -> str:
    return ", ".join(f"{TWIN[k]} {fmt(v)}" for k, v in values.items())




def transformer_findings(t: TransformerResult) -> list[Finding]:
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
        out.append(finding("transformer.growth", "transformer", text + ".",
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
        out.append(finding("transformer.stream", "transformer", text + ".",
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
                f"{points(w.difference)}, margin {spread(w.margin)}"
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
            text += (f" (but its better cell is within {spread(tv.margin)} of chance, {pct(tv.chance)}: "
                     "it barely trained, so the comparison says little)")
        nums = {"cold": w.cold, "warm": w.warm, "difference": w.difference, "margin": w.margin, "seeds": w.seeds,
                "cold_diverged": w.cold_diverged, "warm_diverged": w.warm_diverged, "failed": w.failed}
        if kind == "noskip":
            out.append(finding(f"transformer.warmup.{kind}", "transformer", text + ".", nums, w))
        else:
            out.append(finding(
                f"transformer.warmup.{kind}", "transformer", text + ".", nums, w, paper=cite_text("xiong2020", "§3"),
                claim="post-LN needs a learning-rate warm-up: without one it does not reach a usable model"
                if kind == "postln" else "pre-LN trains without warm-up", relation=w.relation))

    ns, pre = trains.get("noskip"), trains.get("preln")
    if ns is not None and ns.trained is not None:
        text = (f"The no-skip twin (the same {t.layers} layers and parameters without the skip) reaches a test error "
                f"of {pct(ns.error)} ({'with' if ns.warmup else 'without'} warm-up) against chance {pct(ns.chance)}: "
                + (f"it trains (more than {spread(ns.margin)} below chance)" if ns.trained else
                   f"it does not train (within {spread(ns.margin)} of chance)"))
        if pre is not None and pre.error is not None:
            text += f"; its pre-LN twin reaches {pct(pre.error)}"
            if pre.trained is False and ns.trained:
                # The words follow both records: the no-skip twin trains, the pre-LN twin does not.
                text += f", within {spread(pre.margin)} of chance: unlike the no-skip twin, it barely trained here"
            elif pre.trained is False:
                text += ", also within the margin of chance: too little training here to tell the twins apart"
        out.append(finding("transformer.noskip", "transformer", text + ".",
                            {"error": ns.error, "chance": ns.chance, "margin": ns.margin, "trained": ns.trained,
                             "preln_error": pre.error if pre else None}, ns))

    if t.ensemble is not None:
        chance_ = None if t.task == "lm" else next((c for c in chance.values() if c is not None), None)
        for f in ensemble_findings(sections(t.ensemble), chance_):
            out.append(dataclasses.replace(f, id="transformer." + f.id, section="transformer"))

    gromov, men, sun = cite_text("gromov2024"), cite_text("men2024"), cite_text("sun2024")
    for kind in TWIN:
        les = t.lesions.get(kind)
        if les is None:
            continue
        rv = V.removal_verdict(les)
        text = (f"{TWIN[kind]} ({rv.layers} layers, intact test error {pct(rv.base)}): deleting one layer keeps the "
                f"error within {spread(rv.tolerance)} for {rv.single_within} of {rv.layers} layers (worst: layer "
                f"{rv.single_worst_layer}, {pct(rv.single_worst)}); "
                + (f"up to {rv.removable_best} consecutive layer{'s' if rv.removable_best != 1 else ''} "
                   f"({pct(rv.share)}) can be removed within that at the best start, {rv.removable_angular} at Gromov "
                   "et al.'s angular-distance pick" if rv.removable_best else
                   "no block of consecutive layers can be removed within that, at any start"))
        text += " — " + {
            None: f"the intact net is within {spread(V.TRAINED_BELOW_CHANCE)} of chance ({pct(rv.chance)}), so there "
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
        out.append(finding(f"transformer.removal.{kind}", "transformer", text + ".", nums, rv,
                            paper=f"{gromov}; {men}" if residual else None,
                            claim="a large share of a trained Transformer's layers (about 25% to half) can be "
                                  "removed with little loss" if residual else None,
                            relation=rv.relation if residual else None))
        if rv.angular_relation is not None:
            text = (f"{TWIN[kind]}: Gromov et al.'s pick (the k-layer block whose input and output are closest in "
                    f"angle) is within {spread(rv.match_tolerance)} of the best start's error for "
                    f"{len(rv.matches)} of {len(rv.ks)} block sizes (k = {', '.join(map(str, rv.matches)) or 'none'})")
            text += {"agrees": " — it finds the best block to remove, as Gromov et al. 2024 propose",
                     "partly": " — it finds the best block for some sizes only",
                     "contradicts": " — it never finds the best block here, unlike Gromov et al. 2024"}[rv.angular_relation]
            out.append(finding(f"transformer.angular.{kind}", "transformer", text + ".",
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
        out.append(finding(f"transformer.reorder.{kind}", "transformer", text + ".",
                            {"layers": list(pv.layers), "base": pv.base, "chance": pv.chance, "reversed": pv.reversed,
                             "shuffled_mean": pv.shuffled_mean, "reversed_share": pv.reversed_share,
                             "shuffled_share": pv.shuffled_share, "first_last": list(pv.first_last),
                             "middle_worst": pv.middle_worst}, pv,
                            paper=sun if residual else None,
                            claim="the middle layers share a representation space: skipping or reordering them "
                                  "degrades gracefully; the first and last layers are special" if residual else None,
                            relation=pv.relation if residual else None))
    return out
