"""The report's pretrained-models section, from a PretrainedResult: one block per model.

Each block: what was measured on which text, the depth profiles (gradients, branch gain,
cosine and skip share, hidden-state norm), the angular-distance heat map (Gromov et al. 2024),
the gradient by path length, the score against the fraction of layers removed, the findings
beside the papers' claims, and the caveats in words. A study without the stage, or one whose
wheels were missing, says so in one line. Reads results only; imports no torch.
"""

from __future__ import annotations

from html import escape

from resgrad.results.pretrained import ModelReport, PretrainedResult

from ... import verdicts
from .. import figures_pretrained as FP
from .. import page as P
from .._fmt import NA, sig
from .._refs import cite
from ..findings import Finding
from ..findings.pretrained import pretrained_findings
from ..registry import Part, register

__all__ = ["section", "headline", "TITLE"]

TITLE = "Pretrained models on real text"
PAPERS = ("xiong2020", "sun2025", "gromov2024", "men2024", "sun2024")


def _model(m: ModelReport, found: list[Finding]) -> str:
    b = m.batch
    corpus = (b.get("corpus") or {}).get("name", NA)
    what = "sequences" if m.task == "causal-lm" else "pairs of neighbouring sentences"
    loss = ("next-token cross-entropy" if m.task == "causal-lm"
            else "the in-batch contrastive loss it was trained with (scale 20)")
    out = [f"<h3>{escape(m.spec)}</h3>",
           f"<p>{'Pre' if m.norm == 'pre' else 'Post'}-LN, {m.layers} layers ({m.units} residual units), "
           f"{m.params:,} parameters; {b.get('rows', NA)} {what} of at most {b.get('seq_len', NA)} tokens of "
           f"<code>{escape(str(corpus))}</code> ({b.get('tokens', NA)} tokens), its own loss: {loss} "
           f"({sig(m.flow.loss)}).</p>"]
    out.append(P.img(FP.depth_profiles(m), "depth profiles",
                     "Per unit (0 nearest the input): the weight gradient and the residual-stream gradient at the "
                     "unit's input (log); the branch gain ‖J<sub>F</sub><sup>T</sup>u‖/‖u‖ over Gaussian probes "
                     "(band: ±1 sd; dotted: the skip's 1); the input/output cosine (dotted: "
                     f"{sig(verdicts.NEAR_IDENTITY)}, near the identity) and the share of the gradient through the "
                     f"branch; the hidden-state norm per layer ({cite('sun2025', 'Fig. 1')})."))
    out.append(P.img(FP.angular_map(m), "angular distance",
                     f"Angular distance between layer l's input and layer m's, mean over tokens "
                     f"({cite('gromov2024', 'eq. 7')})."))
    out.append(P.img(FP.path_lengths(m), "gradient by path length",
                     "The gradient at the first unit's input split exactly by path length over all units (solid) "
                     f"and Veit's sampled total (dashed, {cite('veit2016', '§5')}); shaded: the exact window."))
    out.append(P.img(FP.removal_curve(m), "layer removal",
                     "Left: the score after removing k consecutive layers, the start chosen by the oracle, by "
                     f"angular distance ({cite('gromov2024')}) and by Block Influence ({cite('men2024')}). Right: each "
                     "single layer removed (dotted: the full model). No healing fine-tune."))
    mine = [f for f in found if f.section == "pretrained" and f.id.endswith("." + m.spec.split(":", 1)[-1].replace("/", "-"))]
    out.append(P.comparison(mine, "pretrained", title=""))
    out.append(P.section_findings(mine, "pretrained"))
    return "\n".join(out)


def section(r: PretrainedResult | None, found: list[Finding]) -> str:
    """The section's HTML body (``r`` None: the line saying how to measure it)."""
    if r is None:
        return P.missing("pretrained", "<code>resgrad pretrained</code>")
    out = ["<p>The seed's question asked of real pretrained Transformers, measured on real text with each model's "
           f"own loss: where the gradient goes ({cite('xiong2020', 'Fig. 3')} measured untrained models), how far "
           "each residual unit is from the identity, how the hidden state grows, which paths carry the gradient, "
           f"and which layers can go ({cite('gromov2024')}, {cite('men2024')}, {cite('sun2024')}).</p>"]
    for s in r.skipped:
        out.append(f"<p class='missing'>{escape(s.spec)}: not measured ({escape(s.reason)}).</p>")
    if not r.models and not r.skipped:
        out.append("<p class='missing'>No model was measured.</p>")
    for m in r.models:
        out.append(_model(m, found))
    if r.notes:
        out.append("<h3>Caveats</h3><ul class='muted'>" + "".join(f"<li>{escape(n)}</li>" for n in r.notes) + "</ul>")
    return "\n".join(out)


def headline(found: list[Finding]) -> str:
    """The answer box of a pretrained run alone: its findings that cite a paper."""
    lines = [f for f in found if f.section == "pretrained" and f.paper]
    if not lines:
        return '<div class="answer"><p>No findings: no pretrained model was measured.</p></div>'
    return ('<div class="answer"><p><span class="label">Pretrained models</span> (see <a href="#pretrained">the '
            'section</a>):</p><ul>' + "".join(f"<li>{P.linkify(escape(f.sentence))} {P.badge(f.relation)}</li>"
                                              for f in lines) + "</ul></div>")


register(Part("pretrained", PretrainedResult, TITLE, 50, verdicts.pretrained,
              lambda r, s: pretrained_findings(r), section, core=False,
              timing=lambda r: dict(r.timing), headline=headline, papers=PAPERS))
