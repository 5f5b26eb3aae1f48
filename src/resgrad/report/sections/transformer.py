"""The report's Transformer section: pre-LN vs post-LN vs no skip, from a TransformerResult.

``section(result, found)`` returns the section's HTML body: gradient flow at initialisation
(Xiong et al. 2020 Fig. 3), training with and without warm-up, the ensemble view of the
trained pre-LN net (drawn by the same code as the report's ensemble section) and layer
deletion and reordering (Gromov et al. 2024; Men et al. 2024; Sun et al. 2024). ``found``
holds the findings (report/findings/transformer.py); those with ids ``transformer.*`` are shown here.
Reads results only; imports no torch.
"""

from __future__ import annotations

import dataclasses
from html import escape
from typing import Any

from resgrad import verdicts as V
from resgrad.results.transformer import TransformerResult

from ... import verdicts
from .. import figures_transformer as FT
from .. import page as P
from .._fmt import NA, num, pct, sig
from .._refs import TRANSFORMER_PAPERS, cite
from ..findings import Finding, transformer_findings
from ..registry import Part, register
from .ensemble import section as ensemble_section

__all__ = ["section", "headline", "TITLE", "ENSEMBLE_PREFIX"]

TITLE = "Transformers: pre-LN, post-LN, no skip"
ENSEMBLE_PREFIX = "transformer.ensemble."  # the nested ensemble's findings, as findings/transformer.py names them

_NAMES = FT.NAMES


def _twin(kind: str) -> str:
    cls = "res" if kind == "preln" else "plain" if kind == "noskip" else ""
    return f"<span class='{cls}'>{escape(_NAMES.get(kind, kind))}</span>" if cls else escape(_NAMES.get(kind, kind))


def _pm(v: Any, s: Any) -> str:
    return pct(v) + (f" ± {pct(s)}" if num(s) is not None and num(s) > 0 else "")


def _pick(found: list[Finding], *prefixes: str) -> list[Finding]:
    return [f for f in found if f.section == "transformer" and f.id.startswith(prefixes)]


def _intro(t: TransformerResult) -> str:
    data = escape(t.data) + (" (a character-level language model)" if t.task == "lm" else " (classification)")
    out = [f"<p>Every Transformer layer is two residual units, attention and MLP, so an <i>L</i>-layer net has "
           f"2<i>L</i> units. Where the LayerNorm sits decides how its gradient behaves ({cite('xiong2020')}): "
           "<b>post-LN</b> (<code>LN(x + F(x))</code>, the original Transformer) puts the norm on the skip path; "
           "<b>pre-LN</b> (<code>x + F(LN(x))</code>) keeps the skip an identity; the <b>no-skip</b> twin computes "
           "<code>F(LN(x))</code>, the branches alone. The three twins have identical parameters "
           f"({t.params:,} at {t.layers} layers) and are measured on {data}.</p>"]
    if t.notes:
        out.append("<ul class='muted'>" + "".join(f"<li>{escape(n)}</li>" for n in t.notes) + "</ul>")
    return "\n".join(out)


def _flow(t: TransformerResult, found: list[Finding]) -> str:
    fl = t.flow
    if not fl.rows:
        return "<h3>Gradient at initialisation</h3><p class='missing'>No depths were measured at initialisation.</p>"
    depths = sorted({r.depth for r in fl.rows})
    out = ["<h3>Gradient at initialisation</h3>",
           f"<p>One forward and backward pass per seed at initialisation ({fl.batch} training examples, "
           f"{len(fl.seeds)} seed{'s' if len(fl.seeds) != 1 else ''}, depths {', '.join(map(str, depths))} layers). "
           "Per layer: the norm of the gradient of its weight matrices (attention and MLP together, not the LayerNorm "
           "gains, as in Xiong et al.'s Fig. 3); <b>growth</b> is the last layer's over the first's. The residual-stream "
           "gradient ‖∂L/∂h‖ is taken at each unit's input and after the last unit.</p>"]
    shown = FT.shown_depths(depths)
    out.append(P.img(FT.flow_layers(fl), "per-layer weight-gradient norm at initialisation",
                    f"Per-layer weight-gradient norm at initialisation at {' and '.join(map(str, shown))} layers, log "
                    f"axis, layer 0 nearest the input (mean over seeds). Compare {cite('xiong2020', 'Fig. 3')}: "
                    "post-LN's rises toward the output, pre-LN's is level."))
    out.append(P.img(FT.flow_growth(fl), "growth vs depth",
                    f"Left: last / first layer weight-gradient norm vs depth per twin (bars span the seeds; shaded: "
                    f"level, within {sig(V.GROWTH_TOWARD_OUTPUT)}× either way, the verdict's threshold). Right: the "
                    "residual-stream gradient at the first unit over that after the last."))
    by = {(r.kind, r.depth): r for r in fl.rows}
    trs = []
    for d in depths:
        row = [P.n(str(d))]
        for key in ("growth", "stream_ratio"):
            for kind in FT.KINDS:
                r = by.get((kind, d))
                row.append(P.n(f"{sig(getattr(r, key))}×" if r is not None and num(getattr(r, key)) is not None
                              else NA))
        trs.append(row)
    head = ["layers"] + [f"growth, {_twin(k)}" for k in FT.KINDS] + [f"stream first/last, {_twin(k)}" for k in FT.KINDS]
    out.append(P.table(head, trs))
    out.append(P.comparison(_pick(found, "transformer.growth", "transformer.stream"), "transformer", title=""))
    out.append(P.section_findings(_pick(found, "transformer.growth", "transformer.stream"), "transformer"))
    return "\n".join(out)


def _chance(t: TransformerResult) -> float | None:
    return next((les.chance for les in t.lesions.values() if num(les.chance) is not None), None)


def _training(t: TransformerResult, found: list[Finding]) -> str:
    tr = t.config.get("train") or {}
    ramp = t.config.get("warmup_epochs")
    recipe = ", ".join(x for x in (
        f"{escape(str(tr['optimizer']))}" if tr.get("optimizer") else "",
        f"lr {sig(tr['lr'])}" if tr.get("lr") is not None else "",
        f"betas {escape(str(tuple(tr['betas'])))}" if tr.get("betas") else "",
        f"weight decay {sig(tr['weight_decay'])}" if tr.get("weight_decay") is not None else "",
        f"batch {tr['batch_size']}" if tr.get("batch_size") else "",
        f"{tr['epochs']} epochs" if tr.get("epochs") else "") if x)
    out = ["<h3>Training with and without warm-up</h3>",
           f"<p>Each twin is trained twice with the same recipe ({recipe}): once at the full learning rate from the first "
           f"step, once with a linear warm-up{f' over {sig(ramp)} epoch' + ('s' if ramp != 1 else '') if ramp else ''}. "
           f"{cite('xiong2020', '§3')}: post-LN needs the warm-up, pre-LN does not. {cite('liu2020')} add that "
           "vanishing gradients alone do not explain post-LN's instability: its heavy dependence on the residual "
           "branches amplifies small parameter changes.</p>"]
    chance = _chance(t)
    out.append(P.img(FT.training_curves(t.runs, chance), "test error per epoch with and without warm-up",
                    "Test error per epoch with (solid) and without (dashed) warm-up, one panel per twin (mean over "
                    "seeds)" + ("; dotted: chance, always the most frequent test label." if chance is not None else ".")))
    trs = []
    for c in sorted(t.cells, key=lambda c: (FT.KINDS.index(c.kind) if c.kind in FT.KINDS else 9, not c.warmup)):
        trs.append([_twin(c.kind), "with" if c.warmup else "without", P.n(_pm(c.train_error, c.train_error_std)),
                    P.n(_pm(c.test_error, c.test_error_std)), P.n(str(c.n_seeds)), P.n(str(c.diverged))])
    if trs:
        out.append(P.table(["twin", "warm-up", "train error", "test error", "seeds", "diverged"], trs))
        out.append("<p class='muted'>Final errors as mean ± standard deviation over the seeds with a finite loss; "
                   "diverged: seeds whose loss went non-finite"
                   + (f"; chance {pct(chance)}." if chance is not None else ".") + "</p>")
    picked = _pick(found, "transformer.warmup.", "transformer.noskip")
    out.append(P.comparison(picked, "transformer", title=""))
    out.append(P.section_findings(picked, "transformer"))
    return "\n".join(out)


def _ens(t: TransformerResult, found: list[Finding]) -> str:
    out = ["<h3>The ensemble view of the trained pre-LN net</h3>"]
    if t.ensemble is None:
        out.append("<p class='missing'>Not measured: this result has no ensemble part.</p>")
        return "\n".join(out)
    n = t.ensemble.n
    out.append(f"<p>The pre-LN twin trained without warm-up, its {n if n is not None else '2L'} units (2 per layer) "
               "unrolled into paths, with the no-skip twin in the place of the plain net: the same measurements and "
               "figures as the ensemble section, on a Transformer. No published figure gives the effective path "
               "length of a Transformer over its units.</p>")
    local = [dataclasses.replace(f, id=f.id[len("transformer."):], section="ensemble")
             for f in _pick(found, ENSEMBLE_PREFIX)]
    out.append(ensemble_section(t.ensemble, local, classes=None if t.task == "lm" else 10))
    return "\n".join(out)


def _lesions(t: TransformerResult, found: list[Finding]) -> str:
    out = ["<h3>Layer deletion and reordering</h3>"]
    if not t.lesions:
        out.append("<p class='missing'>Not measured: this result has no layer lesions.</p>")
        return "\n".join(out)
    out.append(f"<p>On the three twins trained without warm-up, at test time. A layer is its attention and MLP units "
               "together; deleting it removes both branches (the skip remains, and for post-LN the norm after the sum; "
               "the no-skip twin's layer becomes the identity). <i>k</i> consecutive layers are removed at every start: "
               f"the best start is an oracle choice; {cite('gromov2024')} pick the start whose residual-stream input and "
               f"output are closest in angular distance. {cite('men2024')} rank single layers by a similar score. "
               f"Reordering runs the middle layers (all but the first and the last) reversed or shuffled "
               f"({cite('sun2024')}).</p>")
    out.append(P.img(FT.layer_lesions(t.lesions), "error after removing and reordering layers",
                    "(a) test error after removing <i>k</i> consecutive layers: best start (solid), mean over starts "
                    "(dashed), Gromov et al.'s angular pick (×); k = 0 is the intact net. (b) after deleting one layer. "
                    "(c) with the middle layers reversed or shuffled (dots: single orders). Dash-dot: chance."))
    trs = []
    for kind in FT.KINDS:
        les = t.lesions.get(kind)
        if les is None:
            continue
        rv = V.removal_verdict(les)
        ro = les.reorder
        trs.append([_twin(kind), P.n(pct(les.base)), P.n(pct(les.chance)),
                    P.n(f"{pct(rv.single_worst)} (layer {rv.single_worst_layer})" if rv.single_worst is not None else NA),
                    P.n(f"{rv.removable_best} / {rv.removable_angular}"),
                    P.n(pct(ro.reversed) if ro else NA), P.n(pct(ro.shuffled_mean) if ro else NA)])
    out.append(P.table(["twin", "intact", "chance", "worst single deletion",
                       f"layers removable within {sig(100 * V.REMOVAL_TOLERANCE)} points (best / angular)",
                       "middle reversed", "middle shuffled (mean)"], trs))
    picked = _pick(found, "transformer.removal.", "transformer.angular.", "transformer.reorder.")
    out.append(P.comparison(picked, "transformer", title=""))
    out.append(P.section_findings(picked, "transformer"))
    return "\n".join(out)


def section(t: TransformerResult, found: list[Finding]) -> str:
    """The Transformer section's HTML body for ``t`` (its findings taken from ``found``)."""
    return "\n".join([_intro(t), _flow(t, found), _training(t, found), _ens(t, found), _lesions(t, found)])


def headline(found: list[Finding]) -> str:
    """The headline of a transformer run alone: its findings on Xiong et al.'s two claims and the no-skip twin."""
    lines = [f for f in found if f.id in ("transformer.growth", "transformer.warmup.postln", "transformer.noskip")]
    if not lines:
        return '<div class="answer"><p>No findings: the Transformer result holds no comparable numbers.</p></div>'
    return ('<div class="answer"><p><span class="label">The Transformer study</span> (this run holds only it; see '
            '<a href="#transformer">its section</a>):</p><ul>'
            + "".join(f"<li>{P.linkify(escape(f.sentence))} {P.badge(f.relation)}</li>" for f in lines)
            + "</ul></div>")


register(Part("transformer", TransformerResult, TITLE, 40, verdicts.transformer,
              lambda r, s: transformer_findings(r), section, core=False,
              timing=lambda r: dict(r.timing), headline=headline, papers=TRANSFORMER_PAPERS))
