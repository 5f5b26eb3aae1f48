"""The sweep section: per cell of a grid, final errors over seeds and the gradient ratio.

A cell is one (dataset, model) of a sweep (``SweepResult``) or of the study's degradation
stage (``DegradationResult``, one dataset); its seeds are the repeats. For the final train
and test error the section shows the mean, the sample std and a Student-t interval for the
mean over the seeds that finished with a finite loss (none with one seed), and the first/last
block gradient ratio ‖∂L/∂x_first‖ / ‖∂L/∂x_last‖ at initialisation and after training as a
geometric mean over seeds (ratios span decades).

A sweep's statistics are the cell summaries its results.json stores (written by the sweep
experiment); a degradation stage stores none, so they are computed with the same function
(``resgrad.stats.seed_stat``). Reads results only; imports no torch.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any

from resgrad import stats
from resgrad.results import DegradationResult
from resgrad.results.sweep import Stat, SweepResult

from .. import page as P
from .._fmt import NA, pct, sig

__all__ = ["cells", "section", "page", "seeded_cells", "LEVEL"]

LEVEL = 0.95  # the interval's confidence level unless the sweep's config names another


def _stat(s: Stat | dict[str, Any]) -> dict[str, Any]:
    """A stored Stat as the section reads it: ``ci`` a (low, high) pair or None."""
    d = s.to_json() if isinstance(s, Stat) else s
    lo, hi = d.get("ci_low"), d.get("ci_high")
    mean = d.get("mean")
    return {"mean": float("nan") if mean is None else mean, "std": d.get("std"),
            "ci": (lo, hi) if lo is not None and hi is not None else None, "n": d["n"], "n_finite": d["n_finite"]}


def _overrides(r: SweepResult | DegradationResult, depth: int | None) -> str:
    """What this cell's training changes against the grid's recipe: He et al.'s warm-up for its depth."""
    warm = {int(d): int(n) for d, n in (r.config.get("warmup") or [])}
    if depth is not None and depth in warm:
        lr = (r.config.get("train") or {}).get("warmup_lr")
        return f"warm-up {warm[depth]} it" + (f" at lr {lr:g}" if isinstance(lr, (int, float)) else "")
    return ""


def cells(result: SweepResult | DegradationResult) -> list[dict[str, Any]]:
    """The grid's cells in grid order, each with its statistics over seeds (fractions, not %)."""
    if isinstance(result, SweepResult):
        return [{"dataset": c.dataset, "model": c.model, "arch": c.arch, "depth": c.depth, "seeds": list(c.seeds),
                 "overrides": _overrides(result, c.depth), "train_error": _stat(c.metrics["train_error"]),
                 "test_error": _stat(c.metrics["test_error"]), "grad_ratio_init": c.grad_ratio_init,
                 "grad_ratio_final": c.grad_ratio_final,
                 "level": c.metrics["test_error"].level if "test_error" in c.metrics else LEVEL}
                for c in result.cells]
    order: dict[str, list[Any]] = {}
    for run in result.runs:
        order.setdefault(run.model, []).append(run)
    out = []
    for model, runs in order.items():
        out.append({
            "dataset": result.data.name, "model": model, "arch": runs[0].arch, "depth": runs[0].depth,
            "seeds": [r.seed for r in runs], "overrides": _overrides(result, runs[0].depth),
            "train_error": _stat(stats.seed_stat([r.final.train_error for r in runs], LEVEL)),
            "test_error": _stat(stats.seed_stat([r.final.test_error for r in runs], LEVEL)),
            "grad_ratio_init": stats.geometric_mean([r.grad[0].ratio_first_last if r.grad else None for r in runs]),
            "grad_ratio_final": stats.geometric_mean([r.grad[-1].ratio_first_last if r.grad else None for r in runs]),
            "level": LEVEL,
        })
    return out


def _err(s: dict[str, Any]) -> str:
    if s["n_finite"] == 0:
        return "diverged"
    text = f"{pct(s['mean'])} ± {pct(s['std'])}"
    if s["ci"] is not None:
        lo, hi = stats.clip_interval(*s["ci"])  # an error rate lies in [0, 1]
        few = s["n_finite"] < stats.MIN_INTERVAL_VALUES
        text += (f" <span class=muted>[{pct(lo)}, {pct(hi)}]"
                 + (f" (n = {s['n_finite']}: not meaningful)" if few else "") + "</span>")
    if s["n_finite"] < s["n"]:
        text += f" ({s['n'] - s['n_finite']} diverged)"
    return text


def _recipe(result: SweepResult | DegradationResult) -> str:
    train = result.config.get("train") or {}
    keep = ("epochs", "batch_size", "lr", "momentum", "weight_decay", "milestones", "gamma")
    parts = [f"{k} {train[k]}" for k in keep if k in train]
    return ", ".join(escape(str(p)) for p in parts)


def section(result: SweepResult | DegradationResult) -> str:
    """The per-cell table as an HTML fragment (empty for a grid without runs)."""
    cs = cells(result)
    if not cs:
        return ""
    level = cs[0]["level"]
    head = ["dataset", "model", "depth", "arch", "seeds", "overrides", "train error", "test error",
            "grad ratio first/last, init", "after training"]
    rows = []
    for c in cs:
        rows.append("<tr>" + "".join(f"<td>{v}</td>" for v in (
            escape(c["dataset"]), escape(c["model"]), NA if c["depth"] is None else c["depth"], escape(c["arch"]),
            len(c["seeds"]), escape(c["overrides"]) or "—", _err(c["train_error"]), _err(c["test_error"]),
            sig(c["grad_ratio_init"]), sig(c["grad_ratio_final"]))) + "</tr>")
    th = "".join(f"<th>{h}</th>" for h in head)
    recipe = _recipe(result)
    return (f"<h3>Per cell, over seeds</h3><p>Final errors: mean ± sample std [{level:.0%} Student-t interval "
            f"for the mean] over the seeds that finished (no interval with one seed; with two, one degree of freedom puts its "
            f"ends 12.7 standard errors apart from the mean, so it is marked not meaningful), cut to the possible "
            f"0–100%. Gradient ratio "
            f"‖∂L/∂x<sub>first block</sub>‖ / ‖∂L/∂x<sub>last block</sub>‖, geometric mean over seeds "
            f"(&lt; 1: the gradient shrinks toward the input)."
            + (f" One recipe for every cell: {recipe}." if recipe else "") + "</p>"
            f'<div class="scroll"><table class="sweep"><thead><tr>{th}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table></div>")


def seeded_cells(deg: DegradationResult | None) -> str:
    """The per-cell table of a study's degradation stage, where it repeated seeds (else nothing)."""
    if deg is None or len({r.seed for r in deg.runs}) < 2:
        return ""
    return section(deg)


def page(result: SweepResult) -> str:
    """A whole self-contained report page for a sweep folder's results."""
    n = len(result.runs)
    env = escape(json.dumps(result.environment, default=str))
    cfg = escape(json.dumps(result.config, indent=2, default=str, ensure_ascii=False))
    main = f"""<section id="sweep"><h2>1. Final errors and gradient ratios</h2>
{section(result)}
</section>
<section id="setup"><h2>2. Setup</h2>
<p class="muted">{env}</p>
<details><summary>sweep config</summary><pre>{cfg}</pre></details>
</section>"""
    return P.shell("resgrad sweep report", "Sweep: plain vs residual over a grid",
                   f"experiment sweep · {n} runs in {len(result.cells)} cells", main)
