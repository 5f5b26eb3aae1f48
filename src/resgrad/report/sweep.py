"""The sweep section: per cell of a grid, final errors over seeds and the gradient ratio.

A cell is one (dataset, model) of a sweep (``SweepResult``) or of the study's degradation
stage (``DegradationResult``, one dataset); its seeds are the repeats. For the final train
and test error the section shows the mean, the sample std and a Student-t interval for the
mean over the seeds that finished with a finite loss (``resgrad.stats``; none with one
seed), and the first/last block gradient ratio ‖∂L/∂x_first‖ / ‖∂L/∂x_last‖ at
initialisation and after training as a geometric mean over seeds (ratios span decades).

Computed here from the runs, not copied from the stored cell summaries, so the page says
what the runs say. Reads results only; imports no torch.
"""

from __future__ import annotations

import json
import math
from html import escape
from typing import Any

from resgrad import stats
from resgrad.results import DegradationResult
from resgrad.results.sweep import SweepResult

from ._fmt import NA, pct, sig
from ._style import CSS

__all__ = ["cells", "section", "page", "LEVEL"]

LEVEL = 0.95  # the interval's confidence level unless the sweep's config names another


def _log10(v: Any) -> float | None:
    return math.log10(v) if isinstance(v, (int, float)) and math.isfinite(v) and v > 0 else None


def _over_seeds(values: list[float | None], level: float) -> dict[str, Any]:
    s = stats.summary(values)
    finite = [v for v in values if v is not None and math.isfinite(v)]
    ci = stats.t_interval(finite, level) if len(finite) >= 2 else None
    return {"mean": s.mean, "std": s.std, "ci": ci, "n": s.n, "n_finite": s.n_finite}


def _geo(ratios: list[float | None]) -> float | None:
    logs = [_log10(r) for r in ratios]
    if not logs or any(v is None for v in logs):
        return None  # a seed without a finite ratio: no honest geometric mean
    return 10 ** stats.mean(logs)  # type: ignore[arg-type]


def _overrides(r: SweepResult | DegradationResult, depth: int | None) -> str:
    """What this cell's training changes against the grid's recipe: He et al.'s warm-up for its depth."""
    warm = {int(d): int(n) for d, n in (r.config.get("warmup") or [])}
    if depth is not None and depth in warm:
        lr = (r.config.get("train") or {}).get("warmup_lr")
        return f"warm-up {warm[depth]} it" + (f" at lr {lr:g}" if isinstance(lr, (int, float)) else "")
    return ""


def cells(result: SweepResult | DegradationResult) -> list[dict[str, Any]]:
    """The grid's cells in grid order, each with its statistics over seeds (fractions, not %)."""
    level = float(result.config.get("level", LEVEL)) if isinstance(result, SweepResult) else LEVEL
    if isinstance(result, SweepResult):
        keyed = [((r.dataset, r.model), r) for r in result.runs]
    else:
        keyed = [((result.data.name, r.model), r) for r in result.runs]
    order: dict[tuple[str, str], list[Any]] = {}
    for key, run in keyed:
        order.setdefault(key, []).append(run)
    out = []
    for (dataset, model), runs in order.items():
        out.append({
            "dataset": dataset, "model": model, "arch": runs[0].arch, "depth": runs[0].depth,
            "seeds": [r.seed for r in runs], "overrides": _overrides(result, runs[0].depth),
            "train_error": _over_seeds([r.final.train_error for r in runs], level),
            "test_error": _over_seeds([r.final.test_error for r in runs], level),
            "grad_ratio_init": _geo([r.grad[0].ratio_first_last if r.grad else None for r in runs]),
            "grad_ratio_final": _geo([r.grad[-1].ratio_first_last if r.grad else None for r in runs]),
            "level": level,
        })
    return out


def _err(s: dict[str, Any]) -> str:
    if s["n_finite"] == 0:
        return "diverged"
    text = f"{pct(s['mean'])} ± {pct(s['std'])}"
    if s["ci"] is not None:
        text += f" <span class=muted>[{pct(s['ci'][0])}, {pct(s['ci'][1])}]</span>"
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
            f"for the mean] over the seeds that finished (no interval with one seed). Gradient ratio "
            f"‖∂L/∂x<sub>first block</sub>‖ / ‖∂L/∂x<sub>last block</sub>‖, geometric mean over seeds "
            f"(&lt; 1: the gradient shrinks toward the input)."
            + (f" One recipe for every cell: {recipe}." if recipe else "") + "</p>"
            f'<div class="scroll"><table class="sweep"><thead><tr>{th}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table></div>")


def page(result: SweepResult) -> str:
    """A whole self-contained report page for a sweep folder's results."""
    n = len(result.runs)
    env = escape(json.dumps(result.environment, default=str))
    cfg = escape(json.dumps(result.config, indent=2, default=str, ensure_ascii=False))
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>resgrad sweep report</title>
<style>{CSS}</style>
</head>
<body>
<div class="layout">
<header>
<h1>Sweep: plain vs residual over a grid</h1>
<p class="sub">resgrad report · experiment sweep · {n} runs in {len(cells(result))} cells</p>
</header>
<main>
<section id="sweep"><h2>1. Final errors and gradient ratios</h2>
{section(result)}
</section>
<section id="setup"><h2>2. Setup</h2>
<p class="muted">{env}</p>
<details><summary>sweep config</summary><pre>{cfg}</pre></details>
</section>
</main>
<footer>Generated by resgrad from results.json; self-contained (no network). Re-render with <code>resgrad report RUN_DIR</code>.</footer>
</div>
</body>
</html>
"""
