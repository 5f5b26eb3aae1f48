"""Read the sections of a results dict into the shapes the figures and findings use.

This is the one place that knows the experiments' field names (docs/results-schema.md,
the docstrings of experiments/flow.py and experiments/ensemble.py). Everything here is
defensive: a missing key gives None or [], never an exception, so a partial or older
results file still renders.
"""

from __future__ import annotations

import math
import re
from typing import Any

from ._fmt import fin_list, num

__all__ = [
    "section", "flow_rows", "flow_thresholds", "headline_rows", "row_label",
    "degradation_runs", "degradation_table", "ensemble_view", "pretty_model",
]

FlowRow = dict[str, Any]


def section(results: dict[str, Any], name: str) -> dict[str, Any] | None:
    """``results[name]``, or ``results`` itself when it is a single-experiment file of that kind."""
    if not isinstance(results, dict):
        return None
    sec = results.get(name)
    if isinstance(sec, dict):
        return sec
    if results.get("experiment") == name:
        return results
    return None


def _first(d: dict[str, Any], *keys: str, default: Any = None) -> Any:
    for k in keys:
        if k in d and d[k] is not None:
            return d[k]
    return default


def pretty_model(name: Any) -> str:
    """``resnet110`` -> ``ResNet-110``, ``plain56`` -> ``plain-56``; other names unchanged."""
    if not name:
        return "?"
    m = re.fullmatch(r"(resnet|plain|preresnet)(\d+)", str(name).strip().lower())
    if not m:
        return str(name)
    return {"resnet": "ResNet", "plain": "plain", "preresnet": "pre-act ResNet"}[m.group(1)] + "-" + m.group(2)


# -- flow ---------------------------------------------------------------------------------


def flow_rows(flow: dict[str, Any] | None) -> list[FlowRow]:
    """One row per measured config, with profile, ratio, slope, CI and verdict."""
    if not flow:
        return []
    raw = _first(flow, "configs", "rows", "results", "grid", default=[])
    rows: list[FlowRow] = []
    for r in raw if isinstance(raw, list) else []:
        if not isinstance(r, dict):
            continue
        prof = _first(r, "profile", "block_norms", "norms", default=[])
        if isinstance(prof, dict):
            prof = _first(prof, "norm", "mean", default=[])
        ci = _first(r, "slope_ci", "ci", default=[None, None])
        if isinstance(ci, dict):
            ci = [ci.get("lo"), ci.get("hi")]
        depth = _first(r, "depth", "layers")
        rows.append({
            "model": r.get("model"),
            "family": _first(r, "family", default=""),
            "arch": _first(r, "arch", default="?"),
            "norm": _norm_name(_first(r, "norm", "normalization", default="none")),
            "activation": _first(r, "activation", "act", default=""),
            "init": _first(r, "init", default=""),
            "depth": int(depth) if num(depth) is not None else None,
            "n_blocks": _first(r, "n_blocks", "blocks", default=len(prof) if isinstance(prof, list) else None),
            "profile": fin_list(prof),
            "profile_seeds": [fin_list(p) for p in _first(r, "profile_seeds", default=[]) or []],
            "ratio": num(_first(r, "ratio_first_last", "ratio")),
            "ratio_seeds": fin_list(_first(r, "ratio_seeds", default=[])),
            "slope": num(r.get("slope")),
            "slope_ci": (num(ci[0]), num(ci[1])) if isinstance(ci, (list, tuple)) and len(ci) == 2 else (None, None),
            "verdict": r.get("verdict"),
        })
    return rows


def _norm_name(v: Any) -> str:
    s = str(v).lower()
    return "batch" if s in ("batch", "bn", "batchnorm", "true") else "none" if s in ("none", "false", "") else s


def flow_thresholds(flow: dict[str, Any] | None) -> dict[str, Any]:
    """The verdict thresholds as flow.py stated them (empty when it did not)."""
    t = (flow or {}).get("thresholds")
    return t if isinstance(t, dict) else {}


def row_label(r: FlowRow, with_norm: bool = True) -> str:
    """``plain-110 with BN``: the arch and depth a reader recognises."""
    name = "plain" if r["arch"] == "plain" else "ResNet"
    base = f"{name}-{r['depth']}" if r.get("depth") is not None else (r.get("model") or name)
    if r.get("family") == "mlp" or "mlp" in str(r.get("model") or ""):
        base = f"{r['arch']} MLP, {r.get('depth')} layers"
    if with_norm:
        base += " with BN" if r["norm"] == "batch" else " without normalisation" if r["norm"] == "none" else f" ({r['norm']})"
    return base


def headline_rows(rows: list[FlowRow]) -> list[FlowRow]:
    """The rows of the He et al. setting: the He-2015 family (else the first family), ReLU, He init.

    The full grid goes into the verdict table; figures and findings lead with this slice.
    """
    if not rows:
        return []
    families = [r["family"] for r in rows]
    fam = "he2015" if "he2015" in families else families[0]
    sel = [r for r in rows if r["family"] == fam]
    for key, pref in (("activation", "relu"), ("init", "he")):
        vals = {r[key] for r in sel}
        if pref in vals:
            sel = [r for r in sel if r[key] == pref]
        elif len(vals) > 1:
            first = sel[0][key]
            sel = [r for r in sel if r[key] == first]
    return sorted(sel, key=lambda r: (r["arch"], r["norm"], r["depth"] or 0))


# -- degradation --------------------------------------------------------------------------


def degradation_runs(deg: dict[str, Any] | None) -> list[dict[str, Any]]:
    runs = (deg or {}).get("runs")
    return [r for r in runs if isinstance(r, dict)] if isinstance(runs, list) else []


def degradation_table(deg: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Final errors per depth and arch; rebuilt from the runs when the table is missing."""
    table = (deg or {}).get("table")
    if isinstance(table, list) and table:
        return sorted([t for t in table if isinstance(t, dict)], key=lambda t: num(t.get("depth")) or 0)
    by: dict[int, dict[str, Any]] = {}
    for r in degradation_runs(deg):
        d, a, f = r.get("depth"), r.get("arch"), r.get("final") or {}
        if d is None or a not in ("plain", "residual"):
            continue
        cell = by.setdefault(int(d), {"depth": int(d)}).setdefault(a, {"_tr": [], "_te": []})
        cell["_tr"].append(num(f.get("train_error")))
        cell["_te"].append(num(f.get("test_error")))
    out = []
    for d in sorted(by):
        row = {"depth": d}
        for a in ("plain", "residual"):
            c = by[d].get(a)
            if c:
                tr = [x for x in c["_tr"] if x is not None]
                te = [x for x in c["_te"] if x is not None]
                row[a] = {"train_error": sum(tr) / len(tr) if tr else None,
                          "test_error": sum(te) / len(te) if te else None, "n_seeds": len(c["_tr"])}
        out.append(row)
    return out


# -- ensemble -----------------------------------------------------------------------------


def _window(w: Any) -> dict[str, Any] | None:
    if not isinstance(w, dict):
        return None
    lo, hi = num(_first(w, "lo", "min", "start")), num(_first(w, "hi", "max", "stop"))
    if lo is None or hi is None:
        return None
    return {"lo": int(lo), "hi": int(hi), "mass": num(w.get("mass")),
            "share": num(_first(w, "share_of_paths", "share", "path_share"))}


def _curve(c: Any, xkey: tuple[str, ...]) -> dict[str, list] | None:
    if not isinstance(c, dict):
        return None
    x = _first(c, *xkey, default=None)
    y = _first(c, "mean", "error", "test_error", default=None)
    if not isinstance(x, list) or not isinstance(y, list):
        return None
    std = c.get("std") if isinstance(c.get("std"), list) else [None] * len(y)
    return {"x": fin_list(x), "mean": fin_list(y), "std": fin_list(std)}


def ensemble_view(ens: dict[str, Any] | None) -> dict[str, Any] | None:
    """The path view, lesions and reordering of one trained residual net and its plain twin."""
    if not ens:
        return None
    n = num(_first(ens, "n_blocks", "n"))
    counts = ens.get("counts")
    if n is None and isinstance(counts, list):
        n = len(counts) - 1
    n = int(n) if n is not None else None
    if not isinstance(counts, list) and n is not None:
        counts = [math.comb(n, k) for k in range(n + 1)]
    exact = ens.get("exact") if isinstance(ens.get("exact"), dict) else {}
    sampled = ens.get("sampled") if isinstance(ens.get("sampled"), dict) else {}
    eff = ens.get("effective") if isinstance(ens.get("effective"), dict) else {}
    lesion = ens.get("lesion") if isinstance(ens.get("lesion"), dict) else {}
    deletion = ens.get("deletion") if isinstance(ens.get("deletion"), dict) else {}

    def _les(d: Any) -> dict[str, Any] | None:
        if not isinstance(d, dict):
            return None
        blocks = [b for b in _first(d, "blocks", "per_block", default=[]) if isinstance(b, dict)]
        return {
            "model": d.get("model"),
            "baseline": num(_first(d, "baseline_test_error", "baseline")),
            "blocks": [{"block": int(num(b.get("block")) or i), "error": num(_first(b, "test_error", "error")),
                        "downsample": bool(b.get("downsample"))} for i, b in enumerate(blocks)],
        }

    return {
        "model": ens.get("model"), "plain_model": ens.get("plain_model"), "n": n, "data": ens.get("data"),
        "counts": [int(c) for c in counts] if isinstance(counts, list) else [],
        "exact_norms": fin_list(exact.get("norms")),
        "sampled_lengths": [int(k) for k in (sampled.get("lengths") or []) if num(k) is not None],
        "sampled_mean": fin_list(sampled.get("mean")),
        "sampled_std": fin_list(sampled.get("std")),
        "sampled_total": fin_list(sampled.get("total")),
        "samples": sampled.get("samples"),
        "eff_exact": _window(exact.get("effective") or eff.get("exact")),
        "eff_sampled": _window(sampled.get("effective") or eff.get("sampled")),
        "lesion_res": _les(lesion.get("residual")),
        "lesion_plain": _les(lesion.get("plain")),
        "del_res": _curve(deletion.get("residual"), ("k",)),
        "del_plain": _curve(deletion.get("plain"), ("k",)),
        "reorder": _curve(ens.get("reorder"), ("kendall_tau", "tau")),
    }
