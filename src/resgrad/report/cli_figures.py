"""The figures the CLI writes beside a run's results.json (PNG/SVG files, not the HTML report).

Moved here from ``cli/paths.py`` (plot_paths), ``cli/lesion.py`` (plot_lesions),
``cli/diagnose.py`` (_figure) and ``experiments/flow.py`` (_figures), so the report draws
every figure from typed results and none of it imports torch. Each function
returns a matplotlib :class:`~matplotlib.figure.Figure` built with the object API (no
pyplot state); :func:`save_figure` writes it atomically and closes it.

How the callers saved them (keep it to get the same files):
``paths_figure``/``lesion_figure``: ``save_figure(fig, path)``;
``diagnose_figure``: ``save_figure(fig, path, dpi=110, tight=True)``;
``flow_figures``: per stem, ``save_figure(fig, out / f"{stem}.png", dpi=110, tight=True, close=False)``
then ``save_figure(fig, out / f"{stem}.svg", dpi=None, tight=True)``.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from resgrad.io import atomic_write
from resgrad.results.diagnose import DiagnoseResult
from resgrad.results.ensemble import EnsembleResult
from resgrad.results.flow import FlowResult

from .figures import finish_log_axes, mark_nonpositive

__all__ = ["paths_figure", "lesion_figure", "diagnose_figure", "flow_figures", "save_figure"]


def _nan(xs: list[float | None]) -> list[float]:
    """Non-finite values (JSON null) as NaN, which matplotlib leaves as gaps."""
    return [math.nan if x is None else x for x in xs]


def save_figure(fig: Figure, path: str | os.PathLike, *, dpi: float | None = 120, tight: bool = False,
                close: bool = True) -> Path:
    """Write ``fig`` to ``path`` atomically (format from the suffix) and close it.

    ``tight``: crop to the drawn area (``bbox_inches="tight"``); otherwise the layout is
    tightened first. ``dpi=None``: matplotlib's default (the figure's). ``close=False`` keeps
    the figure for a second format.
    """
    path = Path(path)
    finish_log_axes(fig)  # readable log ticks; values a log axis cannot show are marked, not dropped
    if not tight:
        fig.tight_layout()
    fmt = path.suffix.lstrip(".") or "png"
    try:
        atomic_write(path, lambda f: fig.savefig(f, format=fmt, dpi="figure" if dpi is None else dpi,
                                                 bbox_inches="tight" if tight else None), mode="wb")
    finally:
        if close:
            _close(fig)
    return path


def _close(fig: Figure) -> None:
    # A figure made by pyplot is registered in its figure manager: release it there (without
    # importing pyplot when nobody did). Object-API figures hold no global state; drop the artists.
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is not None:
        plt.close(fig)
    fig.clear()


def paths_figure(r: EnsembleResult) -> Figure:
    """Path counts, exact and sampled magnitude per length (Veit et al. 2016 Fig. 6), log scale."""
    if r.n is None or r.lengths is None or r.path_fraction is None or r.exact is None or r.sampled is None:
        raise ValueError("paths_figure needs an ensemble result with paths measured (exact and sampled); "
                         "this one has none: run `resgrad paths` on it")
    n, ks, counts = r.n, r.lengths, r.counts or r.exact.counts
    ex, sa = r.exact, r.sampled
    fig = Figure(figsize=(13, 3.6))
    ax = fig.subplots(1, 3)
    ax[0].bar(ks, r.path_fraction, color="0.6")
    ax[0].set(title=f"path lengths, n = {n}", xlabel="path length k", ylabel="share of 2^n paths")
    floor = 1e-3 * min((v for v in sa.mean if v and v > 0), default=1e-300)  # a log axis needs > 0
    lo = [max(v or 0.0, floor) for v in sa.q10]
    ax[1].fill_between(sa.lengths, lo, _nan(sa.q90), color="C1", alpha=0.2, label="sampled, 10-90%")
    ax[1].semilogy(sa.lengths, _nan(sa.mean), ".-", color="C1", ms=3, label="sampled mean (Veit Fig. 6a)")
    mark_nonpositive(ax[1], sa.lengths, sa.mean, "C1")
    per_path = [math.nan if e is None else e / c for e, c in zip(ex.example_norms, counts, strict=True)]
    ax[1].semilogy(ks, per_path, "--", color="C0", lw=1, label="exact ‖g_k‖ / count")
    ax[1].set(title="one path's gradient magnitude", xlabel="path length k")
    ax[1].legend(fontsize=8)
    ax[2].semilogy(ks, _nan(ex.example_norms), "o-", ms=3, label="exact ‖Σ paths‖ (per example)")
    ax[2].semilogy(sa.lengths, _nan(sa.total), ".-", ms=3, label="count × mean (Veit)")
    mark_nonpositive(ax[2], ks, ex.example_norms, "C0")
    mark_nonpositive(ax[2], sa.lengths, sa.total, "C1")
    eff = r.effective
    for w, c in ((eff.exact if eff else None, "C0"), (eff.sampled if eff else None, "C1")):
        if w:
            ax[2].axvspan(w.lo - 0.5, w.hi + 0.5, color=c, alpha=0.12)
    ax[2].set(title="total per length (shaded: effective paths)", xlabel="path length k")
    ax[2].legend(fontsize=8)
    return fig


def lesion_figure(r: EnsembleResult) -> Figure:
    """Single-block lesions, k random deletions and reordering (Veit et al. 2016 §4)."""
    fig = Figure(figsize=(13, 3.6))
    ax = fig.subplots(1, 3)
    lesion, deletion = r.lesion or {}, r.deletion or {}
    for key, c in (("residual", "C0"), ("plain", "C3")):
        les = lesion.get(key)
        if les:
            xs = [b.block for b in les.blocks]
            ax[0].plot(xs, [b.error for b in les.blocks], ".-", color=c, label=les.model)
            ax[0].axhline(les.baseline, color=c, ls=":", lw=1)
            for x in (b.block for b in les.blocks if b.downsample):
                ax[0].axvline(x, color="0.7", lw=0.8)
        d = deletion.get(key)
        if d:
            ax[1].errorbar(d.k, _nan(d.mean), yerr=_nan(d.std), fmt=".-", color=c, label=d.model)
    ax[0].set(title="one block deleted (grey: downsampling)", xlabel="block", ylabel="test error")
    ax[0].legend(fontsize=8)
    ax[1].set(title="k random blocks deleted", xlabel="k", ylabel="test error")
    ax[1].legend(fontsize=8)
    ro = r.reorder
    if ro:
        for d, c in ((ro, "C0"), (ro.plain, "C3")):
            if d:
                ax[2].errorbar(_nan(d.kendall_tau), _nan(d.mean), yerr=_nan(d.std), fmt=".-", color=c, label=d.model)
        ax[2].invert_xaxis()
        ax[2].legend(fontsize=8)
    ax[2].set(title="blocks reordered", xlabel="Kendall τ", ylabel="test error")
    return fig


def diagnose_figure(r: DiagnoseResult) -> Figure | None:
    """What ``resgrad diagnose`` flags on, in forward order; None if nothing finite is measured.

    A result with the trend (version 2): log10 ``‖∂L/∂h‖·‖h‖`` of each row, the fitted trend line,
    the ±threshold band around it and, where the trend itself vanishes (explodes), the threshold
    below (above) its output end; rows flagged vanishing/exploding marked. The line at each row is
    read back from the row (``log10 sensitivity - decades_from_trend``), so the figure shows the
    line the flags were judged against. An older result (version 1: no sensitivity) keeps its
    figure: log10 RMS of each layer's output gradient, flagged layers in red, and the ±threshold
    band around the median (``r.thresholds["decades"]``), which is what its flags were judged on.
    Artists carry a ``gid`` naming what they draw (``sensitivity``, ``trend``, ``band-low``, ...).
    """
    if any(x.sensitivity is not None for x in r.layers):
        return _diagnose_trend_figure(r)
    return _diagnose_median_figure(r)


_FLAGGED = {"vanishing": ("v", "C1"), "exploding": ("^", "C3")}


def _diagnose_trend_figure(r: DiagnoseResult) -> Figure | None:
    layers, t = r.layers, r.trend
    pts = [(i, math.log10(x.sensitivity), x) for i, x in enumerate(layers)
           if x.sensitivity is not None and math.isfinite(x.sensitivity) and x.sensitivity > 0]
    if not pts:
        return None
    fig, ax = _diagnose_axes(r, len(layers))
    xs = [i for i, _y, _x in pts]
    ax.plot(xs, [y for _i, y, _x in pts], "-o", ms=2.5, lw=0.8, color="C0", label="log10 ‖∂L/∂h‖·‖h‖",
            gid="sensitivity")
    on = [(i, y - x.decades_from_trend, x) for i, y, x in pts if x.decades_from_trend is not None]
    if t is not None and on:
        th = t.threshold
        line = [v for _i, v, _x in on]
        lx = [i for i, _v, _x in on]
        ax.plot(lx, line, "-", color="k", lw=1.0, gid="trend",
                label=f"trend: {t.verdict}, {t.decades:+.2f} decades output → input ({t.rows} rows fitted)")
        ax.plot(lx, [v - th for v in line], "--", color="grey", lw=0.7, gid="band-low",
                label=f"trend ± {th:g} decades")
        ax.plot(lx, [v + th for v in line], "--", color="grey", lw=0.7, gid="band-high")
        ax.fill_between(lx, [v - th for v in line], [v + th for v in line], color="0.5", alpha=0.08, lw=0)
        end = next((y - x.decades_from_output for _i, y, x in pts if x.decades_from_output is not None), None)
        if t.verdict in ("vanishing", "exploding") and end is not None:
            # The trend itself vanishes (explodes): rows that far below (above) its output end are flagged too.
            sign = -1 if t.verdict == "vanishing" else 1
            ax.axhline(end + sign * th, color=_FLAGGED[t.verdict][1], lw=0.7, ls=":", gid="output-end",
                       label=f"output end {'−' if sign < 0 else '+'} {th:g} decades")
    for flag, (marker, color) in _FLAGGED.items():
        hit = [(i, y) for i, y, x in pts if flag in x.flags]
        if hit:
            ax.plot([i for i, _y in hit], [y for _i, y in hit], marker, color=color, ms=5, ls="none",
                    label=f"flagged {flag} ({len(hit)})", gid=flag)
    finite = {i for i, _y, _x in pts}
    other = [i for i, x in enumerate(layers) if i not in finite and x.flags]
    if other:  # zero, non-finite or no gradient: no log to plot, marked on the axis floor
        ax.plot(other, [0.0] * len(other), "x", color="C3", ms=4, ls="none", clip_on=False,
                transform=ax.get_xaxis_transform(), gid="unplotted",
                label=f"zero / non-finite / no grad ({len(other)})")
    ax.set_ylabel("log10 ‖∂L/∂h‖·‖h‖")
    ax.legend(fontsize=7)
    return fig


def _diagnose_median_figure(r: DiagnoseResult) -> Figure | None:
    threshold = float(r.thresholds["decades"])
    layers = r.layers
    pts = [(i, math.log10(x.grad_rms), x) for i, x in enumerate(layers)
           if x.grad_rms and math.isfinite(x.grad_rms) and x.grad_rms > 0]
    if not pts:
        return None
    fig, ax = _diagnose_axes(r, len(layers))
    ax.plot([p[0] for p in pts], [p[1] for p in pts], "-o", ms=2.5, lw=0.8, label="activation gradient rms")
    bad = [p for p in pts if {"vanishing", "exploding", "non-finite"} & set(p[2].flags)]
    if bad:
        ax.plot([p[0] for p in bad], [p[1] for p in bad], "o", color="C3", ms=5, label="flagged")
    med = sorted(p[1] for p in pts)[len(pts) // 2]
    for d in (-threshold, threshold):
        ax.axhline(med + d, color="grey", lw=0.6, ls="--")
    ax.set_ylabel("log10 rms ∂L/∂output")
    ax.legend(fontsize=7)
    return fig


def _diagnose_axes(r: DiagnoseResult, n: int) -> tuple[Figure, Any]:
    fig = Figure(figsize=(max(6.0, min(16.0, n * 0.12)), 3.2))
    ax = fig.subplots()
    ax.set_xlabel("layer (forward order)")
    ax.set_title(f"resgrad diagnose {r.spec}", fontsize=9)
    return fig, ax


def flow_figures(r: FlowResult) -> dict[str, Figure]:
    """``flow_ratio_vs_depth`` (log10 first/last ratio vs depth) and ``flow_profiles`` (per-block
    profile at each family's largest depth): one panel per (norm, activation), one row per family."""
    groups, cfg = r.groups, r.config
    fams = [f for f in cfg["families"] if any(g.family == f for g in groups)]
    colors = {"he": "C0", "xavier": "C1"}
    styles = {"plain": "-", "residual": "--"}
    deep = {fam: max((g.depth for g in groups if g.family == fam), default=0) for fam in fams}

    def key(g: Any) -> tuple:
        return g.family, g.norm, g.act, g.init, g.arch

    def ratio_curve(ax: Any, k: tuple) -> None:
        gs = sorted((g for g in groups if key(g) == k), key=lambda g: g.depth)
        if gs:
            ax.plot([g.depth for g in gs], _nan([g.log10_ratio for g in gs]), styles[k[4]],
                    color=colors.get(k[3], "C2"), marker="o", ms=3, label=f"{k[4]}, {k[3]}")

    def ratio_panel(ax: Any, fam: str, norm: str, act: str) -> None:
        ax.axhline(0, color="grey", lw=0.6)
        ax.set_xscale("log", base=2)
        ax.set_title(f"{fam}: {act}, norm={norm}", fontsize=8)

    def profile_curve(ax: Any, k: tuple) -> None:
        g = next((g for g in groups if key(g) == k and g.depth == deep[k[0]]), None)
        if g:
            ax.plot(range(len(g.profile_log10_rms)), _nan(g.profile_log10_rms), styles[k[4]],
                    color=colors.get(k[3], "C2"), lw=1, label=f"{k[4]}, {k[3]}")

    def profile_panel(ax: Any, fam: str, norm: str, act: str) -> None:
        ax.set_title(f"{fam} {deep[fam]} blocks: {act}, norm={norm}", fontsize=8)

    return {
        "flow_ratio_vs_depth": _flow_grid(
            cfg, fams, ratio_curve, ratio_panel, "log10 ‖g_first‖/‖g_last‖", "blocks",
            "Gradient ratio first/last block vs depth (< 0: vanishing toward the input)", sharex=True),
        "flow_profiles": _flow_grid(
            cfg, fams, profile_curve, profile_panel, "log10 rms ∂L/∂x_l", "block l (0 = input side)",
            "Per-block gradient profile at the largest depth (mean over seeds)"),
    }


def _flow_grid(cfg: dict[str, Any], fams: list[str], curve: Callable[[Any, tuple], None],
               panel: Callable[[Any, str, str, str], None], ylabel: str, xlabel: str, title: str, *,
               sharex: bool = False) -> Figure:
    """The flow figures' grid: a row per family, a panel per (norm, activation), in each a ``curve``
    per (init, arch) (given the panel's axes and the groups' key ``(family, norm, act, init, arch)``),
    then ``panel`` (the axes, family, norm, activation) finishing it; labels on the outer panels."""
    panels = [(n, a) for n in cfg["norms"] for a in cfg["activations"]]
    nr, nc = len(fams), len(panels)
    fig = Figure(figsize=(2.6 * nc, 2.3 * nr))
    axes = fig.subplots(nr, nc, squeeze=False, sharex=sharex)
    for i, fam in enumerate(fams):
        for j, (norm, act) in enumerate(panels):
            ax = axes[i][j]
            for init in cfg["inits"]:
                for arch in cfg["archs"]:
                    curve(ax, (fam, norm, act, init, arch))
            panel(ax, fam, norm, act)
            if j == 0:
                ax.set_ylabel(ylabel, fontsize=7)
            if i == nr - 1:
                ax.set_xlabel(xlabel, fontsize=7)
            ax.tick_params(labelsize=6)
    axes[0][0].legend(fontsize=6)
    fig.suptitle(title, fontsize=9)
    return fig
