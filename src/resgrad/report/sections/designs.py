"""The report's designs section: residual designs side by side, from a DesignsResult.

One table, design by figure, each design's paper claim and the verdict beside its numbers
(verdicts/designs.py), then the depth profiles at initialisation (weight gradient, Signal
Propagation Plots, token cosine) and the training curves. Reads results only; imports no torch.
"""

from __future__ import annotations

from html import escape
from typing import Any

from resgrad import verdicts
from resgrad.results.designs import DesignCell, DesignInit, DesignsResult
from resgrad.verdicts.designs import design_verdicts, variance_growth

from .. import figures_designs as FD
from .. import page as P
from .._fmt import NA, num, sig
from ..findings import Finding
from ..findings.designs import CAVEAT, CIFAR_CAVEAT, designs_findings
from ..registry import Part, register

__all__ = ["section", "headline", "TITLE", "sweep_line"]

TITLE = "Residual designs of today, side by side"


def _deep(r: DesignsResult, design: str) -> DesignInit | None:
    rows = [i for i in r.init if i.design == design]
    return max(rows, key=lambda i: i.depth) if rows else None


def _stat(c: DesignCell | None, pct: bool) -> str:
    if c is None:
        return NA
    f = c.final
    if num(f.mean) is None:
        return f"diverged ({c.diverged}/{c.n_seeds})" if c.diverged else NA
    fmt = (lambda v: f"{100 * v:.3g}%") if pct else sig
    lo, hi = f.ci_low, f.ci_high
    if pct and num(lo) is not None:  # an error lies in [0, 1]: a t-interval over few seeds can pass either end
        lo, hi = max(0.0, lo), min(1.0, hi)  # type: ignore[type-var]
    ci = f" [{fmt(lo)}, {fmt(hi)}]" if num(lo) is not None else ""
    return f"{fmt(f.mean)}{ci}"


def _amax(r: DesignsResult, design: str, streams: int) -> str:
    if streams <= 1:
        return "—"
    row = _deep(r, design)
    init = sig(row.amax_forward) if row is not None and num(row.amax_forward) is not None else NA
    trained = [run.amax[0] for run in r.runs if run.design == design and run.amax and num(run.amax[0]) is not None]
    return f"{init} / {sig(max(trained))}" if trained else init


def _table(r: DesignsResult, found: list[Finding]) -> str:
    lm_depths = sorted({c.depth for c in r.cells if c.family == "transformer"})
    cnn_depths = sorted({c.depth for c in r.cells if c.family == "cnn"})
    verdict = {v.design: v for v in design_verdicts(r)}
    head = ["design", "paper's claim", "growth at init", "stream first/last", "Amax init / trained",
            "SPP variance last/first", "token cosine, last"]
    head += [f"LM val loss, {d} layers [95% CI]" for d in lm_depths]
    head += [f"CNN test error, {d} layers [95% CI]" for d in cnn_depths]
    head += ["steps to target (deepest)", "spikes / run", "diverged", "verdict at this size"]
    rows = []
    for d in r.designs:
        row = _deep(r, d.name)
        cos = row.token_cosine[-1] if row is not None and row.token_cosine else None
        cells = {c.depth: c for c in r.cells if c.design == d.name}
        deepest = cells[max(cells)] if cells else None
        v = verdict.get(d.name)
        claim = escape(d.claim) + (f" <span class='muted'>({escape(d.paper)}, " +
                                   P.linkify(escape(f"arXiv {d.arxiv}")) + ")</span>" if d.paper else "")
        tr = [f"<b>{escape(d.title or d.name)}</b> <span class='muted'>({escape(d.family)})</span>", claim,
              P.n(f"{sig(row.growth)}×" if row is not None and num(row.growth) is not None else NA),
              P.n(f"{sig(row.stream_ratio)}×" if row is not None and num(row.stream_ratio) is not None else NA),
              P.n(_amax(r, d.name, d.streams)),
              P.n(f"{sig(variance_growth(row))}×" if row is not None and variance_growth(row) is not None else NA),
              P.n(sig(cos) if num(cos) is not None else "—")]
        for depth in lm_depths:
            tr.append(P.n(_stat(cells.get(depth), False) if d.family == "transformer" else "—"))
        for depth in cnn_depths:
            tr.append(P.n(_stat(cells.get(depth), True) if d.family == "cnn" else "—"))
        if deepest is not None and d.family == "transformer":
            st = deepest.steps_to_target
            tr.append(P.n(f"{sig(st.mean)} ({deepest.reached}/{deepest.n_seeds})" if num(st.mean) is not None
                          else f"never (0/{deepest.n_seeds})"))
        else:
            tr.append(P.n("—"))
        tr.append(P.n(sig(deepest.spikes.mean) if deepest is not None and num(deepest.spikes.mean) is not None else "—"))
        tr.append(P.n(f"{sum(c.diverged for c in cells.values())}/{sum(c.n_seeds for c in cells.values())}"
                      if cells else "—"))
        tr.append((P.badge(v.relation) or "<span class='muted'>not judged</span>") + (
            f"<br><span class='muted'>{escape(v.figure)}; {escape(v.rule)}</span>" if v is not None and v.rule else ""))
        rows.append(tr)
    return P.table(head, rows, cls="cmp")


def sweep_line(r: DesignsResult) -> str:
    """The learning rates in words: which designs were swept, over which lrs, and the lr each cell is reported at
    (its best mean final metric over seeds); "" when nothing was trained."""
    if not r.cells:
        return ""
    cfg = r.config
    sweep = {str(k): list(v) for k, v in (cfg.get("lr_sweep") or {}).items()}
    titles = {d.name: d.title or d.name for d in r.designs}
    shared = []
    for fam, key, what in (("transformer", "lm_train", "LM"), ("cnn", "cnn_train", "CNN")):
        lr = (cfg.get(key) or {}).get("lr")
        if any(c.family == fam for c in r.cells) and num(lr) is not None:
            shared.append(f"{what} designs at lr {sig(lr)}")
    out = f"<b>Learning rates</b>: {' and '.join(shared) or 'as recorded per cell'}"
    if not sweep:
        return out + " (one lr for every design; no per-design sweep).</p>"
    items = []
    for d, lrs in sweep.items():
        at = [f"{sig(c.lr)} at {c.depth} layer{'s' if c.depth != 1 else ''}" for c in sorted((c for c in r.cells if c.design == d),
                                                                 key=lambda c: c.depth)]
        items.append(f"{escape(titles.get(d, d))} swept over {', '.join(sig(v) for v in lrs)}, reported at "
                     + ("; ".join(at) if at else "none (not trained)"))
    return (out + ", except where a paper says its design needs another lr: " + "; ".join(items)
            + ". A swept design is reported at its lr with the lowest mean final metric over seeds (a diverged seed "
            "counts as infinitely bad); its other lrs' runs are in the run list.</p>")


def _intro(r: DesignsResult) -> str:
    cfg = r.config
    init_t = ", ".join(map(str, cfg.get("init_depths", [])))
    init_c = ", ".join(map(str, cfg.get("cnn_init_depths", [])))
    lm = cfg.get("lm_train") or {}
    parts = cfg.get("parts", [])
    out = [f"<p>Each design is a twin on the same block contract (same width {cfg.get('d_model')}, heads "
           f"{cfg.get('n_heads')} and depth for the Transformers; He et al. 2015's CIFAR nets for the CNNs), measured "
           f"at initialisation ({init_t} Transformer layers on {escape(r.data.get('transformer', 'text'))}; {init_c} CNN "
           f"layers on {escape(r.data.get('cnn', 'MNIST-1D'))}; {len(cfg.get('init_seeds', []))} seed(s))"]
    if "lm" in parts:
        out.append(f", and trained as a character-level LM at {', '.join(map(str, cfg.get('lm_depths', [])))} layers "
                   f"over {len(cfg.get('seeds', []))} seeds ({escape(str(lm.get('optimizer')))}, lr {sig(lm.get('lr'))}, "
                   f"batch {lm.get('batch_size')}, {lm.get('epochs')} epoch(s) of {cfg.get('seq_len')}-character windows; "
                   "one recipe for every design)")
    if "cnn" in parts:
        out.append(f"; the CNNs at {', '.join(map(str, cfg.get('cnn_depths', [])))} layers")
    out.append(".</p>")
    out.append("<p><b>Growth</b>: the last layer's weight-gradient norm over the first's (Xiong et al. 2020 Fig. 3); "
               "<b>stream first/last</b>: the residual-stream gradient at the first unit over that after the last; "
               "<b>Amax</b>: the largest absolute row sum of the product of the stream-mixing matrices across depth "
               "(DeepSeek-AI 2025, only for designs with several streams); <b>SPP</b>: Brock et al. 2021's Signal "
               "Propagation Plot, the average channel variance of the last unit's output over the first's; <b>token "
               "cosine</b>: the mean cosine between the tokens of a sequence after the last unit (Noci et al. 2022: "
               "rank collapse at 1). <b>Steps to target</b>: steps until the training loss (a 20-step trailing mean) "
               "reaches the target of its depth (the reference design's final loss plus a margin); <b>spikes</b>: "
               "steps whose gradient norm exceeds "
               f"{sig(cfg.get('spike_k'))}× the median of the {cfg.get('spike_window')} steps before (Kim et al. 2025); "
               "diverged: seeds whose loss went non-finite (counted, never dropped silently). Intervals: Student-t "
               "over the seeds with a finite value.</p>")
    line = sweep_line(r)
    if line:
        out.append("<p class='sweep'>" + line)
    out.append(f"<p class='muted'><b>Caveat.</b> {escape(CAVEAT)}"
               + (f" {escape(CIFAR_CAVEAT)}" if r.data.get("cnn") == "cifar10" else "") + "</p>")
    if r.notes:
        out.append("<ul class='muted'>" + "".join(f"<li>{escape(n)}</li>" for n in r.notes) + "</ul>")
    return "".join(out)


def section(r: DesignsResult, found: list[Finding]) -> str:
    """The designs section's HTML body for ``r`` (its findings taken from ``found``)."""
    titles = {d.name: d.title or d.name for d in r.designs}
    mine = [f for f in found if f.section == "designs"]
    out = [_intro(r), "<h3>Design by figure</h3>", _table(r, mine)]
    out.append(P.comparison(mine, "designs"))
    out.append(P.section_findings(mine, "designs"))
    out.append("<h3>Depth profiles at initialisation</h3>")
    out.append(P.img(FD.profiles(r.init, titles), "weight-gradient norm per layer at initialisation",
                     "Per-layer (Transformers) and per-block (CNNs) weight-gradient norm at initialisation at the "
                     "deepest depth measured, log axis, layer 0 nearest the input (mean over seeds)."))
    out.append(P.img(FD.spp(r.init, titles), "signal propagation plots",
                     "Signal Propagation Plots (Brock et al. 2021 Fig. 1): per unit, the average channel variance "
                     "(solid) and the average channel squared mean (dotted) of its output at initialisation."))
    out.append(P.img(FD.token_cosine(r.init, titles), "token cosine across depth",
                     "Mean cosine similarity between the tokens of a sequence, entering the first unit and after each "
                     "unit, at initialisation (Noci et al. 2022: rank collapse drives it to 1)."))
    if r.runs:
        out.append("<h3>Training</h3>")
        out.append(P.img(FD.loss_curves(r.runs, titles), "training loss per design",
                         "Training loss of each LM design (20-step trailing mean, mean over seeds), one panel per depth."))
    return "\n".join(out)


def headline(found: list[Finding]) -> str:
    """The answer box of a designs run alone: how many designs' claims agree at this size."""
    mine = [f for f in found if f.section == "designs"]
    if not mine:
        return '<div class="answer"><p>No findings: the designs result holds no comparable numbers.</p></div>'
    count: dict[Any, int] = {}
    for f in mine:
        count[f.relation] = count.get(f.relation, 0) + 1
    parts = [f"{count.get(k, 0)} {w}" for k, w in (("agrees", "agree"), ("partly", "partly agree"),
                                                     ("contradicts", "contradict"), (None, "not judged"))]
    return ('<div class="answer"><p><span class="label">The residual designs</span> (this run holds only them; see '
            f'<a href="#designs">their section</a>): of {len(mine)} designs\' claims, {", ".join(parts)} at this '
            'size.</p></div>')


register(Part("designs", DesignsResult, TITLE, 45, verdicts.designs, lambda r, s: designs_findings(r), section,
              core=False, timing=lambda r: dict(r.timing), headline=headline))
