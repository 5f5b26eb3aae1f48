"""Findings on the residual designs (a DesignsResult): one sentence per design's verdict.
"""

from __future__ import annotations

from typing import Any

from resgrad import verdicts as V
from resgrad.results.designs import DesignsResult

from .._fmt import NA, sig
from ._base import Finding, finding

__all__ = ["designs_findings", "CAVEAT", "CIFAR_CAVEAT"]

# Verma 2026 (arXiv 2604.23434): DyT at 64M parameters improves validation loss by 27.3% on 1M
# tokens and worsens it by 18.8% on 118M: a small run's ranking of two designs can flip sign.
CAVEAT = ("Small-scale results can flip sign: DyT at 64M parameters improves the validation loss by 27.3% on 1M "
          "tokens but worsens it by 18.8% on 118M (Verma 2026, arXiv 2604.23434); the nets here are far smaller "
          "and their budgets shorter, so read each verdict as \"at this size\".")
# He et al. 2015 §4.2 train 164 epochs on all 50,000 images (ResNet-56: 6.97% test error); the designs
# experiment trains the size's epochs on a subset (experiments/designs.py CIFAR_SUBSET: default 5,000 / 1,000).
CIFAR_CAVEAT = ("CIFAR-10 is trained here on a class-balanced subset for a few epochs (the default size: 5,000 train "
                "and 1,000 test images, 6 epochs; the notes below give this run's counts), not He et al. 2015's 164 "
                "epochs of 50,000 images (ResNet-56: 6.97% test error): the errors sit far above the paper's, and only "
                "the ranking of the designs at this budget is measured.")


def _n(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return "never" if v == float("inf") else sig(v)
    if isinstance(v, list):
        return "[" + ", ".join(_n(x) for x in v) + "]"
    return NA if v is None else str(v)


def _measured(m: dict[str, Any]) -> str:
    return ", ".join(f"{k.replace('_', ' ')} {_n(v)}" for k, v in m.items())


_WORDS = {None: "cannot be judged from what was measured", "agrees": "agrees with the paper at this size",
          "partly": "agrees only in part at this size", "contradicts": "contradicts the paper at this size"}


def designs_findings(r: DesignsResult) -> list[Finding]:
    """One finding per design (section "designs"), each wording its verdict record."""
    out = []
    info = {d.name: d for d in r.designs}
    for v in V.design_verdicts(r):
        d = info[v.design]
        title = d.title or d.name
        text = f"{title}: {v.figure}: {_measured(v.measured) or 'not measured'} — {_WORDS[v.relation]}"
        if v.rule:
            text += f" ({v.rule})"
        paper = f"{d.paper} (arXiv {d.arxiv})" if d.paper and d.arxiv else (d.paper or None)
        out.append(finding(f"designs.{v.design}", "designs", text + ".", dict(v.measured), v, paper=paper,
                           claim=d.claim or None, relation=v.relation))
    return out
