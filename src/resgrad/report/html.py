"""One self-contained HTML report from a typed result: figures inline, no network.

``render(result, out_path)`` writes it atomically; ``render_run(run_dir)`` re-renders
``run_dir/report.html`` from ``run_dir/results.json`` (read with ``resgrad.results.load``).
``result`` is a StudyResult, FlowResult, DegradationResult, EnsembleResult or
TransformerResult, or its parsed JSON (validated first). Whatever sections it holds are shown; a
missing one is said to be missing. The Transformer section (report/transformer.py) appears only
where there is a Transformer study: a study without that stage renders as it did before it
existed; a TransformerResult alone gets the Transformer section, findings, setup and references.
The report reads results only: it never trains or measures (DESIGN.md).
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Callable
from html import escape
from pathlib import Path
from typing import Any

from resgrad.io import atomic_write
from resgrad.results import (
    DegradationResult,
    EnsembleResult,
    FlowResult,
    StudyResult,
    TransformerResult,
    load,
)
from resgrad.results.flow import FlowThresholds, Signal
from resgrad.results.sweep import SweepResult

from . import figures as F
from . import sweep as _sweep
from ._fmt import NA, num, pct, sig
from ._read import (
    Reportable,
    Sections,
    as_result,
    ensemble_view,
    flow_rows,
    headline_groups,
    pretty_model,
    sections,
)
from ._refs import PAPERS, PUBLISHED, TRANSFORMER_PAPERS, cite
from ._style import CSS
from .findings import Finding, findings

try:  # drawn by report/figures_signal.py where it is installed; without it the section shows its tables only
    from .figures_signal import shattering_figure, spectrum_figure
except ImportError:  # pragma: no cover - depends on the checkout
    shattering_figure = spectrum_figure = None  # type: ignore[assignment]

__all__ = ["render", "render_run", "to_html"]

_SECTIONS = [("question", "The question"), ("flow", "Gradient flow at initialisation"),
             ("degradation", "Degradation: training plain vs residual"), ("ensemble", "The ensemble view"),
             ("findings", "Findings"), ("setup", "Setup"), ("references", "References")]
_MEASURED = ("flow", "degradation", "ensemble")
_HOW = {
    "flow": "<code>resgrad flow</code> or <code>resgrad study</code>",
    "degradation": "<code>resgrad study</code>",
    "ensemble": "<code>resgrad paths</code> / <code>resgrad lesion</code> or <code>resgrad study</code>",
}


def render(result: Reportable | SweepResult | dict[str, Any], out_path: str | os.PathLike) -> Path:
    """Write the report for ``result`` to ``out_path`` atomically; return the path."""
    text = to_html(result)
    return atomic_write(out_path, lambda f: f.write(text.encode("utf-8")), mode="wb")


def render_run(run_dir: str | os.PathLike, out_path: str | os.PathLike | None = None) -> Path:
    """Re-render ``run_dir/report.html`` (or ``out_path``) from ``run_dir/results.json``.

    A missing folder or file is a FileNotFoundError, a bad file a one-line ResultError naming it.
    """
    run_dir = Path(run_dir)
    src = run_dir / "results.json"
    if not src.is_file():
        what = "does not exist" if not run_dir.exists() else "has no results.json"
        raise FileNotFoundError(
            f"{run_dir} {what}; pass the folder a run wrote (e.g. runs/study), or run `resgrad study --out {run_dir}`")
    loaded = load(src)
    result = loaded if isinstance(loaded, SweepResult) else as_result(loaded, source=str(src))
    return render(result, out_path if out_path is not None else run_dir / "report.html")


# -- pieces -------------------------------------------------------------------------------


def _img(svg: str | None, alt: str, caption: str, cls: str = "") -> str:
    if not svg:
        return f'<p class="muted">({escape(alt)}: nothing to draw from these results.)</p>'
    data = base64.b64encode(svg.encode("utf-8")).decode("ascii")
    return (f'<figure class="{cls}"><img src="data:image/svg+xml;base64,{data}" alt="{escape(alt)}">'
            f"<figcaption>{caption}</figcaption></figure>")


_ARXIV = re.compile(r"arXiv (\d{4}\.\d{4,5})")


_POW = re.compile(r"\b2\^(\d+)")


def _linkify(escaped: str) -> str:
    """In already-escaped text: ``arXiv 1512.03385`` becomes a plain link to arxiv.org, 2^54 a superscript."""
    text = _ARXIV.sub(lambda m: f'<a href="https://arxiv.org/abs/{m.group(1)}">arXiv {m.group(1)}</a>', escaped)
    return _POW.sub(r"2<sup>\1</sup>", text)


def _badge(relation: str | None) -> str:
    if not relation:
        return ""
    return f'<span class="badge {escape(relation)}">{escape(relation)}</span>'


def _verdict(v: Any) -> str:
    if not v:
        return NA
    return f'<span class="v-{escape(str(v))}">{escape(str(v))}</span>'


def _table(head: list[str], rows: list[list[str]], cls: str = "", tall: bool = False) -> str:
    th = "".join(f"<th>{h}</th>" for h in head)
    thead = f"<thead><tr>{th}</tr></thead>" if any(head) else ""
    body = "".join("<tr>" + "".join(c if c.startswith("<td") else f"<td>{c}</td>" for c in r) + "</tr>"
                   for r in rows)
    return f'<div class="scroll{" tall" if tall else ""}"><table class="{cls}">{thead}<tbody>{body}</tbody></table></div>'


def _n(s: str) -> str:
    return f'<td class="n">{s}</td>'


def _missing(name: str) -> str:
    return (f'<p class="missing">Not measured: this results file has no <code>{name}</code> section. '
            f"Run {_HOW[name]} to measure it.</p>")


def _comparison(found: list[Finding], sec: str, title: str = "The papers beside what was measured") -> str:
    rows = [[_linkify(escape(f["paper"])), escape(f["claim"] or ""), _linkify(escape(f["sentence"])), _badge(f["relation"])]
            for f in found if f["section"] == sec and f.get("paper")]
    if not rows:
        return ""
    return (f"<h3>{title}</h3>" if title else "") + _table(
        ["source", "the paper says", "measured here", ""], rows, cls="cmp")


def _section_findings(found: list[Finding], sec: str) -> str:
    items = [f for f in found if f["section"] == sec and not f.get("paper")]
    if not items:
        return ""
    return "<ul>" + "".join(f"<li>{_linkify(escape(f['sentence']))}</li>" for f in items) + "</ul>"


# -- sections -----------------------------------------------------------------------------


def _question() -> str:
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


def _flow(flow: FlowResult | None, found: list[Finding]) -> str:
    if flow is None:
        return _missing("flow")
    if not flow.groups:
        return '<p class="missing">The <code>flow</code> section holds no configurations.</p>'
    rows = flow_rows(flow)
    head = flow_rows(flow, headline_groups(flow.groups))
    th = flow.thresholds
    lo, hi = F.ratio_band(th)
    out = ["<p>Each net is measured at initialisation: one forward and backward pass per seed, and the norm of the "
           "gradient of the loss with respect to each block's input, ‖∂L/∂x<sub>l</sub>‖. The summary is the ratio of the "
           "first block's to the last block's: above 1 the gradient grows toward the input, below 1 it shrinks.</p>"]
    out.append(f"<p class='muted'>{_thresholds_text(th)}</p>")
    if flow.conventions:
        out.append("<details><summary>Definitions, as the flow experiment states them</summary><ul>" +
                   "".join(f"<li><b>{escape(str(k))}</b>: {escape(str(v))}</li>" for k, v in flow.conventions.items()) +
                   "</ul></details>")
    h0 = head[0] if head else rows[0]
    setting = escape(F.panel_title(h0["family"], h0["activation"], h0["init"]))
    out.append(_img(F.flow_profiles(head), "per-block gradient-norm profiles",
                    f"Per-block gradient at initialisation ({setting}; geometric mean over seeds), log axis, "
                    "block 0 nearest the input. "
                    "<span class='plain'>Plain</span> solid, <span class='res'>residual</span> dashed; darker = deeper. "
                    "A straight line on this axis is exponential growth or decay with depth."))
    out.append(_img(F.flow_ratio(rows, th), "first/last gradient ratio vs depth",
                    "First-block / last-block gradient norm vs depth in blocks, <span class='plain'>plain</span> vs "
                    "<span class='res'>residual</span>, with BN (solid) and without normalisation (dashed); "
                    f"vertical bars span the seeds. Shaded: {sig(lo)}× to {sig(hi)}×, the verdict threshold."))
    out.append(_comparison([f for f in found if not f["id"].startswith(_SIGNAL_IDS)], "flow"))
    out.append(_section_findings(found, "flow"))
    trs = []
    for r in sorted(rows, key=lambda r: (r["family"], r["activation"], r["init"], r["norm"], r["depth"], r["arch"])):
        lo_ci, hi_ci = r["slope_ci"]
        trs.append([escape(str(x)) for x in (r["family"], r["activation"], r["init"], r["norm"])] + [
            f"<span class='{'plain' if r['arch'] == 'plain' else 'res'}'>{escape(str(r['arch']))}</span>",
            _n(str(r["depth"])), _n(sig(r["ratio"])), _n(sig(r["slope"])),
            _n(f"{sig(lo_ci)} to {sig(hi_ci)}"), _verdict(r["verdict"])])
    out.append(f"<details{' open' if len(rows) <= 16 else ''}><summary>All {len(rows)} configurations</summary>" +
               _table(["family", "activation", "init", "norm", "arch", "depth", "first/last", "slope", "slope CI",
                       "verdict"], trs, tall=True) + "</details>")
    if flow.signal is not None:
        out.append(_signal(flow.signal, found))
    return "\n".join(out)


_SIGNAL_IDS = ("flow.shattering.", "flow.spectrum.")


def _signal(sg: Signal, found: list[Finding]) -> str:
    """Shattering (Balduzzi et al. 2017) and the Jacobian spectrum (Pennington et al. 2017) beside the papers."""
    out = ["<h3>Shattering and the Jacobian spectrum</h3>",
           f"<p>Two more views of the backward signal at initialisation. <b>Shattering</b> "
           f"({cite('balduzzi2017')}): the correlation between the input gradients at neighbouring inputs along a line; "
           "they find it decays about as 2<sup>−L</sup> with depth in plain nets and about as 1/√L with skip "
           "connections and batch normalisation. <b>The Jacobian spectrum</b> "
           f"({cite('pennington2017')}): the singular values of the input-output Jacobian; dynamical isometry means "
           "they all sit near 1, which ReLU nets cannot reach.</p>"]
    rows = sorted(sg.shattering, key=lambda r: (r.family, r.act, r.init, r.norm, r.depth))
    cells: dict[tuple, dict[str, Any]] = {}
    for r in rows:
        cells.setdefault((r.family, r.act, r.init, r.norm, r.depth), {})[r.arch] = r
    trs = [[escape(f), escape(a), escape(i), escape(nm), _n(str(d)),
            _n(sig(c["plain"].neighbor) if "plain" in c else NA),
            _n(sig(c["residual"].neighbor) if "residual" in c else NA)]
           for (f, a, i, nm, d), c in cells.items()]
    if trs:
        out.append("<p>Gradient correlation between neighbouring inputs (lag 1, mean over seeds):</p>" + _table(
            ["family", "activation", "init", "norm", "depth", "plain", "residual"], trs))
    if shattering_figure is not None:
        out.append(_img(shattering_figure([r.to_json() for r in sg.shattering], [f.to_json() for f in sg.fits]),
                        "gradient correlation vs depth",
                        f"Neighbour gradient correlation vs depth, <span class='plain'>plain</span> vs "
                        f"<span class='res'>residual</span> ({cite('balduzzi2017')})."))
    srows = sorted(sg.spectrum, key=lambda r: (r.family, r.act, r.init, r.norm, r.depth, r.arch))
    trs = [[escape(r.family), escape(r.act), escape(r.norm),
            f"<span class='{'plain' if r.arch == 'plain' else 'res'}'>{escape(r.arch)}</span>", _n(str(r.depth)),
            _n(sig(r.median)), _n(f"{sig(r.q10)} to {sig(r.q90)}"), _n(sig(r.condition))] for r in srows]
    if trs:
        out.append("<p>Singular values of the input-output Jacobian (all examples and seeds):</p>" + _table(
            ["family", "activation", "norm", "arch", "depth", "median", "10–90%", "condition (median)"], trs))
    if spectrum_figure is not None:
        out.append(_img(spectrum_figure([r.to_json() for r in sg.spectrum]), "Jacobian singular value spectrum",
                        f"Distribution of the Jacobian's singular values, log axis ({cite('pennington2017')})."))
    out.append(_comparison([f for f in found if f["id"].startswith(_SIGNAL_IDS)], "flow", title=""))
    return "\n".join(out)


def _thresholds_text(th: FlowThresholds) -> str:
    """The verdict rule in words, from the thresholds the flow experiment wrote."""
    d = th.decades
    unit = "decade" if d == 1 else "decades"
    return (f"Verdict per configuration (flow experiment): <b>vanishing</b> when the fitted change of the gradient "
            f"across the net is at most −{sig(d)} {unit} ({sig(10 ** d)}×) and the slope's {pct(th.ci_level)} "
            f"confidence interval across seeds lies below 0; <b>exploding</b> when it is at least +{sig(d)} {unit} and "
            f"the interval lies above 0; <b>healthy</b> otherwise.")


def _degradation(deg: DegradationResult | None, found: list[Finding]) -> str:
    if deg is None:
        return _missing("degradation")
    runs = deg.runs
    table = sorted(deg.table, key=lambda t: t.depth)
    data = deg.data.name
    out = [f"<p>Plain and residual twins — the same layers and parameter count, differing only by the skip — trained "
           f"with the same recipe and seeds{' on ' + escape(data) if data else ''}. {cite('he2015', 'Fig. 1, Fig. 6 left')}: "
           "\"The deep plain nets suffer from increased depth, and exhibit higher training error when going deeper\"; "
           "plain-56 has higher training and test error than plain-20 on CIFAR-10, and plain-110 is above 60% error. "
           "Their ResNets do not degrade.</p>"]
    out.append(_img(F.degradation_curves(runs), "train and test error per epoch",
                    "Train (solid) and test (dashed) error per epoch, <span class='plain'>plain</span> vs "
                    "<span class='res'>residual</span>, one panel per depth (mean over seeds)."))
    cifar = "cifar" in data.lower()
    trs = []
    for t in table:
        row = [_n(str(t.depth))]
        for c in (t.plain, t.residual):
            for v, s in ((c.train_error, c.train_error_std), (c.test_error, c.test_error_std)):
                row.append(_n(pct(v) + (f" ± {pct(s)}" if num(s) is not None and num(s) > 0 else "")))
            row.append(_n(str(c.n_seeds)))
        ref = PUBLISHED["he2015_table6"].get(t.depth)
        row.append(_n(pct(ref) if ref is not None else "—"))
        trs.append(row)
    if trs:
        out.append("<h3>Final errors</h3>" + _table(
            ["depth", "plain train", "plain test", "seeds", "residual train", "residual test", "seeds",
             "He et al. Table 6, ResNet test (CIFAR-10)"], trs))
        note = "" if cifar else (f" This run is on {escape(data or 'another dataset')}, not CIFAR-10: the Table 6 "
                                 "column is for orientation, not a like-for-like comparison.")
        out.append(f"<p class='muted'>Errors as mean ± standard deviation over seeds. Table 6: "
                   f"{cite('he2015', 'Table 6')}.{note}</p>")
    if any(r.grad for r in runs):
        out.append(_img(F.degradation_grad(runs), "gradient ratio during training",
                        "The first/last block gradient ratio during training (gradient monitor, once per epoch).",
                        cls="half"))
    out.append(_comparison(found, "degradation"))
    out.append(_section_findings(found, "degradation"))
    return "\n".join(out)


def _ensemble(ens: EnsembleResult | None, found: list[Finding], classes: int | None = 10) -> str:
    """The ensemble view of ``ens``; ``classes``: for the chance line (None: none drawn)."""
    if ens is None:
        return _missing("ensemble")
    v = ensemble_view(ens)
    n = v["n"]
    model = escape(pretty_model(v["model"])) if v["model"] else "the trained residual net"
    out = []
    if v["models"]:
        rows = []
        for role in ("residual", "plain"):
            m = v["models"].get(role)
            if m:
                src = {"initialisation": "untrained (measured at initialisation)", "object": "trained by the study",
                       "run": "a trained run folder", "trained": "trained for this experiment"}.get(
                    m.source, escape(m.source))
                rows.append([escape(role), escape(pretty_model(m.name)), _n(f"{m.params:,}"),
                             _n(str(m.blocks)), _n(pct(m.test_error)), src])
        out.append("<h3>The nets</h3>" + _table(["", "model", "parameters", "blocks", "test error", "source"], rows))
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
    out.append(_img(F.ensemble_paths(v), "path lengths, gradient per length, total per length",
                    f"(a) share of paths per length; (b) gradient per length at the first block's input, log axis "
                    f"(◆: the plain twin's gradient, its only path); (c) share of the total gradient "
                    f"magnitude per length, with the effective windows shaded. Compare {cite('veit2016', '§5, Fig. 6')}"
                    f" (ResNet-110 on CIFAR-10: effective paths {vlo}–{vhi} of 54 blocks)."))
    wrows = []
    for kind, label in (("eff_exact", "exact"), ("eff_sampled", "sampled")):
        w = v[kind]
        if w:
            wrows.append([label, _n(f"{w['lo']}–{w['hi']}"), _n(str(n)), _n(pct(w["mass"]) if w["mass"] else NA),
                          _n(pct(w["share"]))])
    wrows.append([cite("veit2016", "§5") + " (sampled, CIFAR-10)", _n(f"{vlo}–{vhi}"),
                  _n(str(PUBLISHED["veit_blocks"])), _n("“almost all”"), _n(pct(PUBLISHED["veit_share"]))])
    out.append("<h3>Effective paths</h3>" + _table(
        ["", "path lengths", "blocks", "share of gradient", "share of all paths"], wrows))
    if v["explanation"]:
        out.append(f"<p class='muted'>{escape(v['explanation'])}</p>")
    out.append(_img(F.ensemble_lesion(v, classes), "test error after deleting one block",
                    f"Test error after deleting each single block at test time. Residual: the branch is removed; plain: "
                    f"the block is replaced by its shape-matching shortcut, as Veit et al. did for VGG layers "
                    f"({cite('veit2016', '§4')})."))
    out.append(_img(F.ensemble_deletion(v, classes), "error vs deleted blocks and vs reordering",
                    "Left: deleting <i>k</i> random blocks (mean ± std over trials"
                    + (f"; ★: Veit et al.'s ≈20% at k = 10, {cite('veit2016', '§4')}" if (n or 0) >= 10 else "")
                    + f"). Right: swapping random pairs of blocks, error vs the Kendall τ of the "
                    f"new order; dots are single trials ({cite('veit2016', '§4')})."))
    out.append(_comparison(found, "ensemble"))
    out.append(_section_findings(found, "ensemble"))
    if v["notes"]:
        out.append("<details><summary>Notes from the ensemble experiment</summary><ul>" +
                   "".join(f"<li>{escape(x)}</li>" for x in v["notes"]) + "</ul></details>")
    for les, label in ((v["lesion_res"], "residual"), (v["lesion_plain"], "plain")):
        if les and les["blocks"]:
            trs = [[_n(str(b["block"])), _n(pct(b["error"])),
                    _n(NA if b["error"] is None or les["baseline"] is None else f"{100 * (b['error'] - les['baseline']):+.3g}"),
                    "downsampling" if b["downsample"] else ""] for b in les["blocks"]]
            name = escape(pretty_model(les["model"])) if les["model"] else label
            out.append(f"<details><summary>Single-block lesions, {name} (baseline {pct(les['baseline'])})</summary>"
                       + _table(["block", "test error", "change (points)", ""], trs, tall=True) + "</details>")
    return "\n".join(out)


def _findings(found: list[Finding]) -> str:
    if not found:
        return "<p class='missing'>No findings: the results hold no measured sections.</p>"
    items = []
    for f in found:
        nums = escape(json.dumps(_rounded(f["numbers"]), default=str, ensure_ascii=False))
        items.append(f"<li>{_linkify(escape(f['sentence']))} {_badge(f['relation'])} <span class='id'>{escape(f['id'])}</span>"
                     f"<details><summary>numbers used</summary><code>{nums}</code></details></li>")
    return ("<p>Generated from the numbers in results.json (report/findings.py); badges say whether the measurement "
            "agrees with or contradicts the cited paper.</p><ol class='findings'>" + "".join(items) + "</ol>")


def _rounded(o: Any) -> Any:
    """Floats to 3 significant digits for display (the findings keep the full values)."""
    if isinstance(o, float):
        return sig(o)
    if isinstance(o, dict):
        return {k: _rounded(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_rounded(v) for v in o]
    return o


def _setup(r: Reportable, s: Sections) -> str:
    out = []
    secs: dict[str, float | None] = {}
    started = finished = None
    if isinstance(r, StudyResult):
        secs, started, finished = dict(r.timing.seconds), r.timing.started, r.timing.finished
    elif isinstance(r, FlowResult) and r.wall_time_s is not None:  # a single experiment's file: its own wall time
        secs["flow"] = r.wall_time_s
    elif isinstance(r, EnsembleResult) and r.timing.get("total") is not None:
        secs["ensemble"] = r.timing["total"]
    elif isinstance(r, TransformerResult):  # its parts' wall times
        secs = dict(r.timing)
    if secs or started or finished:
        rows = [[escape(k), _n(f"{sig(v)} s" if num(v) is not None else NA)] for k, v in secs.items()]
        meta = " ".join(f"{k}: {escape(v)}." for k, v in (("started", started), ("finished", finished)) if v)
        out.append(f"<h3>Time</h3><p>{meta}</p>" + (_table(["stage", "wall time"], rows) if rows else ""))
    if r.environment:
        out.append("<h3>Versions and hardware</h3>" + _table(
            ["", ""], [[escape(str(k)), escape("—" if v is None else str(v))] for k, v in r.environment.items()]))
    else:
        out.append("<p class='muted'>The results file records no environment.</p>")
    configs = {r.EXPERIMENT: r.config}
    for part in (s.flow, s.degradation, s.ensemble, s.transformer):
        if part is not None and part is not r:
            configs[part.EXPERIMENT] = part.config
    for name, cfg in configs.items():
        text = escape(json.dumps(cfg, indent=2, default=str, ensure_ascii=False))
        out.append(f"<details><summary>{escape(name)} config</summary><pre>{text}</pre></details>")
    if isinstance(r, StudyResult):
        out.insert(0, f"<p>Preset: <code>{escape(r.preset)}</code>.</p>")
    return "\n".join(out)


def _references(transformer: bool = False) -> str:
    """The papers cited; the Transformer papers only where the Transformer section is shown."""
    items = [f"<li>{escape(a)} ({y}). <i>{escape(t)}</i>. "
             f"<a href=\"https://arxiv.org/abs/{i}\">arXiv {i}</a>.</li>" for key, (a, y, t, i) in PAPERS.items()
             if transformer or key not in TRANSFORMER_PAPERS]
    return "<ul>" + "".join(items) + "</ul>"


def _seeded_cells(deg: DegradationResult | None) -> str:
    """The sweep section's per-cell table, when the degradation stage repeated seeds."""
    if deg is None or len({r.seed for r in deg.runs}) < 2:
        return ""
    return _sweep.section(deg)


def _transformer_section(t: TransformerResult | None, found: list[Finding]) -> str:
    from .transformer import section

    assert t is not None
    return section(t, found)


def _transformer_box(found: list[Finding]) -> str:
    """The headline of a transformer run alone: its findings on Xiong et al.'s two claims and the no-skip twin."""
    lines = [f for f in found if f["id"] in ("transformer.growth", "transformer.warmup.postln", "transformer.noskip")]
    if not lines:
        return '<div class="answer"><p>No findings: the Transformer result holds no comparable numbers.</p></div>'
    return ('<div class="answer"><p><span class="label">The Transformer study</span> (this run holds only it; see '
            '<a href="#transformer">its section</a>):</p><ul>'
            + "".join(f"<li>{_linkify(escape(f['sentence']))} {_badge(f['relation'])}</li>" for f in lines)
            + "</ul></div>")


# -- the page -----------------------------------------------------------------------------


def to_html(result: Reportable | SweepResult | dict[str, Any]) -> str:
    """The whole report as one HTML string (pure: reads ``result`` only; a dict is validated first)."""
    if isinstance(result, dict) and result.get("schema") == SweepResult.SCHEMA:
        result = SweepResult.from_json(result)
    if isinstance(result, SweepResult):  # a sweep folder: its own page (report/sweep.py)
        return _sweep.page(result)
    r = as_result(result)
    s = sections(r)
    found = findings(r)
    present = {"flow": s.flow, "degradation": s.degradation, "ensemble": s.ensemble}
    alone = isinstance(r, TransformerResult)  # a transformer run folder: its own sections only
    layout = list(_SECTIONS)
    if s.transformer is not None:
        from .transformer import TITLE  # imported here: report/transformer.py draws on this module's helpers

        layout.insert(layout.index(("findings", "Findings")), ("transformer", TITLE))
    if alone:
        layout = [x for x in layout if x[0] not in (*_MEASURED, "question")]
    bodies: dict[str, Callable[[], str]] = {
        "question": _question,
        "flow": lambda: _flow(s.flow, found),
        "degradation": lambda: _degradation(s.degradation, found) + _seeded_cells(s.degradation),
        "ensemble": lambda: _ensemble(s.ensemble, found),
        "findings": lambda: _findings(found),
        "setup": lambda: _setup(r, s),
        "references": lambda: _references(s.transformer is not None),
        "transformer": lambda: _transformer_section(s.transformer, found),
    }
    toc, secs = [], []
    for i, (sid, title) in enumerate(layout, 1):
        miss = sid in _MEASURED and present[sid] is None
        toc.append(f'<li><a href="#{sid}">{escape(title)}</a>{" <span class=miss>(missing)</span>" if miss else ""}</li>')
        secs.append(f'<section id="{sid}"><h2>{i}. {escape(title)}</h2>\n{bodies[sid]()}\n</section>')
    answer = next((f for f in found if f["id"] == "answer"), None)
    answer_html = (f'<div class="answer"><p><span class="label">{escape(answer["lead"])}:</span> '
                   f'{escape(answer["verdict_text"])}.</p><ul>'
                   + "".join(f"<li>{_linkify(escape(c))}</li>" for c in answer["evidence"])
                   + f'</ul><p class="muted">{escape(answer["hedge"])} See <a href="#findings">Findings</a>.</p></div>'
                   if answer else _transformer_box(found) if alone else
                   '<div class="answer"><p>No measured answer: the results hold no gradient-flow, degradation or '
                   'ensemble measurements.</p></div>')
    missing = [] if alone else [m for m in _MEASURED if present[m] is None]
    sub = []
    if isinstance(r, StudyResult):
        sub.append(f"preset {escape(r.preset)}")
    sub.append(f"experiment {escape(r.EXPERIMENT)}")
    if isinstance(r, StudyResult) and r.timing.finished:
        sub.append(f"finished {escape(r.timing.finished)}")
    if missing:
        sub.append("not measured: " + ", ".join(missing))
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>resgrad report — do residual connections solve the vanishing-gradient problem?</title>
<style>{CSS}</style>
</head>
<body>
<div class="layout">
<header>
<h1>Do residual connections solve the vanishing-gradient problem?</h1>
<p class="sub">resgrad report · {" · ".join(sub) if sub else "measured results"}</p>
</header>
<nav class="toc"><h2>Contents</h2><ol>{"".join(toc)}</ol></nav>
<main>
{answer_html}
{"".join(secs)}
</main>
<footer>Generated by resgrad from results.json; self-contained (no network). Re-render with <code>resgrad report RUN_DIR</code>.</footer>
</div>
</body>
</html>
"""
