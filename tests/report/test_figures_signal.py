"""The signal figures: SVG documents from rows shaped like experiments/signal.py's results,
None without rows, and no torch in the module (report/ reads results only)."""

from __future__ import annotations

import ast
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from resgrad.report.figures_signal import shattering_figure, spectrum_figure

SRC = Path(__file__).resolve().parents[2] / "src" / "resgrad" / "report" / "figures_signal.py"
DEPTHS = (2, 4, 8, 16, 32, 64)
# Neighbour correlations and median singular values as measured on MNIST-1D (seeds 0, 1).
NEIGHBOR = {("plain", "none"): (0.992, 0.981, 0.964, 0.943, 0.899, 0.850),
            ("residual", "none"): (0.993, 0.990, 0.984, 0.971, 0.957, 0.855),
            ("plain", "batch"): (0.987, 0.973, 0.905, 0.599, 0.0255, None),  # None: a non-finite mean
            ("residual", "batch"): (0.994, 0.991, 0.987, 0.983, 0.972, 0.966)}
MEDIAN = {("plain", "none"): (1.1, 0.89, 0.62, 0.19, 0.051, 0.0011),
          ("residual", "none"): (2.3, 4.1, 13.9, 103, 9.9e3, 6.5e7),
          ("plain", "batch"): (1.15, 1.5, 2.2, 5.9, 22, 594),
          ("residual", "batch"): (1.01, 1.04, 1.07, 1.07, 1.16, 1.21)}
EDGES = list(np.linspace(-8, 11, 39))


def _rows(family: str = "mlp") -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    shattering, spectrum, fits = [], [], []
    for (arch, norm), ns in NEIGHBOR.items():
        head = {"family": family, "arch": arch, "norm": norm, "act": "relu", "init": "he", "seeds": [0, 1]}
        for d, n, m in zip(DEPTHS, ns, MEDIAN[(arch, norm)], strict=True):
            shattering.append({**head, "depth": d, "layers": d + 2, "neighbor": n, "neighbor_seeds": [n, n],
                               "autocorrelation": [1.0, n], "points": 128})
            hist = np.exp(-0.5 * ((np.array(EDGES[:-1]) - np.log10(m)) / 0.8) ** 2)
            spectrum.append({**head, "depth": d, "layers": d + 2, "examples": 16, "sigma_max": 3 * m,
                             "sigma_min": m / 3, "condition": 9.0, "log10_mean": float(np.log10(m)),
                             "q10": m / 2, "median": m, "q90": 2 * m, "hist_edges": EDGES,
                             "hist": list(hist / hist.sum())})
        fits.append({"family": family, "arch": arch, "norm": norm, "depths": list(DEPTHS), "neighbor": list(ns),
                     "log2_slope": -0.01, "power": -0.5 if arch == "residual" else None})
    return shattering, spectrum, fits


def _is_svg(s: str | None) -> None:
    assert isinstance(s, str) and "<svg" in s and len(s) > 5000
    assert ET.fromstring(s).tag.endswith("svg")  # a well-formed document


def test_shattering_figure_is_an_svg_document():
    shattering, _, fits = _rows()
    _is_svg(shattering_figure(shattering, fits))
    _is_svg(shattering_figure(shattering, []))  # fits are optional (legend without powers)
    assert shattering_figure(shattering, fits) == shattering_figure(shattering, fits)  # same bytes


def test_spectrum_figure_is_an_svg_document():
    _, spectrum, _ = _rows()
    _is_svg(spectrum_figure(spectrum))


def test_two_families_and_partial_grids():
    s1, p1, f1 = _rows("mlp")
    s2, p2, f2 = _rows("he2015")
    _is_svg(shattering_figure(s1 + s2, f1 + f2))
    _is_svg(spectrum_figure(p1 + p2))
    only_residual = [r for r in s1 if r["arch"] == "residual"]  # no plain series: no 2^-L anchor
    _is_svg(shattering_figure(only_residual, f1))
    _is_svg(spectrum_figure([r for r in p1 if r["depth"] == 64]))  # one depth


def test_no_rows_no_figure():
    assert shattering_figure([], []) is None
    assert spectrum_figure([]) is None


@pytest.mark.parametrize("banned", ["torch", "resgrad.experiments", "resgrad.probes", "resgrad.train", "resgrad.paths"])
def test_module_imports_no_torch_and_no_measuring_package(banned):
    tree = ast.parse(SRC.read_text(), filename=str(SRC))
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names.append("resgrad." + (node.module or "") if node.level >= 2 else ("." * node.level) + (node.module or ""))
    assert names, "the ast walk found no imports at all"
    assert not any(n == banned or n.startswith(banned + ".") for n in names), names


def test_non_positive_values_on_a_log_axis_are_marked_not_dropped():
    # Issue 23: a correlation of -0.0345 at 32 blocks vanished silently from the log axis.
    from matplotlib.lines import Line2D

    from resgrad.report import figures as F

    fig, axes = F.make_figure(4, 3)
    ax = axes[0][0]
    raw = [0.975, 0.812, -0.0345]
    ax.plot([2, 8, 32], F.positive(raw))
    F.mark_nonpositive(ax, [2, 8, 32], raw, "#c0392b")
    ax.set_yscale("log")
    F.finish_log_axes(fig)
    lo, _ = ax.get_ylim()
    marks = [ln for ln in ax.get_lines() if ln.get_marker() == "v"]
    assert len(marks) == 1 and isinstance(marks[0], Line2D)
    assert list(marks[0].get_xdata()) == [32] and marks[0].get_ydata()[0] == pytest.approx(lo)
    assert any("below the log axis" in t.get_text() and "-0.0345" in t.get_text() for t in ax.texts)


def test_shattering_figure_draws_the_negative_correlation(monkeypatch):
    from resgrad.report import figures as F
    from resgrad.report import figures_signal as FS

    seen = []
    monkeypatch.setattr(FS, "to_svg", lambda fig: (F.finish_log_axes(fig), seen.append(fig))[0] or "<svg/>")
    shattering, _, fits = _rows()
    for r in shattering:
        if r["arch"] == "plain" and r["norm"] == "batch" and r["depth"] == max(x["depth"] for x in shattering):
            r["neighbor"] = -0.03
    FS.shattering_figure(shattering, fits)
    ax = seen[0].axes[0]
    assert [ln for ln in ax.get_lines() if ln.get_marker() == "v"]


def test_every_log_axis_gets_readable_ticks():
    # Issue 23: the Transformer growth and stream figures showed a single "10^0" on their log axes.
    from resgrad.report import figures as F

    for lo, hi in ((0.7, 1.45), (0.3, 2.2), (0.05, 3.0)):
        fig, axes = F.make_figure(4, 3)
        ax = axes[0][0]
        ax.plot([1, 2], [lo, hi])
        ax.set_yscale("log")
        F.finish_log_axes(fig)
        ylo, yhi = ax.get_ylim()
        ticks = [t for t in ax.get_yticks() if ylo <= t <= yhi]
        assert len(ticks) >= 3, (lo, hi, ticks)
        labels = [ax.yaxis.get_major_formatter()(t) for t in ticks]
        assert all(labels) and "1" in labels
