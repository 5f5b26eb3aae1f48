"""The study's own page parts: the question, the list of findings, the setup and the references.

A StudyResult holds the other experiments' results as its parts (one field per registered part);
these sections frame them, and work the same for a single experiment's results.
"""

from __future__ import annotations

import json
from html import escape

from resgrad.results.study import StudyResult

from .. import page as P
from .._fmt import NA, num, sig
from .._read import Reportable, Sections
from .._refs import PAPERS, cite
from ..findings import Finding
from ..registry import parts

__all__ = ["question", "findings_list", "setup", "references", "TITLES"]

# The study's framing sections around the registered parts: (id, title).
TITLES = {"question": "The question", "findings": "Findings", "setup": "Setup", "references": "References"}


def question() -> str:
    """The study's question: the identity gradient, the ensemble view and the objection."""
    return f"""
<p>In a plain stack of layers the gradient at the input is a product of layer Jacobians, so it can
shrink (vanish) or grow (explode) exponentially with depth. Residual connections are often said to
solve this. There are two accounts of why, and one objection:</p>
<ul>
<li><strong>The identity gradient.</strong> A residual block computes <code>x<sub>l+1</sub> = x<sub>l</sub> + F(x<sub>l</sub>)</code>, so the
gradient reaching block <i>l</i> from the output <i>L</i> is
<span class="eq">∂E/∂x<sub>l</sub> = ∂E/∂x<sub>L</sub> · (1 + ∂/∂x<sub>l</sub> Σ<sub>i=l</sub><sup>L−1</sup> F(x<sub>i</sub>))</span>
— {cite("he2016", "Eq. 5")}: "the gradient of a layer does not vanish even when the weights are
arbitrarily small". Eq. 8 of the same paper: a scaled shortcut multiplies it by Π λ<sub>i</sub>, which can vanish or explode.</li>
<li><strong>The ensemble view.</strong> {cite("veit2016")}: <i>n</i> blocks unroll into 2<sup><i>n</i></sup> paths whose
lengths are Binomial(<i>n</i>, 1/2); the gradient of a path falls exponentially with its length, so almost all of
the gradient comes from short paths (5–17 of 54 blocks in ResNet-110, §5). On this view the residual net does not
make long paths trainable; it avoids needing them.</li>
<li><strong>The objection.</strong> {cite("he2015", "§4.1")} argue that the plain nets' optimisation difficulty is
"unlikely to be caused by vanishing gradients", because with batch normalisation "neither forward nor backward
signals vanish"; {cite("philipp2018")} find instead that BN plain nets' gradients <em>explode</em>.</li>
</ul>
<p>This report measures three kinds of evidence on the same nets: the gradient at initialisation
(<a href="#flow">§2</a>), whether deeper plain nets train worse than their residual twins (<a href="#degradation">§3</a>),
and the path decomposition and lesions of a trained residual net (<a href="#ensemble">§4</a>).
Every sentence in <a href="#findings">Findings</a> is generated from the measured numbers.</p>"""


def findings_list(found: list[Finding]) -> str:
    """Every finding, numbered, with its badge, id and the numbers it used."""
    if not found:
        return "<p class='missing'>No findings: the results hold no measured sections.</p>"
    items = []
    for f in found:
        nums = escape(json.dumps(P.rounded(f.numbers), default=str, ensure_ascii=False))
        items.append(f"<li>{P.linkify(escape(f.sentence))} {P.badge(f.relation)} <span class='id'>{escape(f.id)}</span>"
                     f"<details><summary>numbers used</summary><code>{nums}</code></details></li>")
    return ("<p>Generated from the numbers in results.json (report/findings/, from the records of verdicts/); badges say whether the measurement "
            "agrees with or contradicts the cited paper.</p><ol class='findings'>" + "".join(items) + "</ol>")


def setup(r: Reportable, s: Sections) -> str:
    """Wall times, versions and hardware, and every config the result holds."""
    out = []
    secs: dict[str, float | None] = {}
    started = finished = None
    if isinstance(r, StudyResult):
        secs, started, finished = dict(r.timing.seconds), r.timing.started, r.timing.finished
    else:  # a single experiment's file: its own wall times
        part = next((p for p in parts() if isinstance(r, p.type)), None)
        secs = dict(part.timing(r)) if part is not None and part.timing is not None else {}
    if secs or started or finished:
        rows = [[escape(k), P.n(f"{sig(v)} s" if num(v) is not None else NA)] for k, v in secs.items()]
        meta = " ".join(f"{k}: {escape(v)}." for k, v in (("started", started), ("finished", finished)) if v)
        out.append(f"<h3>Time</h3><p>{meta}</p>" + (P.table(["stage", "wall time"], rows) if rows else ""))
    if r.environment:
        out.append("<h3>Versions and hardware</h3>" + P.table(
            ["", ""], [[escape(str(k)), escape("—" if v is None else str(v))] for k, v in r.environment.items()]))
    else:
        out.append("<p class='muted'>The results file records no environment.</p>")
    configs = {r.EXPERIMENT: r.config}
    for p in parts():
        held = getattr(s, p.key)
        if held is not None and held is not r:
            configs[held.EXPERIMENT] = held.config
    for name, cfg in configs.items():
        text = escape(json.dumps(cfg, indent=2, default=str, ensure_ascii=False))
        out.append(f"<details><summary>{escape(name)} config</summary><pre>{text}</pre></details>")
    if isinstance(r, StudyResult):
        out.insert(0, f"<p>Preset: <code>{escape(r.preset)}</code>.</p>")
    return "\n".join(out)


def references(shown: set[str]) -> str:
    """The papers cited; those a part alone cites (its ``papers``) only where its section is ``shown``."""
    # A paper two parts cite (the Transformer and pretrained sections both cite Xiong et al.) is
    # listed when either is shown.
    cited = {key for p in parts() if p.key in shown for key in p.papers}
    hidden = {key for p in parts() if p.key not in shown for key in p.papers} - cited
    items = [f"<li>{escape(a)} ({y}). <i>{escape(t)}</i>. "
             f"<a href=\"https://arxiv.org/abs/{i}\">arXiv {i}</a>.</li>" for key, (a, y, t, i) in PAPERS.items()
             if key not in hidden]
    return "<ul>" + "".join(items) + "</ul>"
