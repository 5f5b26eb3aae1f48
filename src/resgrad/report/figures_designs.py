"""The designs section's figures as SVG text (matplotlib object API, as report/figures.py).

Depth profiles at initialisation (per-layer weight-gradient norm, the Signal Propagation Plot's
variance and squared mean, the token cosine) at the deepest depth measured, one line per design,
and the smoothed training loss per design. Each returns one SVG document or None.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib
import numpy as np

from resgrad.results.designs import DesignInit, DesignRun
from resgrad.verdicts.designs import layer_norms

from .figures import STYLE, make_figure, positive, to_svg

__all__ = ["profiles", "spp", "token_cosine", "loss_curves"]

_CMAP = matplotlib.colormaps["tab20"]


def _colors(names: Sequence[str]) -> dict[str, tuple]:
    return {n: _CMAP(i % 20) for i, n in enumerate(names)}


def _deepest(rows: Sequence[DesignInit], family: str) -> list[DesignInit]:
    rows = [r for r in rows if r.family == family]
    if not rows:
        return []
    deepest: dict[str, DesignInit] = {}
    for r in rows:
        if r.design not in deepest or r.depth > deepest[r.design].depth:
            deepest[r.design] = r
    return list(deepest.values())


def profiles(rows: Sequence[DesignInit], titles: dict[str, str]) -> str | None:
    """Per-layer (Transformer) or per-unit (CNN) weight-gradient norm at initialisation, deepest depth, log y."""
    panels = [(f, _deepest(rows, f)) for f in ("transformer", "cnn")]
    panels = [(f, rs) for f, rs in panels if rs]
    if not panels:
        return None
    fig, axes = make_figure(5.2 * len(panels), 3.6, ncols=len(panels))
    with matplotlib.rc_context(STYLE):
        for ax, (fam, rs) in zip(axes[0], panels, strict=True):
            col = _colors([r.design for r in rs])
            for r in rs:
                y = positive(layer_norms(r))
                if np.isfinite(y).any():
                    ax.plot(np.arange(len(y)), y, color=col[r.design], lw=1.3, label=titles.get(r.design, r.design))
            ax.set_yscale("log")
            ax.set_title(f"{'Transformers' if fam == 'transformer' else 'CNNs'}, {max(r.depth for r in rs)} layers")
            ax.set_xlabel("layer (0 = input side)" if fam == "transformer" else "block (0 = input side)")
            ax.legend(loc="best", frameon=False, fontsize=6, ncol=2)
        axes[0][0].set_ylabel("‖∂L/∂W‖ at initialisation (log)")
    return to_svg(fig)


def spp(rows: Sequence[DesignInit], titles: dict[str, str]) -> str | None:
    """Signal Propagation Plots (Brock et al. 2021 Fig. 1): per unit, the average channel variance (solid)
    and squared mean (dotted) at the deepest depth; one panel per family."""
    panels = [(f, _deepest(rows, f)) for f in ("transformer", "cnn")]
    panels = [(f, rs) for f, rs in panels if rs]
    if not panels:
        return None
    fig, axes = make_figure(5.2 * len(panels), 3.6, ncols=len(panels))
    with matplotlib.rc_context(STYLE):
        for ax, (fam, rs) in zip(axes[0], panels, strict=True):
            col = _colors([r.design for r in rs])
            for r in rs:
                v, m = positive(r.variance), positive(r.sq_mean)
                ax.plot(np.arange(len(v)), v, color=col[r.design], lw=1.3, label=titles.get(r.design, r.design))
                ax.plot(np.arange(len(m)), m, color=col[r.design], lw=0.9, ls=":")
            ax.set_yscale("log")
            ax.set_title(f"{'Transformers' if fam == 'transformer' else 'CNNs'}, {max(r.depth for r in rs)} layers")
            ax.set_xlabel("unit (0 = input side)")
            ax.legend(loc="best", frameon=False, fontsize=6, ncol=2)
        axes[0][0].set_ylabel("channel variance (solid), squared mean (dotted)")
    return to_svg(fig)


def token_cosine(rows: Sequence[DesignInit], titles: dict[str, str]) -> str | None:
    """Mean pairwise token cosine entering unit 0 and after every unit, deepest depth (Noci et al. 2022)."""
    rs = [r for r in _deepest(rows, "transformer") if any(v is not None for v in r.token_cosine)]
    if not rs:
        return None
    fig, axes = make_figure(6.2, 3.6)
    ax = axes[0][0]
    col = _colors([r.design for r in rs])
    with matplotlib.rc_context(STYLE):
        for r in rs:
            y = np.array([np.nan if v is None else v for v in r.token_cosine], dtype=float)
            ax.plot(np.arange(len(y)), y, color=col[r.design], lw=1.3, label=titles.get(r.design, r.design))
        ax.set_ylim(-0.05, 1.05)
        ax.set_xlabel("after unit (0 = the embedding)")
        ax.set_ylabel("mean token cosine")
        ax.set_title(f"{max(r.depth for r in rs)} layers at initialisation")
        ax.legend(loc="best", frameon=False, fontsize=6, ncol=2)
    return to_svg(fig)


def loss_curves(runs: Sequence[DesignRun], titles: dict[str, str]) -> str | None:
    """The smoothed training loss of the LM designs (seed mean), one panel per trained depth."""
    lm = [r for r in runs if r.family == "transformer" and r.loss_trace]
    depths = sorted({r.depth for r in lm})
    if not depths:
        return None
    fig, axes = make_figure(5.2 * len(depths), 3.6, ncols=len(depths))
    names = list(dict.fromkeys(r.design for r in lm))
    col = _colors(names)
    with matplotlib.rc_context(STYLE):
        for ax, depth in zip(axes[0], depths, strict=True):
            for n in names:
                rs = [r for r in lm if r.design == n and r.depth == depth]
                if not rs:
                    continue
                k = min(len(r.loss_trace) for r in rs)
                y = np.nanmean(np.array([[np.nan if v is None else v for v in r.loss_trace[:k]] for r in rs],
                                        dtype=float), axis=0) if k else np.array([])
                steps = rs[0].steps
                x = np.linspace(steps / max(k, 1), steps, k) if k else np.array([])
                ax.plot(x, y, color=col[n], lw=1.2, label=titles.get(n, n))
            ax.set_title(f"{depth} layer{'s' if depth != 1 else ''}")
            ax.set_xlabel("step")
            ax.legend(loc="best", frameon=False, fontsize=6, ncol=2)
        axes[0][0].set_ylabel("training loss (nats/char, smoothed)")
    return to_svg(fig)
