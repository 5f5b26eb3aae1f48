"""The flow grid's statistics: per-config groups over seeds, their verdicts and the summary.

``combine`` turns the raw measurements of :mod:`resgrad.experiments.flow` (one per config and
seed) into the :class:`~resgrad.results.FlowResult`; the conventions it records are below.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict
from typing import Any

from .. import stats
from ..data import DataBundle
from ..io import environment, jsonable
from ..results import FlowResult
from ..verdicts import flow_verdict as verdict

__all__ = ["combine", "CONVENTIONS", "VERDICTS", "exp10"]

VERDICTS = ("vanishing", "healthy", "exploding", "non-finite")


def exp10(v: float) -> float:
    if not math.isfinite(v):
        return v
    return 10.0 ** v if v > -320 else 0.0


def combine(config: Any, data: DataBundle, grid: list[tuple], per_group: list[list[dict[str, Any]]],
             signal: dict[str, Any] | None, t0: float) -> FlowResult:
    """The FlowResult of the grid's measurements (``per_group[g]``: group g's seeds in order)."""
    rows: list[dict[str, Any]] = []
    groups: list[dict[str, Any]] = []
    for (family, arch, norm, act, init, _), seeds_rows in zip(grid, per_group, strict=True):
        slopes = [r["slope"] for r in seeds_rows]
        L = seeds_rows[0]["depth"]
        finite = all(r["finite"] for r in seeds_rows)
        slope = stats.mean(slopes) if finite else float("nan")
        ci = stats.t_interval(slopes, config.ci_level) if finite else None
        v = verdict(slope, ci, L, config.threshold_decades)
        lrs = [r["log10_ratio"] for r in seeds_rows]
        log_ratio = stats.mean(lrs) if finite else float("nan")
        prof = [sum(c) / len(c) for c in zip(*(r["profile"]["log10_rms"] for r in seeds_rows), strict=True)]
        grp = {
            "family": family, "arch": arch, "norm": norm, "act": act, "init": init, "depth": L,
            "layers": seeds_rows[0]["layers"], "seeds": list(config.seeds),
            "slope": slope, "slope_ci": list(ci) if ci else None,
            "decades": slope * (L - 1) if finite else float("nan"),
            "log10_ratio": log_ratio, "ratio_first_last": exp10(log_ratio), "verdict": v,
            "profile_log10_rms": prof,
        }
        groups.append(grp)
        for r in seeds_rows:
            r.update(slope_ci=grp["slope_ci"], decades=grp["decades"], verdict=v)
        rows.extend(seeds_rows)

    results: dict[str, Any] = {
        "config": asdict(config),
        "environment": environment(config.device),
        "data": {"name": data.name, "input_shape": list(data.input_shape),
                 "num_classes": data.num_classes,
                 "batch_size": {"mlp": config.batch_size, "he2015": config.he_batch_size}},
        "conventions": CONVENTIONS,
        "thresholds": {"decades": config.threshold_decades, "ci_level": config.ci_level},
        "configs": rows,
        "groups": groups,
        "summary": _summary(groups),
    }
    if signal is not None:
        results["signal"] = {**signal, "fits": signal["fits"]["shattering"]}
    results["wall_time_s"] = time.perf_counter() - t0
    return FlowResult.of(jsonable(results))


CONVENTIONS = {
    "profile": "gradient of the loss w.r.t. the INPUT of each block, block 0 nearest the network input; "
               "norm over the whole batch tensor, rms = norm / sqrt(numel)",
    "ratio": "ratio_first_last = ||dL/dx_0|| / ||dL/dx_{L-1}|| (first block input over last block input); "
             "< 1: the gradient shrinks on its way back to the input",
    "slope": "least-squares slope of log10 rms against k = L-1-l (blocks crossed by the backward pass), "
             "decades per block; negative = vanishing; mean over seeds, CI = Student t across seeds",
    "decades": "slope * (L-1): the fitted log10 change of the gradient from the last block to the first",
    "verdict": "vanishing if decades <= -threshold and the CI's upper end < 0; exploding if decades >= "
               "+threshold and the CI's lower end > 0; healthy otherwise; non-finite if a loss or norm is "
               "NaN/Inf (one seed: the point estimate decides)",
}


def _summary(groups: list[dict[str, Any]]) -> dict[str, Any]:
    def pick(g: dict[str, Any]) -> dict[str, Any]:
        return {"log10_ratio": g["log10_ratio"], "decades": g["decades"], "verdict": g["verdict"]}

    largest: list[dict[str, Any]] = []
    by_key: dict[tuple, dict[str, dict[str, Any]]] = {}
    deepest: dict[str, int] = {}
    for g in groups:
        deepest[g["family"]] = max(deepest.get(g["family"], 0), g["depth"])
    for g in groups:
        if g["depth"] == deepest[g["family"]]:
            by_key.setdefault((g["family"], g["norm"], g["act"], g["init"], g["depth"]), {})[g["arch"]] = g
    for (family, norm, act, init, depth), d in by_key.items():
        largest.append({"family": family, "norm": norm, "act": act, "init": init, "depth": depth,
                        **{a: pick(g) for a, g in d.items()}})
    bn_plain = [{"family": g["family"], "act": g["act"], "init": g["init"], "depth": g["depth"], **pick(g)}
                for g in groups if g["arch"] == "plain" and g["norm"] == "batch"]
    counts: dict[str, dict[str, int]] = {}
    for g in groups:
        c = counts.setdefault(g["arch"], dict.fromkeys(VERDICTS, 0))
        c[g["verdict"]] += 1
    series: dict[tuple, list[dict[str, Any]]] = {}
    for g in groups:
        series.setdefault((g["family"], g["arch"], g["norm"], g["act"], g["init"]), []).append(g)
    trend = []
    for (family, arch, norm, act, init), gs in series.items():
        gs = sorted(gs, key=lambda g: g["depth"])
        xs, ys = [g["depth"] - 1 for g in gs], [g["decades"] for g in gs]
        trend.append({"family": family, "arch": arch, "norm": norm, "act": act, "init": init,
                      "depths": [g["depth"] for g in gs], "decades": ys, "rate_per_block": stats.slope(xs, ys)})
    return {"largest_depth": largest, "bn_plain": bn_plain, "depth_trend": trend, "verdict_counts": counts}
