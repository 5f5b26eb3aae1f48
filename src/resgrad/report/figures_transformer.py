"""The Transformer section's figures as SVG text (matplotlib object API, as report/figures.py).

Each function takes the typed records of ``results/transformer.py`` and returns one SVG
document, or None when there is nothing to draw. The twins keep one colour each across the
section: pre-LN blue (the residual colour of the rest of the report), post-LN purple, no skip
red (the plain colour).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import matplotlib
import numpy as np
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from resgrad.results.transformer import LayerLesion, TransformerFlow, TransformerRun
from resgrad.verdicts import GROWTH_TOWARD_OUTPUT

from .figures import PLAIN, REF, RESIDUAL, STYLE, as_array, make_figure, mark_nonpositive, positive, to_svg

__all__ = ["KINDS", "NAMES", "COLORS", "shown_depths", "flow_layers", "flow_growth", "training_curves", "layer_lesions"]

KINDS = ("preln", "postln", "noskip")
NAMES = {"preln": "pre-LN", "postln": "post-LN", "noskip": "no skip"}
COLORS = {"preln": RESIDUAL, "postln": "#7b3fa0", "noskip": PLAIN}
_MARK = {"preln": "o", "postln": "s", "noskip": "^"}


def shown_depths(depths: Sequence[int]) -> list[int]:
    """The deepest depth and one in the middle (Xiong et al. Fig. 3 shows one net; two show the trend)."""
    ds = sorted(set(depths))
    if len(ds) <= 1:
        return ds
    return [ds[(len(ds) - 1) // 2], ds[-1]]


def flow_layers(flow: TransformerFlow) -> str | None:
    """Per-layer weight-gradient norm at initialisation vs layer index, one panel per shown depth, log y."""
    rows = [r for r in flow.rows if any(v is not None and v > 0 for v in r.layer_norms)]
    shown = shown_depths([r.depth for r in rows])
    if not shown:
        return None
    fig, axes = make_figure(10 if len(shown) > 1 else 6.2, 3.4, ncols=len(shown))
    with matplotlib.rc_context(STYLE):
        for ax, depth in zip(axes[0], shown, strict=True):
            for kind in KINDS:
                r = next((r for r in rows if r.kind == kind and r.depth == depth), None)
                if r is None:
                    continue
                y = positive(r.layer_norms)
                ax.plot(np.arange(len(y)), y, color=COLORS[kind], marker=_MARK[kind], ms=3 if len(y) <= 16 else 0,
                        lw=1.5, label=NAMES[kind])
                mark_nonpositive(ax, list(range(len(y))), r.layer_norms, COLORS[kind])
            ax.set_yscale("log")
            ax.set_title(f"{depth} layers")
            ax.set_xlabel("layer (0 = input side)")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.legend(loc="best", frameon=False)
        axes[0][0].set_ylabel("‖∂L/∂W‖ of the layer's weights (log)")
    return to_svg(fig)


def flow_growth(flow: TransformerFlow) -> str | None:
    """Left: last / first layer weight-gradient norm vs depth per twin (seeds as bars); right: the
    residual-stream gradient at the first unit / after the last."""
    rows = [r for r in flow.rows if r.depth]
    if not rows:
        return None
    fig, axes = make_figure(10, 3.4, ncols=2)
    a, b = axes[0]
    depths = sorted({r.depth for r in rows})
    g = GROWTH_TOWARD_OUTPUT
    with matplotlib.rc_context(STYLE):
        a.axhspan(1 / g, g, color="#2e8b57", alpha=0.08, lw=0, label=f"level (within {g:g}× either way)")
        for kind in KINDS:
            s = sorted((r for r in rows if r.kind == kind), key=lambda r: r.depth)
            if not s:
                continue
            x = np.array([r.depth for r in s], dtype=float)
            a.plot(x, positive([r.growth for r in s]), color=COLORS[kind], marker=_MARK[kind], ms=4, lw=1.5,
                   label=NAMES[kind])
            mark_nonpositive(a, list(x), [r.growth for r in s], COLORS[kind])
            for xi, r in zip(x, s, strict=True):
                seeds = [v for v in r.per_seed_growth if v is not None and v > 0]
                if len(seeds) > 1:
                    a.vlines(xi, min(seeds), max(seeds), color=COLORS[kind], alpha=0.5, lw=2)
            b.plot(x, positive([r.stream_ratio for r in s]), color=COLORS[kind], marker=_MARK[kind], ms=4, lw=1.5,
                   label=NAMES[kind])
            mark_nonpositive(b, list(x), [r.stream_ratio for r in s], COLORS[kind])
        for ax in (a, b):
            ax.axhline(1.0, color=REF, lw=0.8)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xticks(depths)
            ax.set_xticklabels([str(d) for d in depths])
            ax.minorticks_off()
            ax.set_xlabel("depth (layers)")
        a.set_ylabel("last / first layer ‖∂L/∂W‖ (log)")
        a.set_title("weight gradient: > 1 grows toward the output")
        a.legend(loc="best", frameon=False)
        b.set_ylabel("‖∂L/∂h‖ first unit / after last (log)")
        b.set_title("residual-stream gradient: < 1 vanishes toward the input")
        b.legend(loc="best", frameon=False)
    return to_svg(fig)


def _curve(runs: Sequence[TransformerRun], key: str) -> tuple[np.ndarray, np.ndarray]:
    by: dict[int, list[float]] = {}
    for r in runs:
        for h in r.history:
            v, ep = h.get(key), h.get("epoch")
            if isinstance(v, (int, float)) and math.isfinite(v) and ep is not None:
                by.setdefault(int(ep), []).append(float(v))
    ep = np.array(sorted(by), dtype=float)
    return ep, np.array([np.mean(by[int(e)]) for e in ep], dtype=float)


def training_curves(runs: Sequence[TransformerRun], chance: float | None = None) -> str | None:
    """Test error per epoch, with (solid) and without (dashed) warm-up, one panel per twin (mean over seeds)."""
    kinds = [k for k in KINDS if any(r.kind == k and r.history for r in runs)]
    if not kinds:
        return None
    fig, axes = make_figure(10, 3.3, ncols=len(kinds), sharey=True)
    with matplotlib.rc_context(STYLE):
        for ax, kind in zip(axes[0], kinds, strict=True):
            n = 0
            for warm, ls in ((True, "-"), (False, "--")):
                sel = [r for r in runs if r.kind == kind and r.warmup == warm]
                n = max(n, len(sel))
                ep, y = _curve(sel, "test_error")
                if len(ep):
                    ax.plot(ep, 100 * y, color=COLORS[kind], ls=ls, lw=1.6, marker="o", ms=2.5,
                            label="with warm-up" if warm else "without warm-up")
                div = [r for r in sel if r.diverged]
                if div:
                    ax.plot([], [], " ", label=f"{len(div)} seed(s) diverged" + ("" if warm else ", no warm-up"))
            if chance is not None:
                ax.axhline(100 * chance, color=REF, lw=0.8, ls=":", label="chance")
            ax.set_title(NAMES[kind] + (f" (mean of {n} seeds)" if n > 1 else ""))
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.legend(loc="best", frameon=False)
        axes[0][0].set_ylabel("test error (%)")
        axes[0][0].set_ylim(0, 100)
    return to_svg(fig)


def layer_lesions(lesions: Mapping[str, LayerLesion]) -> str | None:
    """(a) error vs k consecutive layers removed (best start, mean over starts, Gromov's angular pick);
    (b) error after deleting one layer; (c) the middle layers reversed / shuffled vs intact."""
    kinds = [k for k in KINDS if k in lesions]
    if not kinds:
        return None
    fig, axes = make_figure(10, 3.9, ncols=3)
    a, b, c = axes[0]
    chance = next((lesions[k].chance for k in kinds if lesions[k].chance is not None), None)
    width = 0.8 / len(kinds)
    with matplotlib.rc_context(STYLE):
        for i, kind in enumerate(kinds):
            les, col = lesions[kind], COLORS[kind]
            cons = sorted(les.consecutive, key=lambda x: x.k)
            k = np.array([0] + [x.k for x in cons], dtype=float)
            a.plot(k, 100 * as_array([les.base] + [x.best for x in cons]), color=col, marker=_MARK[kind], ms=3.5,
                   lw=1.5, label=NAMES[kind])
            a.plot(k, 100 * as_array([les.base] + [x.mean for x in cons]), color=col, ls="--", lw=1)
            a.plot(k[1:], 100 * as_array([x.angular_error for x in cons]), color=col, marker="x", ms=7, ls="none")
            x = np.arange(les.layers) + (i - (len(kinds) - 1) / 2) * width
            b.bar(x, 100 * as_array(les.single), width=width, color=col, alpha=0.8, label=NAMES[kind])
            if les.base is not None:
                b.hlines(100 * les.base, -0.5, les.layers - 0.5, color=col, ls=":", lw=1)
            if les.reorder is not None:
                xs = np.arange(3) + (i - (len(kinds) - 1) / 2) * width
                ro = les.reorder
                c.bar(xs, 100 * as_array([les.base, ro.reversed, ro.shuffled_mean]), width=width, color=col, alpha=0.8,
                      label=NAMES[kind])
                c.scatter(np.full(len(ro.shuffled), xs[2]), 100 * as_array(ro.shuffled), s=10, color="k", zorder=3,
                          label="one shuffle" if i == 0 else None)
        for ax in (a, b, c):
            if chance is not None:
                ax.axhline(100 * chance, color=REF, lw=0.8, ls="-.", label="chance")
            ax.set_ylim(0, 100)
            ax.set_ylabel("test error (%)")
        a.set_xlabel("consecutive layers removed k")
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
        a.set_title("(a) k consecutive layers removed")
        handles, labels = a.get_legend_handles_labels()
        styles = [Line2D([], [], color=REF, lw=1.5), Line2D([], [], color=REF, ls="--", lw=1),
                  Line2D([], [], color=REF, marker="x", ms=7, ls="none")]
        a.legend(handles + styles, labels + ["best start", "mean over starts", "angular pick"], loc="upper center",
                 bbox_to_anchor=(0.5, -0.2), frameon=False, ncols=2)
        b.set_xlabel("layer deleted (0 = input side)")
        b.xaxis.set_major_locator(MaxNLocator(integer=True))
        b.set_title("(b) one layer removed (dotted: intact)")
        b.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False, ncols=2)
        c.set_title("(c) middle layers reordered")
        if any(lesions[k].reorder is not None for k in kinds):
            c.set_xticks(range(3))
            c.set_xticklabels(["intact", "reversed", "shuffled\n(mean)"])
            c.legend(loc="upper center", bbox_to_anchor=(0.5, -0.25), frameon=False, ncols=2)
        else:
            c.text(0.5, 0.5, "fewer than 4 layers:\nno middle to reorder", ha="center", va="center",
                   transform=c.transAxes)
            c.set_xticks([])
    return to_svg(fig)
