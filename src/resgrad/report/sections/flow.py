"""The report's gradient-flow section: per-block profiles, the first/last ratio, shattering and the spectrum.
"""

from __future__ import annotations

from html import escape
from typing import Any

from resgrad.results.flow import FlowResult, FlowThresholds, Signal

from ... import verdicts
from .. import figures as F
from .. import page as P
from .._fmt import NA, pct, sig
from .._read import flow_rows, headline_groups
from .._refs import cite
from ..findings import Finding, flow_findings
from ..registry import Part, register

try:  # drawn by report/figures_signal.py where it is installed; without it the section shows its tables only
    from ..figures_signal import shattering_figure, spectrum_figure
except ImportError:  # pragma: no cover - depends on the checkout
    shattering_figure = spectrum_figure = None  # type: ignore[assignment]

__all__ = ["section", "HOW", "TITLE"]

TITLE = "Gradient flow at initialisation"
HOW = "<code>resgrad flow</code> or <code>resgrad study</code>"


def section(flow: FlowResult | None, found: list[Finding]) -> str:
    """The gradient-flow section's HTML body (a missing line without a FlowResult)."""
    if flow is None:
        return P.missing("flow", HOW)
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
    out.append(P.img(F.flow_profiles(head), "per-block gradient-norm profiles",
                    f"Per-block gradient at initialisation ({setting}; geometric mean over seeds), log axis, "
                    "block 0 nearest the input. "
                    "<span class='plain'>Plain</span> solid, <span class='res'>residual</span> dashed; darker = deeper. "
                    "A straight line on this axis is exponential growth or decay with depth."))
    out.append(P.img(F.flow_ratio(rows, th), "first/last gradient ratio vs depth",
                    "First-block / last-block gradient norm vs depth in blocks, <span class='plain'>plain</span> vs "
                    "<span class='res'>residual</span>, with BN (solid) and without normalisation (dashed); "
                    f"vertical bars span the seeds. Shaded: {sig(lo)}× to {sig(hi)}×, the verdict threshold."))
    out.append(P.comparison([f for f in found if not f.id.startswith(_SIGNAL_IDS)], "flow"))
    out.append(P.section_findings(found, "flow"))
    trs = []
    for r in sorted(rows, key=lambda r: (r["family"], r["activation"], r["init"], r["norm"], r["depth"], r["arch"])):
        lo_ci, hi_ci = r["slope_ci"]
        trs.append([escape(str(x)) for x in (r["family"], r["activation"], r["init"], r["norm"])] + [
            f"<span class='{'plain' if r['arch'] == 'plain' else 'res'}'>{escape(str(r['arch']))}</span>",
            P.n(str(r["depth"])), P.n(sig(r["ratio"])), P.n(sig(r["slope"])),
            P.n(f"{sig(lo_ci)} to {sig(hi_ci)}"), P.verdict(r["verdict"])])
    out.append(f"<details{' open' if len(rows) <= 16 else ''}><summary>All {len(rows)} configurations</summary>" +
               P.table(["family", "activation", "init", "norm", "arch", "depth", "first/last", "slope", "slope CI",
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
    trs = [[escape(f), escape(a), escape(i), escape(nm), P.n(str(d)),
            P.n(sig(c["plain"].neighbor) if "plain" in c else NA),
            P.n(sig(c["residual"].neighbor) if "residual" in c else NA)]
           for (f, a, i, nm, d), c in cells.items()]
    if trs:
        out.append("<p>Gradient correlation between neighbouring inputs (lag 1, mean over seeds):</p>" + P.table(
            ["family", "activation", "init", "norm", "depth", "plain", "residual"], trs))
    if shattering_figure is not None:
        out.append(P.img(shattering_figure([r.to_json() for r in sg.shattering], [f.to_json() for f in sg.fits]),
                        "gradient correlation vs depth",
                        f"Neighbour gradient correlation vs depth, <span class='plain'>plain</span> vs "
                        f"<span class='res'>residual</span> ({cite('balduzzi2017')})."))
    srows = sorted(sg.spectrum, key=lambda r: (r.family, r.act, r.init, r.norm, r.depth, r.arch))
    trs = [[escape(r.family), escape(r.act), escape(r.norm),
            f"<span class='{'plain' if r.arch == 'plain' else 'res'}'>{escape(r.arch)}</span>", P.n(str(r.depth)),
            P.n(sig(r.median)), P.n(f"{sig(r.q10)} to {sig(r.q90)}"), P.n(sig(r.condition))] for r in srows]
    if trs:
        out.append("<p>Singular values of the input-output Jacobian (all examples and seeds):</p>" + P.table(
            ["family", "activation", "norm", "arch", "depth", "median", "10–90%", "condition (median)"], trs))
    if spectrum_figure is not None:
        out.append(P.img(spectrum_figure([r.to_json() for r in sg.spectrum]), "Jacobian singular value spectrum",
                        f"Distribution of the Jacobian's singular values, log axis ({cite('pennington2017')})."))
    out.append(P.comparison([f for f in found if f.id.startswith(_SIGNAL_IDS)], "flow", title=""))
    return "\n".join(out)


def _thresholds_text(th: FlowThresholds) -> str:
    """The verdict rule in words, from the thresholds the flow experiment wrote."""
    d = th.decades
    unit = "decade" if d == 1 else "decades"
    return (f"Verdict per configuration (flow experiment): <b>vanishing</b> when the fitted change of the gradient "
            f"across the net is at most −{sig(d)} {unit} ({sig(10 ** d)}×) and the slope's {pct(th.ci_level)} "
            f"confidence interval across seeds lies below 0; <b>exploding</b> when it is at least +{sig(d)} {unit} and "
            f"the interval lies above 0; <b>healthy</b> otherwise.")


def _timing(r: FlowResult) -> dict[str, Any]:
    return {"flow": r.wall_time_s} if r.wall_time_s is not None else {}


register(Part("flow", FlowResult, TITLE, 10, verdicts.flow,
              lambda r, s: flow_findings(r), section, timing=_timing))
