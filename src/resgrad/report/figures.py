"""Figures as SVG text, drawn with matplotlib's object API (no pyplot, no global state).

Each function takes typed records (or the rows ``_read`` maps them to) and returns one SVG
document as a string, or None when there is nothing to draw. Colours are fixed across the report: plain nets red,
residual nets blue; with BN solid, without normalisation dashed.
"""

from __future__ import annotations

import io
import math
import weakref
from collections.abc import Sequence
from typing import Any

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from resgrad.results.degradation import TrainedRun
from resgrad.results.flow import FlowThresholds

from ._read import FlowRow, pretty_model
from ._refs import PUBLISHED

__all__ = [
    "PLAIN", "RESIDUAL", "REF", "STYLE", "make_figure", "as_array", "positive", "mark_nonpositive",
    "finish_log_axes", "readable_log_ticks", "to_svg", "ratio_band", "panel_title",
    "flow_profiles", "flow_ratio", "degradation_curves", "degradation_grad",
    "ensemble_paths", "ensemble_lesion", "ensemble_deletion",
]

PLAIN = "#c0392b"
RESIDUAL = "#1f5fa8"
REF = "#555555"
STYLE = {"font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8,
          "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.3,
          "svg.hashsalt": "resgrad", "svg.fonttype": "path"}


# Values a log axis cannot show, per axes: (x, value, colour), drawn as a marked floor by finish_log_axes.
_BELOW: weakref.WeakKeyDictionary[Axes, list[tuple[float, float, str]]] = weakref.WeakKeyDictionary()


def mark_nonpositive(ax: Axes, xs: Sequence[float], values: Sequence[float | None], color: str) -> None:
    """Remember the finite values <= 0 of a series drawn on log axes ``ax`` (``positive`` left them as gaps):
    ``finish_log_axes`` draws them on the axis floor, marked, so that no measured point is dropped silently."""
    pts = [(float(x), float(v)) for x, v in zip(xs, values, strict=False)
           if v is not None and math.isfinite(v) and v <= 0]
    if pts:
        _BELOW.setdefault(ax, []).extend((x, v, color) for x, v in pts)


def _plain(v: float, _pos: Any = None) -> str:
    return f"{v:g}"


def readable_log_ticks(ax: Axes) -> None:
    """A log y axis spanning few decades gets ticks at 1, 2 and 5 (or every integer) per decade, written as
    plain numbers, so that its values can be read off (matplotlib's default leaves a single 10^0)."""
    lo, hi = ax.get_ylim()
    if not (lo > 0 and hi > lo) or not isinstance(ax.yaxis.get_major_locator(), LogLocator):
        return
    decades = math.log10(hi / lo)
    if decades >= 3:
        return
    subs = (1.0, 2.0, 5.0) if decades >= 1 else tuple(float(k) for k in range(1, 10))
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=subs))
    ax.yaxis.set_major_formatter(FuncFormatter(_plain))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_ylim(lo, hi)


def finish_log_axes(fig: Figure) -> None:
    """Every log y axis of ``fig``: readable ticks, and the values it cannot show (<= 0) drawn as open
    triangles on its floor, with a note saying so. Called by ``to_svg`` and ``save_figure``."""
    for ax in fig.axes:
        if ax.get_yscale() != "log":
            continue
        below = _BELOW.pop(ax, [])
        if below:
            lo, hi = ax.get_ylim()
            for x, _v, color in below:
                ax.plot([x], [lo], marker="v", ms=7, mfc="none", mec=color, mew=1.4, ls="none", clip_on=False,
                        zorder=5)
            ax.text(0.99, 0.01, "▽: value ≤ 0 (" + ", ".join(f"{v:.3g}" for _x, v, _c in below[:3])
                    + (" …" if len(below) > 3 else "") + "), below the log axis",
                    transform=ax.transAxes, ha="right", va="bottom", fontsize=7, color=REF)
            ax.set_ylim(lo, hi)
        readable_log_ticks(ax)


def to_svg(fig: Figure) -> str:
    """The figure as one standalone SVG document (no date stamp, stable ids)."""
    buf = io.StringIO()
    with matplotlib.rc_context(STYLE):
        finish_log_axes(fig)
        # No metadata block (date, creator, RDF links): smaller, and the same bytes for the same results.
        fig.savefig(buf, format="svg",
                    metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    return buf.getvalue()


def make_figure(w: float, h: float, ncols: int = 1, nrows: int = 1, **kw: Any) -> tuple[Figure, np.ndarray]:
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(w, h), layout="constrained")
        axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, axes


def as_array(xs: Sequence[float | None]) -> np.ndarray:
    return np.array([np.nan if x is None else x for x in xs], dtype=float)


def positive(xs: Sequence[float | None]) -> np.ndarray:
    """For log axes: non-finite and non-positive values become gaps."""
    a = as_array(xs)
    a[~(a > 0)] = np.nan
    return a


def _color(arch: str) -> str:
    return PLAIN if arch == "plain" else RESIDUAL


def _ls(norm: str) -> str:
    return "-" if norm == "batch" else "--" if norm == "none" else ":"


def _norm_title(norm: str) -> str:
    return "with BatchNorm" if norm == "batch" else "without normalisation" if norm == "none" else norm


def ratio_band(thresholds: FlowThresholds) -> tuple[float, float]:
    """The healthy band of the first/last ratio: flow.py's verdicts sit at +-``decades`` of fitted change."""
    return 10.0**-thresholds.decades, 10.0**thresholds.decades


# -- gradient flow ------------------------------------------------------------------------


_PRETTY = {"he2015": "He et al. 2015 nets", "mlp": "MLP", "relu": "ReLU", "he": "He", "xavier": "Xavier"}


def panel_title(family: str, act: str, init: str) -> str:
    """``He et al. 2015 nets, ReLU, He init``."""
    bits = [_PRETTY.get(family, family), _PRETTY.get(act, act), f"{_PRETTY.get(init, init)} init" if init else ""]
    return ", ".join(b for b in bits if b)


def _pick_depths(depths: list[int], k: int = 4) -> list[int]:
    if len(depths) <= k:
        return depths
    idx = np.unique(np.round(np.linspace(0, len(depths) - 1, k)).astype(int))
    return [depths[i] for i in idx]


def _depth_label(r: FlowRow) -> str:
    if r.get("family") == "mlp":
        return f"{r['arch']} MLP, {r['depth']} blocks"
    return f"{'plain' if r['arch'] == 'plain' else 'ResNet'}-{r.get('layers') or r['depth']}"


def flow_profiles(rows: list[FlowRow]) -> str | None:
    """Per-block gradient norm, input side left, on a log axis; one panel per normalisation."""
    rows = [r for r in rows if any(v is not None and v > 0 for v in r["profile"])]
    if not rows:
        return None
    norms = sorted({r["norm"] for r in rows}, key=lambda s: (s != "batch", s))
    depths = _pick_depths(sorted({r["depth"] for r in rows if r["depth"]}))
    fig, axes = make_figure(10, 3.6, ncols=len(norms), sharey=True)
    shades = np.linspace(0.45, 1.0, len(depths)) if depths else []
    with matplotlib.rc_context(STYLE):
        for ax, norm in zip(axes[0], norms, strict=False):
            for arch in ("plain", "residual"):
                for depth, alpha in zip(depths, shades, strict=False):
                    r = next((r for r in rows if r["arch"] == arch and r["norm"] == norm and r["depth"] == depth), None)
                    if r is None:
                        continue
                    y = positive(r["profile"])
                    ax.plot(np.arange(len(y)), y, color=_color(arch), alpha=float(alpha),
                            lw=1.0 + float(alpha), ls="-" if arch == "plain" else "--",
                            label=_depth_label(r))
                    mark_nonpositive(ax, list(range(len(y))), r["profile"], _color(arch))
            ax.set_yscale("log")
            ax.set_title(_norm_title(norm))
            ax.set_xlabel("block index (0 = input side)")
            ax.legend(ncols=2, loc="best", frameon=False)
        axes[0][0].set_ylabel("RMS of ∂L/∂x at each block's input (log)")
    return to_svg(fig)


def flow_ratio(rows: list[FlowRow], thresholds: FlowThresholds) -> str | None:
    """First/last gradient ratio vs depth, plain vs residual, with/without BN; one panel per
    activation and init present."""
    rows = [r for r in rows if r["depth"] and r["ratio"] is not None and r["ratio"] > 0]
    if not rows:
        return None
    combos = sorted({(r["family"], r["activation"], r["init"]) for r in rows})
    ncols = min(len(combos), 3)
    nrows = math.ceil(len(combos) / ncols)
    fig, axes = make_figure(10 if ncols > 1 else 6.2, 3.4 * nrows, ncols=ncols, nrows=nrows, sharey=True)
    lo, hi = ratio_band(thresholds)
    with matplotlib.rc_context(STYLE):
        for i, (fam, act, init) in enumerate(combos):
            ax = axes[i // ncols][i % ncols]
            sel = [r for r in rows if (r["family"], r["activation"], r["init"]) == (fam, act, init)]
            if lo and hi:
                ax.axhspan(lo, hi, color="#2e8b57", alpha=0.08, lw=0, label=f"±{math.log10(hi):g} decade{'' if math.log10(hi) == 1 else 's'} (verdict threshold)")
            for arch in ("plain", "residual"):
                for norm in sorted({r["norm"] for r in sel}, key=lambda s: (s != "batch", s)):
                    s = sorted([r for r in sel if r["arch"] == arch and r["norm"] == norm], key=lambda r: r["depth"])
                    if not s:
                        continue
                    x = np.array([r["depth"] for r in s], dtype=float)
                    y = positive([r["ratio"] for r in s])
                    ax.plot(x, y, color=_color(arch), ls=_ls(norm), marker="o" if norm == "batch" else "s", ms=4,
                            label=f"{'plain' if arch == 'plain' else 'residual'}, {'BN' if norm == 'batch' else 'no norm'}")
                    mark_nonpositive(ax, list(x), [r["ratio"] for r in s], _color(arch))
                    for xi, r in zip(x, s, strict=False):
                        seeds = [v for v in r["ratio_seeds"] if v is not None and v > 0]
                        if len(seeds) > 1:
                            ax.vlines(xi, min(seeds), max(seeds), color=_color(arch), alpha=0.5, lw=2)
            ax.axhline(1.0, color=REF, lw=0.8)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xticks(sorted({r["depth"] for r in sel}))
            ax.set_xticklabels([str(d) for d in sorted({r["depth"] for r in sel})])
            ax.set_xlabel("depth (blocks)")
            ax.set_title(panel_title(fam, act, init))
            if i == 0:  # the same lines in every panel: one legend
                ax.legend(loc="best", frameon=False)
        for j in range(len(combos), nrows * ncols):
            axes[j // ncols][j % ncols].set_visible(False)
        for r in range(nrows):
            axes[r][0].set_ylabel("gradient norm, first block / last block (log)")
    return to_svg(fig)


# -- degradation --------------------------------------------------------------------------


def _mean_curve(runs: list[TrainedRun], key: str) -> tuple[np.ndarray, np.ndarray]:
    by: dict[int, list[float]] = {}
    for r in runs:
        for h in r.history:
            v = h.get(key)
            if isinstance(v, (int, float)) and math.isfinite(v) and h.get("epoch") is not None:
                by.setdefault(int(h["epoch"]), []).append(float(v))
    ep = np.array(sorted(by), dtype=float)
    return ep, np.array([np.mean(by[int(e)]) for e in ep], dtype=float)


def degradation_curves(runs: list[TrainedRun]) -> str | None:
    """Train (solid) and test (dashed) error per epoch, plain vs residual, one panel per depth."""
    depths = sorted({r.depth for r in runs if r.history})
    if not depths:
        return None
    ncols = min(len(depths), 3)
    nrows = math.ceil(len(depths) / ncols)
    fig, axes = make_figure(10, 3.1 * nrows + 0.3, ncols=ncols, nrows=nrows, sharey=True)
    top = 0.0
    legend: tuple[list, list] | None = None
    with matplotlib.rc_context(STYLE):
        for i, d in enumerate(depths):
            ax = axes[i // ncols][i % ncols]
            for arch in ("plain", "residual"):
                sel = [r for r in runs if r.depth == d and r.arch == arch]
                if not sel:
                    continue
                for key, ls in (("train_error", "-"), ("test_error", "--")):
                    ep, y = _mean_curve(sel, key)
                    if len(ep):
                        ax.plot(ep, 100 * y, color=_color(arch), ls=ls, lw=1.6,
                                label=f"{arch} {key.split('_')[0]}")
            ax.set_title(f"plain-{d} vs ResNet-{d}" + (f" (mean of {len(sel)} seeds)" if len(sel) > 1 else ""))
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            if ax.get_lines() and not legend:
                legend = ax.get_legend_handles_labels()
            top = max(top, max((float(np.nanmax(ln.get_ydata())) for ln in ax.get_lines()), default=0.0))
        for j in range(len(depths), nrows * ncols):
            axes[j // ncols][j % ncols].set_visible(False)
        for r in range(nrows):
            axes[r][0].set_ylabel("error (%)")
        # Shared y from 0 to the highest curve of any panel (set last: sharey froze the first panel's range).
        axes[0][0].set_ylim(0, min(100.0, 1.08 * top) if top > 0 else 100.0)
        if legend:  # the same four lines in every panel: one legend below them
            fig.legend(*legend, loc="outside lower center", ncols=4, frameon=False)
    return to_svg(fig)


def degradation_grad(runs: list[TrainedRun]) -> str | None:
    """The first/last block gradient ratio during training (the gradient monitor, once per epoch)."""
    sel = [r for r in runs if r.grad]
    if not sel:
        return None
    fig, axes = make_figure(6.2, 3.4)
    ax = axes[0][0]
    depths = sorted({r.depth for r in sel})
    shades = dict(zip(depths, np.linspace(0.45, 1.0, len(depths)), strict=False))
    drawn = set()
    with matplotlib.rc_context(STYLE):
        for r in sorted(sel, key=lambda r: (r.arch, r.depth)):
            pts = [(g.epoch, g.ratio_first_last) for g in r.grad
                   if g.ratio_first_last is not None and g.ratio_first_last > 0]
            mark_nonpositive(ax, [g.epoch for g in r.grad], [g.ratio_first_last for g in r.grad], _color(r.arch))
            if not pts:
                continue
            key = (r.arch, r.depth)
            name = "plain" if r.arch == "plain" else "ResNet"
            ax.plot([p[0] for p in pts], [p[1] for p in pts], color=_color(r.arch),
                    alpha=float(shades.get(r.depth, 1.0)), lw=1.4, ls="-" if r.arch == "plain" else "--",
                    label=None if key in drawn else f"{name}-{r.depth}")
            drawn.add(key)
        ax.set_yscale("log")
        ax.axhline(1.0, color=REF, lw=0.8)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("gradient norm, first block / last block (log)")
        ax.set_title("gradient ratio during training")
        ax.legend(ncols=3, loc="upper center", bbox_to_anchor=(0.5, -0.18), frameon=False)
    return to_svg(fig)


# -- the ensemble view --------------------------------------------------------------------


def _shade(ax: Any, w: dict[str, Any] | None, color: str, label: str) -> None:
    if w:
        ax.axvspan(w["lo"] - 0.5, w["hi"] + 0.5, color=color, alpha=0.12, lw=0, label=label)


def ensemble_paths(v: dict[str, Any]) -> str | None:
    """Veit et al. Fig. 6 measured: path-length distribution, gradient per length, total per length."""
    n = v.get("n")
    if not n or not v.get("counts"):
        return None
    fig, axes = make_figure(10, 3.3, ncols=3)
    a, b, c = axes[0]
    k = np.arange(n + 1)
    counts = np.array(v["counts"], dtype=float)
    frac = counts / counts.sum()
    weff = v.get("eff_exact") or v.get("eff_sampled")
    with matplotlib.rc_context(STYLE):
        a.bar(k, 100 * frac, color="#888888", width=0.9, label=f"Binomial({n}, 1/2)")
        _shade(a, weff, "#2e8b57", "effective window (measured)")
        if n == PUBLISHED["veit_blocks"]:
            lo, hi = PUBLISHED["veit_window"]
            a.axvline(lo - 0.5, color=REF, ls=":", lw=1)
            a.axvline(hi + 0.5, color=REF, ls=":", lw=1, label=f"Veit et al. 2016: {lo}–{hi}")
        a.set_xlabel("path length k (blocks)")
        a.set_ylabel("share of paths (%)")
        a.set_title("(a) path lengths")
        a.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False)

        ks, mean, std = v["sampled_lengths"], positive(v["sampled_mean"]), as_array(v["sampled_std"])
        q10, q90 = positive(v.get("sampled_q10") or []), positive(v.get("sampled_q90") or [])
        if ks and len(mean) == len(ks):
            b.plot(ks, mean, color=RESIDUAL, marker="o", ms=3, lw=1.4, label="sampled: mean single path")
            mark_nonpositive(b, ks, v["sampled_mean"], RESIDUAL)
            if len(q10) == len(ks) and len(q90) == len(ks):
                b.fill_between(ks, q10, q90, color=RESIDUAL, alpha=0.15, lw=0, label="10–90% of sampled paths")
            elif len(std) == len(ks):
                low = np.where(mean - std > 0, mean - std, np.nan)
                b.fill_between(ks, low, mean + std, color=RESIDUAL, alpha=0.15, lw=0, label="± 1 std")
        ex = positive(v["exact_norms"])
        if len(ex):
            b.plot(np.arange(len(ex)), ex, color="#e67e22", lw=1.4, label="exact: ‖Σ paths of length k‖")
            mark_nonpositive(b, list(range(len(ex))), v["exact_norms"], "#e67e22")
        if v.get("plain_norm") and v["plain_norm"] > 0:
            b.plot([n], [v["plain_norm"]], marker="D", ms=6, color=PLAIN, ls="none",
                   label=f"plain twin (its one path, length {n})")
        b.set_yscale("log")
        b.set_xlabel("path length k (blocks)")
        b.set_ylabel("gradient norm at first block (log)")
        b.set_title("(b) gradient per length")
        b.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False)

        tot = positive(v["sampled_total"])
        if ks and len(tot) == len(ks) and np.nansum(tot) > 0:
            c.plot(ks, 100 * tot / np.nansum(tot), color=RESIDUAL, marker="o", ms=3, lw=1.4,
                   label="sampled: count × mean")
        if len(ex) and np.nansum(ex) > 0:
            c.plot(np.arange(len(ex)), 100 * ex / np.nansum(ex), color="#e67e22", lw=1.4, label="exact")
        _shade(c, v.get("eff_exact"), "#e67e22", "window (exact)")
        _shade(c, v.get("eff_sampled"), RESIDUAL, "window (sampled)")
        c.set_xlabel("path length k (blocks)")
        c.set_ylabel("share of total gradient magnitude (%)")
        c.set_title("(c) total per length")
        c.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False, ncols=2)
        for ax in (a, b, c):
            ax.set_xlim(-1, n + 1)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return to_svg(fig)


def ensemble_lesion(v: dict[str, Any], classes: int | None = 10) -> str | None:
    """Test error after deleting each single block, residual vs plain twin (Veit et al. §4)."""
    lr, lp = v.get("lesion_res"), v.get("lesion_plain")
    if not (lr and lr["blocks"]) and not (lp and lp["blocks"]):
        return None
    fig, axes = make_figure(10, 3.2)
    ax = axes[0][0]
    with matplotlib.rc_context(STYLE):
        for les, arch in ((lp, "plain"), (lr, "residual")):
            if not les or not les["blocks"]:
                continue
            name = pretty_model(les["model"]) if les["model"] else arch
            x = [b["block"] for b in les["blocks"]]
            y = 100 * as_array([b["error"] for b in les["blocks"]])
            ax.plot(x, y, color=_color(arch), marker="o", ms=3, lw=1, label=f"{name}: one block deleted")
            if les["baseline"] is not None:
                ax.axhline(100 * les["baseline"], color=_color(arch), ls=":", lw=1, label=f"{name}: nothing deleted")
        ds = sorted({b["block"] for les in (lr, lp) if les for b in les["blocks"] if b["downsample"]})
        for i, d in enumerate(ds):
            ax.axvline(d, color=REF, lw=0.8, ls="--", label="downsampling block" if i == 0 else None)
        if classes:
            ax.axhline(100 * (1 - 1 / classes), color=REF, lw=0.8, label=f"chance ({classes} classes)")
        ax.set_xlabel("deleted block (0 = input side)")
        ax.set_ylabel("test error (%)")
        ax.set_ylim(0, 100)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return to_svg(fig)


def ensemble_deletion(v: dict[str, Any], classes: int | None = 10) -> str | None:
    """Error vs number of deleted blocks (Veit et al. §4) and vs Kendall τ of a reordering (§4)."""
    dr, dp, ro = v.get("del_res"), v.get("del_plain"), v.get("reorder")
    if not (dr or dp or ro):
        return None
    fig, axes = make_figure(10, 3.3, ncols=2)
    a, b = axes[0]
    with matplotlib.rc_context(STYLE):
        for cur, arch, name in ((dp, "plain", v.get("plain_model")), (dr, "residual", v.get("model"))):
            if not cur:
                continue
            x, m, s = as_array(cur["x"]), 100 * as_array(cur["mean"]), 100 * as_array(cur["std"])
            a.plot(x, m, color=_color(arch), marker="o", ms=3, lw=1.4,
                   label=pretty_model(name) if name else arch)
            if np.isfinite(s).any():
                a.fill_between(x, m - s, m + s, color=_color(arch), alpha=0.15, lw=0)
        if v.get("n") and v["n"] >= 10:
            a.plot([10], [100 * PUBLISHED["veit_delete10"]], marker="*", ms=11, color=REF, ls="none",
                   label="Veit et al. 2016 §4 (CIFAR-10, 54 blocks)")
        if classes:
            a.axhline(100 * (1 - 1 / classes), color=REF, lw=0.8, ls=":", label="chance")
        a.set_xlabel("blocks deleted k")
        a.set_ylabel("test error (%)")
        a.set_ylim(0, 100)
        a.set_title("deleting k random blocks")
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
        a.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False, ncols=2)
        if ro:
            trials = v.get("reorder_trials") or []
            if trials:
                b.scatter([t for t, _ in trials], [100 * e for _, e in trials], s=16, color=RESIDUAL, alpha=0.5,
                          lw=0, label=f"{pretty_model(v.get('model'))}: single trials")
            for cur, arch, name in ((v.get("reorder_plain"), "plain", v.get("plain_model")),
                                    (ro, "residual", v.get("model"))):
                if not cur:
                    continue
                x, m = as_array(cur["x"]), 100 * as_array(cur["mean"])
                order = np.argsort(-x)  # tau is not monotone in the number of swaps: draw along tau
                b.plot(x[order], m[order], color=_color(arch), marker="o", ms=3, lw=1.4,
                       label=(pretty_model(name) if name else arch) + " (mean per swap count)")
            b.invert_xaxis()
            b.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False)
        else:
            b.text(0.5, 0.5, "no reordering measured", ha="center", va="center", transform=b.transAxes)
        b.set_xlabel("Kendall τ of the block order (1 = original)")
        b.set_ylabel("test error (%)")
        b.set_title("reordering blocks")
    return to_svg(fig)

