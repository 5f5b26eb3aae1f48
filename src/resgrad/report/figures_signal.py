"""Figures of the signal measurement: shattering (Balduzzi et al. 2017) and the Jacobian
spectrum (Pennington et al. 2017), from the rows of ``experiments/signal.py``'s results.

Same conventions as ``figures.py``: plain red, residual blue; with BN solid, without
normalisation dashed; the papers' reference curves grey. Torch-free, like all of report/.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import matplotlib
import numpy as np

from .figures import PLAIN, REF, RESIDUAL, STYLE, make_figure, mark_nonpositive, to_svg

__all__ = ["shattering_figure", "spectrum_figure"]


def positive(xs: Sequence[float | None]) -> np.ndarray:
    a = np.array([np.nan if x is None else x for x in xs], dtype=float)
    a[~(a > 0)] = np.nan  # log axes: non-positive and non-finite values become gaps
    return a


def _series(rows: list[dict[str, Any]]) -> list[tuple[str, str, list[dict[str, Any]]]]:
    """(arch, norm, rows sorted by depth) in a fixed order: plain first, BN first."""
    out = []
    for arch in ("plain", "residual"):
        for norm in sorted({r["norm"] for r in rows}, key=lambda s: (s != "batch", s)):
            s = sorted((r for r in rows if r["arch"] == arch and r["norm"] == norm), key=lambda r: r["depth"])
            if s:
                out.append((arch, norm, s))
    return out


def _style(arch: str, norm: str) -> dict[str, Any]:
    return {"color": PLAIN if arch == "plain" else RESIDUAL, "ls": "-" if norm == "batch" else "--",
            "marker": "o" if norm == "batch" else "s", "ms": 4,
            "label": f"{arch}, {'BN' if norm == 'batch' else 'no norm' if norm == 'none' else norm}"}


def _families(rows: list[dict[str, Any]]) -> list[str]:
    return sorted({r["family"] for r in rows}, key=lambda f: (f != "mlp", f))


def _depth_axis(ax: Any, depths: list[int]) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xticks(depths)
    ax.set_xticklabels([str(d) for d in depths])
    ax.set_xlabel("depth (blocks)")


def _title(family: str) -> str:
    return "MLP" if family == "mlp" else "He et al. 2015 nets" if family == "he2015" else family


# Balduzzi et al. 2017 (§3, Thm. 1; §4): plain ReLU nets ~2^-L, residual nets with BN ~1/sqrt(L),
# drawn through the first measured depth: (series they describe, curve(d, d0), name, line style).
_REFS = (("plain", lambda d, d0: 2.0 ** -(d - d0), "$2^{-L}$", ":"),
         ("residual", lambda d, d0: np.sqrt(d0 / d), "$1/\\sqrt{L}$", "-."))


def shattering_figure(rows: list[dict[str, Any]], fits: list[dict[str, Any]]) -> str | None:
    """Neighbour gradient correlation vs depth (log y), with Balduzzi et al.'s 2^-L and 1/sqrt(L).

    The reference curves start at the first depth's measured value of the plain (2^-L) and
    residual (1/sqrt(L)) series, BN preferred; the legend quotes each series' fitted power.
    """
    rows = [r for r in rows if r.get("depth")]
    if not rows:
        return None
    fams = _families(rows)
    fig, axes = make_figure(6.2 * len(fams), 3.8, ncols=len(fams), sharey=True)
    with matplotlib.rc_context(STYLE):
        for ax, fam in zip(axes[0], fams, strict=True):
            sel = [r for r in rows if r["family"] == fam]
            series = _series(sel)
            depths = sorted({r["depth"] for r in sel})
            lows = []
            for arch, norm, s in series:
                y = positive([r["neighbor"] for r in s])
                fit = next((f for f in fits if (f["family"], f["arch"], f["norm"]) == (fam, arch, norm)), None)
                st = _style(arch, norm)
                if fit and fit.get("power") is not None:
                    st["label"] += f" (L^{fit['power']:.2f})"
                ax.plot([r["depth"] for r in s], y, **st)
                mark_nonpositive(ax, [r["depth"] for r in s], [r["neighbor"] for r in s], st["color"])
                lows.extend(v for v in y if np.isfinite(v))
            d = np.geomspace(depths[0], depths[-1], 64)
            for arch, curve, name, ls in _REFS:
                anchor = _anchor(series, arch)
                if anchor is None:
                    continue
                d0, y0 = anchor
                ax.plot(d, y0 * curve(d, d0), color=REF, ls=ls, lw=1.0, label=f"{name} (Balduzzi et al. 2017)")
            ax.set_yscale("log")
            if lows:  # 2^-L leaves the axes quickly; keep the measured values in view
                ax.set_ylim(max(min(lows) / 3, 1e-6), 1.5)
            _depth_axis(ax, depths)
            ax.set_title(f"{_title(fam)}: correlation of gradients at neighbouring inputs")
            ax.legend(loc="lower left", frameon=False)
        axes[0][0].set_ylabel("mean lag-1 gradient correlation (log)")
    return to_svg(fig)


def _anchor(series: list[tuple[str, str, list[dict[str, Any]]]], arch: str) -> tuple[float, float] | None:
    for a, _norm, s in series:  # BN first (the order of _series)
        if a == arch:
            first = s[0]
            if first["neighbor"] is not None and math.isfinite(first["neighbor"]) and first["neighbor"] > 0:
                return float(first["depth"]), float(first["neighbor"])
    return None


def spectrum_figure(rows: list[dict[str, Any]]) -> str | None:
    """Left: median and q10-q90 band of the Jacobian's singular values vs depth (log y), with
    the line sigma = 1 (dynamical isometry); right: log10 sigma histograms at the deepest depth."""
    rows = [r for r in rows if r.get("depth")]
    if not rows:
        return None
    fams = _families(rows)
    fig, axes = make_figure(10, 3.6 * len(fams), ncols=2, nrows=len(fams))
    with matplotlib.rc_context(STYLE):
        for (ax, hx), fam in zip(axes, fams, strict=True):
            sel = [r for r in rows if r["family"] == fam]
            depths = sorted({r["depth"] for r in sel})
            deepest = depths[-1]
            for arch, norm, s in _series(sel):
                st = _style(arch, norm)
                x = [r["depth"] for r in s]
                ax.plot(x, positive([r["median"] for r in s]), **st)
                mark_nonpositive(ax, list(x), [r["median"] for r in s], st["color"])
                ax.fill_between(x, positive([r["q10"] for r in s]), positive([r["q90"] for r in s]),
                                color=st["color"], alpha=0.12 if norm == "batch" else 0.07, lw=0)
                r = next((r for r in s if r["depth"] == deepest), None)
                if r is not None and r.get("hist"):
                    hx.stairs(r["hist"], r["hist_edges"], color=st["color"], ls=st["ls"], lw=1.4, label=st["label"])
            ax.axhline(1.0, color=REF, lw=0.9, label="σ = 1: dynamical isometry (Pennington et al. 2017)")
            ax.set_yscale("log")
            _depth_axis(ax, depths)
            ax.set_ylabel("singular values of ∂logits/∂x (log)")
            ax.set_title(f"{_title(fam)}: median, band q10–q90")
            ax.legend(loc="best", frameon=False)
            hx.axvline(0.0, color=REF, lw=0.9)
            hx.set_xlabel("log10 σ")
            hx.set_ylabel("fraction of singular values")
            hx.set_title(f"{_title(fam)}: histogram at depth {deepest}")
            hx.legend(loc="best", frameon=False)
    return to_svg(fig)
