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
    "degradation_runs", "degradation_table", "ensemble_view", "weighted_length", "pretty_model", "data_name", "train_epochs",
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


def data_name(sec: dict[str, Any] | None) -> str | None:
    """The dataset a section measured on: ``data`` is a name or ``{"name": ...}``, here or in its config."""
    if not isinstance(sec, dict):
        return None
    cfg = sec.get("config") if isinstance(sec.get("config"), dict) else {}
    for d in (sec.get("data"), cfg.get("data")):
        if isinstance(d, dict) and d.get("name"):
            return str(d["name"])
        if isinstance(d, str) and d:
            return d
    return None


def train_epochs(deg: dict[str, Any] | None) -> int | None:
    """Epochs of the degradation runs: ``config.train.epochs`` (or ``config.epochs``)."""
    cfg = (deg or {}).get("config") if isinstance((deg or {}).get("config"), dict) else {}
    train = cfg.get("train") if isinstance(cfg.get("train"), dict) else {}
    e = num(train.get("epochs", cfg.get("epochs")))
    return int(e) if e is not None else None


# -- flow ---------------------------------------------------------------------------------


def flow_rows(flow: dict[str, Any] | None) -> list[FlowRow]:
    """One row per measured config (aggregated over seeds): profile, ratio, slope, CI, verdict.

    flow.py writes ``groups`` (one per config over seeds) and ``configs`` (one per seed,
    with ``group`` pointing at its group); a file with only per-config rows is read as is.
    """
    if not flow:
        return []
    groups = flow.get("groups") if isinstance(flow.get("groups"), list) else None
    per_seed = flow.get("configs") if isinstance(flow.get("configs"), list) else []
    raw = groups if groups else per_seed
    seeds_of: dict[int, list[dict[str, Any]]] = {}
    if groups:
        for c in per_seed:
            if isinstance(c, dict) and num(c.get("group")) is not None:
                seeds_of.setdefault(int(c["group"]), []).append(c)
    rows: list[FlowRow] = []
    for i, r in enumerate(raw):
        if not isinstance(r, dict):
            continue
        seeds = seeds_of.get(i, [])
        ci = r.get("slope_ci")
        if isinstance(ci, dict):
            ci = [ci.get("lo"), ci.get("hi")]
        depth, layers = num(r.get("depth")), num(r.get("layers"))
        log10_ratio = num(r.get("log10_ratio"))
        ratio = num(_first(r, "ratio_first_last", "ratio"))
        if ratio is None and log10_ratio is not None and abs(log10_ratio) < 300:
            ratio = 10.0 ** log10_ratio
        if log10_ratio is None and ratio is not None and ratio > 0:
            log10_ratio = math.log10(ratio)
        ratio_seeds = [num(c.get("ratio_first_last")) for c in seeds] or fin_list(r.get("ratio_seeds"))
        rows.append({
            "model": r.get("model"),
            "family": _first(r, "family", default=""),
            "arch": _first(r, "arch", default="?"),
            "norm": _norm_name(_first(r, "norm", "normalization", default="none")),
            "activation": _first(r, "act", "activation", default=""),
            "init": _first(r, "init", default=""),
            "depth": int(depth) if depth is not None else None,  # blocks
            "layers": int(layers) if layers is not None else None,
            "profile": _profile(r),
            "profile_seeds": [_profile(c) for c in seeds] or [fin_list(p) for p in r.get("profile_seeds") or []],
            "ratio": ratio,
            "log10_ratio": log10_ratio,
            "ratio_seeds": ratio_seeds,
            "slope": num(r.get("slope")),
            "slope_ci": (num(ci[0]), num(ci[1])) if isinstance(ci, (list, tuple)) and len(ci) == 2 else (None, None),
            "decades": num(r.get("decades")),
            "verdict": r.get("verdict"),
        })
    return rows


def _profile(r: dict[str, Any]) -> list[float | None]:
    """Per-block gradient RMS (block 0 = input side), from log10 values where flow.py gives them."""
    logs = r.get("profile_log10_rms")
    prof = r.get("profile")
    if logs is None and isinstance(prof, dict):
        logs = prof.get("log10_rms")
        if logs is None:
            return fin_list(_first(prof, "rms", "norm", default=[]))
    if isinstance(logs, list):
        return [10.0 ** v if v is not None and -300 < v < 300 else None for v in fin_list(logs)]
    return fin_list(prof if isinstance(prof, list) else _first(r, "block_norms", "norms", default=[]))


def _norm_name(v: Any) -> str:
    s = str(v).lower()
    return "batch" if s in ("batch", "bn", "batchnorm", "true") else "none" if s in ("none", "false", "") else s


def flow_thresholds(flow: dict[str, Any] | None) -> dict[str, Any]:
    """The verdict thresholds as flow.py stated them (empty when it did not)."""
    t = (flow or {}).get("thresholds")
    return t if isinstance(t, dict) else {}


def row_label(r: FlowRow, with_norm: bool = True) -> str:
    """``plain-110 with BN``: He et al. nets by layer count, MLPs by blocks."""
    if r.get("family") == "mlp":
        base = f"{r['arch']} MLP of {r.get('depth')} blocks"
    else:
        name = "plain" if r["arch"] == "plain" else "ResNet"
        layers = r.get("layers") or (2 * r["depth"] + 2 if r.get("depth") else None)  # 3n blocks, 6n+2 layers
        base = f"{name}-{layers}" if layers else (r.get("model") or name)
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
    return {"lo": int(lo), "hi": int(hi), "mass": num(w.get("mass")), "held": num(w.get("held")),
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


def _trials(r: Any) -> list[tuple[float, float]]:
    """Every reorder trial as (tau, error), when the results keep them."""
    out = []
    trials = r.get("trials") if isinstance(r, dict) else None
    for per_k in trials if isinstance(trials, list) else []:
        for t in per_k if isinstance(per_k, list) else []:
            if isinstance(t, dict) and num(t.get("tau")) is not None and num(t.get("error")) is not None:
                out.append((num(t["tau"]), num(t["error"])))
    return out


def weighted_length(values: list[float | None]) -> float | None:
    """The mean path length weighted by gradient magnitude per length (k = index)."""
    pts = [(k, v) for k, v in enumerate(values) if v is not None and v >= 0]
    total = sum(v for _, v in pts)
    return sum(k * v for k, v in pts) / total if total > 0 else None


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
        "sampled_q10": fin_list(sampled.get("q10")),
        "sampled_q90": fin_list(sampled.get("q90")),
        "plain_norm": num((ens.get("exact_plain") or {}).get("norm")) if isinstance(ens.get("exact_plain"), dict) else None,
        "explanation": eff.get("explanation") if isinstance(eff.get("explanation"), str) else None,
        "models": {k: m for k, m in (ens.get("models") or {}).items() if isinstance(m, dict)}
        if isinstance(ens.get("models"), dict) else {},
        "notes": [str(x) for x in ens.get("notes") or [] if x] if isinstance(ens.get("notes"), list) else [],
        "sampled_total": fin_list(sampled.get("total")),
        "samples": sampled.get("samples"),
        "eff_exact": _window(exact.get("effective") or eff.get("exact")),
        "eff_sampled": _window(sampled.get("effective") or eff.get("sampled")),
        "lesion_res": _les(lesion.get("residual")),
        "lesion_plain": _les(lesion.get("plain")),
        "del_res": _curve(deletion.get("residual"), ("k",)),
        "del_plain": _curve(deletion.get("plain"), ("k",)),
        "reorder": _curve(ens.get("reorder"), ("kendall_tau", "tau")),
        "reorder_plain": _curve((ens.get("reorder") or {}).get("plain"), ("kendall_tau", "tau"))
        if isinstance(ens.get("reorder"), dict) else None,
        "reorder_trials": _trials(ens.get("reorder")),
    }
