"""The pretrained-models section's figures as SVG text (matplotlib object API, as report/figures.py).

Each function takes one :class:`resgrad.results.pretrained.ModelReport` and returns an SVG
document, or None when there is nothing to draw: the depth profiles (gradients, branch gain,
cosine, hidden-state norm), the angular-distance heat map, the score against the fraction of
layers removed, and the gradient by path length.
"""

from __future__ import annotations

import matplotlib
import numpy as np
from matplotlib.ticker import MaxNLocator

from resgrad.results.pretrained import ModelReport
from resgrad.verdicts import NEAR_IDENTITY

from .figures import PLAIN, REF, RESIDUAL, STYLE, as_array, make_figure, positive, to_svg

__all__ = ["depth_profiles", "angular_map", "removal_curve", "path_lengths"]

PURPLE = "#7b3fa0"


def depth_profiles(m: ModelReport) -> str | None:
    """Four panels against unit / layer index: gradients, branch gain, cosine and skip share, hidden norm."""
    f = m.flow
    if not f.param_norms:
        return None
    fig, axes = make_figure(12, 3.2, ncols=4)
    units = np.arange(len(f.param_norms))
    with matplotlib.rc_context(STYLE):
        a, b, c, d = axes[0]
        a.plot(units, positive(f.param_norms), color=RESIDUAL, lw=1.4, marker="o", ms=2, label="‖∂L/∂W‖ per unit")
        a.plot(np.arange(len(f.stream_norms)), positive(f.stream_norms), color=PLAIN, lw=1.4,
               label="‖∂L/∂h‖ at the unit's input")
        a.set_yscale("log")
        a.set_title("gradients")
        a.legend(frameon=False)
        jac = as_array(f.jacobian)
        b.plot(units, jac, color=PURPLE, lw=1.4, marker="o", ms=2)
        b.fill_between(units, jac - as_array(f.jacobian_std), jac + as_array(f.jacobian_std), color=PURPLE, alpha=0.2)
        b.axhline(1.0, color=REF, ls=":", lw=1)
        b.set_yscale("log")
        b.set_title("branch gain ‖J_F u‖/‖u‖ (skip: 1)")
        c.plot(units, as_array(f.cosine), color=RESIDUAL, lw=1.4, marker="o", ms=2, label="cos(input, output)")
        c.plot(units, as_array(f.branch_share), color=PLAIN, lw=1.4, label="gradient share via branch")
        c.axhline(NEAR_IDENTITY, color=REF, ls=":", lw=1)
        c.set_ylim(-0.05, 1.05)
        c.set_title("unit vs identity")
        c.legend(frameon=False)
        for ax in (a, b, c):
            ax.set_xlabel("unit (even: attention, odd: MLP)")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        s = m.stream
        d.plot(np.arange(len(s.norms)), positive(s.norms), color=RESIDUAL, lw=1.4, marker="o", ms=2)
        d.set_yscale("log")
        d.set_title("hidden-state norm")
        d.set_xlabel("layer input (last: after the last layer)")
        d.xaxis.set_major_locator(MaxNLocator(integer=True))
    return to_svg(fig)


def angular_map(m: ModelReport) -> str | None:
    """Angular distance between layer l's input and layer m's (Gromov et al. 2024 Fig. 3's map)."""
    a = m.stream.angular
    if not a:
        return None
    arr = np.array([[np.nan if v is None else v for v in row] for row in a], dtype=float)
    fig, axes = make_figure(4.6, 3.8)
    with matplotlib.rc_context(STYLE):
        ax = axes[0][0]
        im = ax.imshow(arr, origin="lower", cmap="viridis", vmin=0, vmax=max(0.5, float(np.nanmax(arr))))
        fig.colorbar(im, ax=ax, label="angular distance (0: same direction)")
        ax.set_xlabel("layer m (input of)")
        ax.set_ylabel("layer l (input of)")
        ax.set_title(m.spec.split(":", 1)[-1])
    return to_svg(fig)


def removal_curve(m: ModelReport) -> str | None:
    """The primary score against the fraction of layers removed, per choice, and single-layer removals."""
    r = m.removal
    if r is None or not r.consecutive:
        return None
    key = r.primary
    fig, axes = make_figure(10, 3.3, ncols=2)
    with matplotlib.rc_context(STYLE):
        a, b = axes[0]
        xs = [0.0] + [c.fraction for c in r.consecutive]
        for choice, color, mark, name in (("oracle", REF, "o", "oracle (best start)"),
                                          ("angular", RESIDUAL, "x", "angular distance (Gromov)"),
                                          ("influence", PURPLE, "s", "Block Influence (ShortGPT)")):
            ys = [r.full.get(key)] + [getattr(c, choice).get(key) for c in r.consecutive]
            a.plot(xs, as_array(ys), color=color, marker=mark, ms=4, lw=1.3, label=name)
        if key == "perplexity":
            a.set_yscale("log")
        a.set_xlabel("fraction of layers removed (consecutive)")
        a.set_ylabel(key)
        a.legend(frameon=False)
        b.bar(np.arange(len(r.single)), as_array([s.get(key) for s in r.single]), color=RESIDUAL)
        b.axhline(r.full.get(key) or 0, color=REF, ls=":", lw=1)
        if key == "perplexity":
            b.set_yscale("log")
        b.set_xlabel("layer removed")
        b.set_ylabel(key)
        b.xaxis.set_major_locator(MaxNLocator(integer=True))
    return to_svg(fig)


def path_lengths(m: ModelReport) -> str | None:
    """The exact gradient norm per path length (and the sampled total), log axis, with the effective window."""
    p = m.paths
    if p is None:
        return None
    ex = p.exact
    fig, axes = make_figure(6.4, 3.3)
    with matplotlib.rc_context(STYLE):
        ax = axes[0][0]
        ax.plot(ex["lengths"], positive(ex["norms"]), color=RESIDUAL, lw=1.5, label="exact ‖g_k‖")
        if p.sampled is not None:
            ax.plot(p.sampled["lengths"], positive(p.sampled["total"]), color=PLAIN, lw=1.2, ls="--",
                    label="sampled: count_k × mean ‖path‖")
        eff = ex.get("effective") or {}
        if "lo" in eff:
            ax.axvspan(eff["lo"], eff["hi"], color=RESIDUAL, alpha=0.12, label=f"exact window ({eff['mass']:.0%})")
        ax.set_yscale("log")
        ax.set_xlabel(f"path length k (units through their branch, of {ex['n']})")
        ax.set_ylabel("gradient norm")
        ax.legend(frameon=False)
    return to_svg(fig)
