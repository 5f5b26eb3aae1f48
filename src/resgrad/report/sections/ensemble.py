"""The report's ensemble section: the path decomposition, lesions and reordering of a trained residual net
(Veit et al. 2016). The Transformer section draws its nested ensemble with the same ``section``.
"""

from __future__ import annotations

from html import escape
from typing import Any

from resgrad.results.ensemble import EnsembleResult

from ... import verdicts
from .. import figures as F
from .. import page as P
from .._fmt import NA, pct
from .._read import ensemble_view, pretty_model
from .._refs import PUBLISHED, cite
from ..findings import Finding, ensemble_findings
from ..registry import Part, register

__all__ = ["section", "HOW", "TITLE"]

TITLE = "The ensemble view"
HOW = "<code>resgrad paths</code> / <code>resgrad lesion</code> or <code>resgrad study</code>"


def section(ens: EnsembleResult | None, found: list[Finding], classes: int | None = 10) -> str:
    """The ensemble view of ``ens``; ``classes``: for the chance line (None: none drawn)."""
    if ens is None:
        return P.missing("ensemble", HOW)
    v = ensemble_view(ens)
    n = v["n"]
    model = escape(pretty_model(v["model"])) if v["model"] else "the trained residual net"
    out = []
    if v["models"]:
        # One baseline per net: the error every lesion, deletion and reordering below is measured against
        # (the lesion experiment's own evaluation). In a study it is measured on the training run's own test
        # examples, so it is the number the degradation table gives for the same net.
        lesions = {"residual": v["lesion_res"], "plain": v["lesion_plain"]}
        examples = (ens.config or {}).get("eval_examples")
        rows, own = [], False
        for role in ("residual", "plain"):
            m = v["models"].get(role)
            if m:
                src = {"initialisation": "untrained (measured at initialisation)", "object": "trained by the study",
                       "run": "a trained run folder", "trained": "trained for this experiment"}.get(
                    m.source, escape(m.source))
                les = lesions.get(role)
                base = les["baseline"] if les and les["baseline"] is not None else None
                own = own or base is not None
                rows.append([escape(role), escape(pretty_model(m.name)), P.n(f"{m.params:,}"),
                             P.n(str(m.blocks)), P.n(pct(base if base is not None else m.test_error)), src])
        head = "test error" + (" (lesion baseline)" if own else "")
        out.append("<h3>The nets</h3>" + P.table(["", "model", "parameters", "blocks", head, "source"], rows))
        if own:
            from_study = all(m.source == "object" for m in v["models"].values())
            if isinstance(examples, int):
                on = f"the first {examples} test examples"
                same = "It can differ from the training run's final error on the full test set."
            elif from_study:
                on, same = "the test examples", ("They are the examples the training run reported its error on, so "
                                                 "this is the number the degradation table gives for the same net.")
            else:
                on, same = "the whole test split", ""
            out.append(f"<p class='muted'>Test error of the intact net on {on} every lesion, deletion and reordering "
                       f"in this section is evaluated on: the one baseline the changes below are measured from. {same}"
                       "</p>")
        if any(m.source == "initialisation" for m in v["models"].values()):
            out.append("<p class='missing'>These nets were not trained: the path and lesion results describe an "
                       "untrained net, whereas Veit et al. measured a trained one.</p>")
    untrained = any(m.source == "initialisation" for m in v["models"].values())
    out += [f"<p>The {'untrained' if untrained else 'trained'} {model} ({n} blocks) unrolled into its "
            f"2<sup>{n}</sup> paths. "
           "<b>Exact</b>: the gradient at the first block's input is split by dynamic programming into the parts "
           "carried by all paths through exactly <i>k</i> branches; their norms are shown. <b>Sampled</b> (Veit's method): "
           "backpropagate through the branch of <i>k</i> random blocks and the skip of the rest, and record the gradient "
           "norm; total per length = path count × mean. The two differ because paths of the same length partly cancel "
           "when summed; the sampled total counts every path's magnitude.</p>"]
    vlo, vhi = PUBLISHED["veit_window"]
    out.append(P.img(F.ensemble_paths(v), "path lengths, gradient per length, total per length",
                    f"(a) share of paths per length; (b) gradient per length at the first block's input, log axis "
                    f"(◆: the plain twin's gradient, its only path); (c) share of the total gradient "
                    f"magnitude per length, with the effective windows shaded. Compare {cite('veit2016', '§5, Fig. 6')}"
                    f" (ResNet-110 on CIFAR-10: effective paths {vlo}–{vhi} of 54 blocks)."))
    wrows = []
    for kind, label in (("eff_exact", "exact"), ("eff_sampled", "sampled")):
        w = v[kind]
        if w:
            wrows.append([label, P.n(f"{w['lo']}–{w['hi']}"), P.n(str(n)), P.n(pct(w["mass"]) if w["mass"] else NA),
                          P.n(pct(w["share"]))])
    wrows.append([cite("veit2016", "§5") + " (sampled, CIFAR-10)", P.n(f"{vlo}–{vhi}"),
                  P.n(str(PUBLISHED["veit_blocks"])), P.n("“almost all”"), P.n(pct(PUBLISHED["veit_share"]))])
    out.append("<h3>Effective paths</h3>" + P.table(
        ["", "path lengths", "blocks", "share of gradient", "share of all paths"], wrows))
    if v["explanation"]:
        out.append(f"<p class='muted'>{escape(v['explanation'])}</p>")
    out.append(P.img(F.ensemble_lesion(v, classes), "test error after deleting one block",
                    f"Test error after deleting each single block at test time. Residual: the branch is removed; plain: "
                    f"the block is replaced by its shape-matching shortcut, as Veit et al. did for VGG layers "
                    f"({cite('veit2016', '§4')})."))
    out.append(P.img(F.ensemble_deletion(v, classes), "error vs deleted blocks and vs reordering",
                    "Left: deleting <i>k</i> random blocks (mean ± std over trials"
                    + (f"; ★: Veit et al.'s ≈20% at k = 10, {cite('veit2016', '§4')}" if (n or 0) >= 10 else "")
                    + f"). Right: swapping random pairs of blocks, error vs the Kendall τ of the "
                    f"new order; dots are single trials ({cite('veit2016', '§4')})."))
    out.append(P.comparison(found, "ensemble"))
    out.append(P.section_findings(found, "ensemble"))
    if v["notes"]:
        out.append("<details><summary>Notes from the ensemble experiment</summary><ul>" +
                   "".join(f"<li>{escape(x)}</li>" for x in v["notes"]) + "</ul></details>")
    for les, label in ((v["lesion_res"], "residual"), (v["lesion_plain"], "plain")):
        if les and les["blocks"]:
            trs = [[P.n(str(b["block"])), P.n(pct(b["error"])),
                    P.n(NA if b["error"] is None or les["baseline"] is None else f"{100 * (b['error'] - les['baseline']):+.3g}"),
                    "downsampling" if b["downsample"] else ""] for b in les["blocks"]]
            name = escape(pretty_model(les["model"])) if les["model"] else label
            out.append(f"<details><summary>Single-block lesions, {name} (baseline {pct(les['baseline'])})</summary>"
                       + P.table(["block", "test error", "change (points)", ""], trs, tall=True) + "</details>")
    return "\n".join(out)


def _timing(r: EnsembleResult) -> dict[str, Any]:
    total = r.timing.get("total")
    return {"ensemble": total} if total is not None else {}


register(Part("ensemble", EnsembleResult, TITLE, 30, verdicts.ensemble,
              lambda r, s: ensemble_findings(s), section, timing=_timing))
