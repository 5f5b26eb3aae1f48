"""The report's degradation section: plain vs residual twins trained over depth (He et al. 2015 Fig. 1, 6).
"""

from __future__ import annotations

from html import escape

from resgrad.results.degradation import DegradationResult

from ... import verdicts
from .. import figures as F
from .. import page as P
from .._fmt import num, pct
from .._refs import PUBLISHED, cite
from ..findings import Finding, degradation_findings
from ..registry import Part, register
from . import sweep

__all__ = ["section", "HOW", "TITLE"]

TITLE = "Degradation: training plain vs residual"
HOW = "<code>resgrad study</code>"


def section(deg: DegradationResult | None, found: list[Finding]) -> str:
    """The degradation section's HTML body, with the per-cell table over seeds where seeds repeat."""
    return _section(deg, found) + sweep.seeded_cells(deg)


def _section(deg: DegradationResult | None, found: list[Finding]) -> str:
    if deg is None:
        return P.missing("degradation", HOW)
    runs = deg.runs
    table = sorted(deg.table, key=lambda t: t.depth)
    data = deg.data.name
    out = [f"<p>Plain and residual twins — the same layers and parameter count, differing only by the skip — trained "
           f"with the same recipe and seeds{' on ' + escape(data) if data else ''}. {cite('he2015', 'Fig. 1, Fig. 6 left')}: "
           "\"The deep plain nets suffer from increased depth, and exhibit higher training error when going deeper\"; "
           "plain-56 has higher training and test error than plain-20 on CIFAR-10, and plain-110 is above 60% error. "
           "Their ResNets do not degrade.</p>"]
    out.append(P.img(F.degradation_curves(runs), "train and test error per epoch",
                    "Train (solid) and test (dashed) error per epoch, <span class='plain'>plain</span> vs "
                    "<span class='res'>residual</span>, one panel per depth (mean over seeds)."))
    cifar = "cifar" in data.lower()
    trs = []
    for t in table:
        row = [P.n(str(t.depth))]
        for c in (t.plain, t.residual):
            for v, s in ((c.train_error, c.train_error_std), (c.test_error, c.test_error_std)):
                row.append(P.n(pct(v) + (f" ± {pct(s)}" if num(s) is not None and num(s) > 0 else "")))
            row.append(P.n(str(c.n_seeds)))
        ref = PUBLISHED["he2015_table6"].get(t.depth)
        row.append(P.n(pct(ref) if ref is not None else "—"))
        trs.append(row)
    if trs:
        out.append("<h3>Final errors</h3>" + P.table(
            ["depth", "plain train", "plain test", "seeds", "residual train", "residual test", "seeds",
             "He et al. Table 6, ResNet test (CIFAR-10)"], trs))
        note = "" if cifar else (f" This run is on {escape(data or 'another dataset')}, not CIFAR-10: the Table 6 "
                                 "column is for orientation, not a like-for-like comparison.")
        out.append(f"<p class='muted'>Errors as mean ± standard deviation over seeds. Table 6: "
                   f"{cite('he2015', 'Table 6')}.{note}</p>")
    if any(r.grad for r in runs):
        out.append(P.img(F.degradation_grad(runs), "gradient ratio during training",
                        "The first/last block gradient ratio during training (gradient monitor, once per epoch).",
                        cls="half"))
    out.append(P.comparison(found, "degradation"))
    out.append(P.section_findings(found, "degradation"))
    return "\n".join(out)


register(Part("degradation", DegradationResult, TITLE, 20, verdicts.degradation,
              lambda r, s: degradation_findings(s), section))
