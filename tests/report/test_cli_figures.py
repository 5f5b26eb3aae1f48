"""The figures the CLI writes (report/cli_figures.py): drawn from typed results, saved atomically, closed."""

from __future__ import annotations

import dataclasses
import math
import os
import sys

import pytest

from resgrad.report.cli_figures import diagnose_figure, flow_figures, lesion_figure, paths_figure, save_figure
from resgrad.results.diagnose import DiagnoseResult, LayerRow

PNG = b"\x89PNG\r\n\x1a\n"


def _diagnose(rms: list[float | None]) -> DiagnoseResult:
    layers = [LayerRow(name=f"layer{i}", block=None, grad_norm=v, grad_rms=v, numel=10, nonfinite=0,
                       param_grad_norm=v, weight_norm=1.0, params=10,
                       flags=["vanishing"] if v is not None and v < 1e-6 else []) for i, v in enumerate(rms)]
    return DiagnoseResult(spec="resmlp-4x16", kind="registry", model="ResMLP", parameters=100, input_shape=[1, 40],
                          num_classes=10, data="random", batch_size=8, steps=1, seed=0, losses=[2.3],
                          thresholds={"decades": 2.0}, layers=layers, blocks=None, records=[], environment={})


def _written(path) -> None:
    data = path.read_bytes()
    assert data, path
    if path.suffix == ".png":
        assert data.startswith(PNG) and len(data) > 5_000
    else:
        assert b"<svg" in data[:2000]
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []  # no temp file left


def test_paths_and_lesion_figures_from_a_real_ensemble(study, tmp_path):
    _written(save_figure(paths_figure(study.ensemble), tmp_path / "paths.png"))
    _written(save_figure(lesion_figure(study.ensemble), tmp_path / "lesion.svg"))
    with pytest.raises(ValueError, match="paths measured"):
        paths_figure(dataclasses.replace(study.ensemble, exact=None))


def test_flow_figures_from_a_real_flow_result(study, tmp_path):
    figs = flow_figures(study.flow)
    assert set(figs) == {"flow_ratio_vs_depth", "flow_profiles"}
    for stem, fig in figs.items():
        _written(save_figure(fig, tmp_path / f"{stem}.png", dpi=110, tight=True, close=False))
        _written(save_figure(fig, tmp_path / f"{stem}.svg", dpi=None, tight=True))


def test_diagnose_figure_of_a_version_1_result(tmp_path):
    # No sensitivity (a version-1 file): the RMS profile and the band around the median, as before.
    rms = [1.0, 0.1, 1e-9, None, 0.5]
    fig = diagnose_figure(_diagnose(rms))
    assert fig is not None
    lines = fig.axes[0].lines
    assert len(lines) == 4  # the profile, the flagged layers, the two threshold lines
    assert list(lines[0].get_xdata()) == [0, 1, 2, 4]
    assert list(lines[0].get_ydata()) == pytest.approx([0.0, -1.0, -9.0, math.log10(0.5)])
    assert list(lines[1].get_xdata()) == [2]  # the one flagged layer
    med = math.log10(0.5)  # median of the four finite log10 RMS (upper middle)
    assert [ln.get_ydata()[0] for ln in lines[2:]] == pytest.approx([med - 2.0, med + 2.0])
    _written(save_figure(fig, tmp_path / "diagnose.png", dpi=110, tight=True))
    assert diagnose_figure(_diagnose([None, 0.0])) is None  # nothing finite to draw


def test_diagnose_figure_without_a_trend_marks_the_rows_it_cannot_plot():
    # A version-2 result with one finite row: no line can be fitted (trend None); the zero row is marked.
    r = _diagnose([1e-3, 0.0])
    r.layers[0].sensitivity, r.layers[1].sensitivity = 0.25, 0.0
    r.layers[0].flags, r.layers[1].flags = [], ["zero"]
    ax = diagnose_figure(r).axes[0]
    assert list(_gid(ax, "sensitivity").get_ydata()) == pytest.approx([math.log10(0.25)])
    assert _gid(ax, "trend") is None and _gid(ax, "band-low") is None
    assert list(_gid(ax, "unplotted").get_xdata()) == [1]
    assert diagnose_figure(_diagnose([None])) is None


def _real_diagnose(tmp_path, name: str, threshold: float, **kw) -> DiagnoseResult:
    """``resgrad diagnose``'s experiment on a registry model, written to and read back from ``tmp_path``."""
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    from resgrad.data import DataBundle
    from resgrad.experiments.diagnose import DiagnoseConfig, run
    from resgrad.nets import registry
    from resgrad.results import load

    torch.manual_seed(0)
    model = registry.build(name, in_features=40, **kw)
    x = torch.randn(16, 40, generator=torch.Generator().manual_seed(1))
    y = torch.arange(16) % 10
    run(DiagnoseConfig(spec=name, batch_size=16, threshold=threshold), tmp_path, model=model,
        data=DataBundle("batch", x, y, x, y, 10), loss=lambda m, xb, yb: F.cross_entropy(m(xb), yb))
    r = load(tmp_path / "results.json")
    assert isinstance(r, DiagnoseResult) and r.trend is not None
    return r


def _lsq(ys: list[float]) -> tuple[float, float]:
    n = len(ys)
    mx, my = (n - 1) / 2, sum(ys) / n
    b = sum((k - mx) * (y - my) for k, y in enumerate(ys)) / sum((k - mx) ** 2 for k in range(n))
    return my - b * mx, b


def _gid(ax, gid: str):
    found = [a for a in ax.get_children() if a.get_gid() == gid]
    return found[0] if found else None


@pytest.mark.parametrize(("name", "kw", "threshold", "verdict"), [
    ("plainmlp-16x32", {"activation": "sigmoid"}, 2.0, "vanishing"),  # flags from the trend's output end
    ("plainmlp-16x64", {}, 0.1, "healthy"),  # a row above and a row below the band
])
def test_diagnose_figure_plots_what_the_flags_are_judged_on(tmp_path, name, kw, threshold, verdict):
    r = _real_diagnose(tmp_path, name, threshold, **kw)
    assert r.trend.verdict == verdict
    fig = diagnose_figure(r)
    assert fig is not None
    ax = fig.axes[0]
    rows = [(i, x) for i, x in enumerate(r.layers) if x.sensitivity and x.sensitivity > 0]
    sens = _gid(ax, "sensitivity")
    assert list(sens.get_xdata()) == [i for i, _ in rows]
    assert list(sens.get_ydata()) == pytest.approx([math.log10(x.sensitivity) for _, x in rows], abs=1e-12)
    # The trend line, fitted again here: least squares along the forward order, leaving out the rows
    # the threshold or more below the line and refitting.
    y = {i: math.log10(x.sensitivity) for i, x in rows}
    main = [i for i, _ in rows]
    while True:
        a, b = _lsq([y[i] for i in main])
        keep = [i for k, i in enumerate(main) if y[i] - (a + b * k) > -threshold]
        if len(keep) == len(main) or len(keep) < 2:
            break
        main = keep
    a, b = _lsq([y[i] for i in main])
    assert len(main) == r.trend.rows and b * (len(main) - 1) == pytest.approx(-r.trend.decades)
    trend = _gid(ax, "trend")
    line = dict(zip(trend.get_xdata(), trend.get_ydata(), strict=True))
    assert [line[i] for i in main] == pytest.approx([a + b * k for k in range(len(main))], abs=1e-9)
    lo, hi = _gid(ax, "band-low"), _gid(ax, "band-high")
    assert list(lo.get_xdata()) == list(hi.get_xdata()) == list(trend.get_xdata())
    assert list(lo.get_ydata()) == pytest.approx([v - threshold for v in trend.get_ydata()])
    assert list(hi.get_ydata()) == pytest.approx([v + threshold for v in trend.get_ydata()])
    end = _gid(ax, "output-end")
    if verdict == "vanishing":
        assert end.get_ydata()[0] == pytest.approx(a + b * (len(main) - 1) - threshold)
    else:
        assert end is None
    # The figure agrees with the flags: a row is marked vanishing (exploding) exactly where it lies
    # below (above) the band, or below the output-end line where the trend vanishes.
    marked = {}
    for flag in ("vanishing", "exploding"):
        art = _gid(ax, flag)
        marked[flag] = [] if art is None else list(art.get_xdata())
        assert marked[flag] == [i for i, x in rows if flag in x.flags]
        if art is not None:
            assert list(art.get_ydata()) == pytest.approx([y[i] for i in marked[flag]])
    floor = end.get_ydata()[0] if end is not None else -math.inf
    drawn_lo, drawn_hi = dict(zip(lo.get_xdata(), lo.get_ydata(), strict=True)), dict(
        zip(hi.get_xdata(), hi.get_ydata(), strict=True))
    for i, _x in rows:
        below = y[i] <= drawn_lo[i] + 1e-9 or y[i] <= floor + 1e-9
        above = y[i] >= drawn_hi[i] - 1e-9
        assert (i in marked["vanishing"]) == below and (i in marked["exploding"]) == (above and not below), i
    assert marked["vanishing"] and (marked["exploding"] or verdict == "vanishing")
    (tmp_path / "fig").mkdir()  # apart from the run's own files (its lock), which _written would count
    _written(save_figure(fig, tmp_path / "fig" / "diagnose.png", dpi=110, tight=True))


def test_save_figure_is_atomic_and_closes(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = tmp_path / "f.png"
    out.write_bytes(b"old")

    def fail(*a, **k):
        raise OSError("disk full")

    fig = plt.figure()
    fig.add_subplot().plot([0, 1])
    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        save_figure(fig, out)
    assert out.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["f.png"]
    assert fig.number not in plt.get_fignums()  # closed even when the write failed
    monkeypatch.undo()
    fig = plt.figure()
    fig.add_subplot().plot([0, 1])
    assert save_figure(fig, out) == out and out.read_bytes().startswith(PNG)
    assert fig.number not in plt.get_fignums()


def test_drawing_needs_no_pyplot(study, tmp_path):
    # The report's figures are built with the object API: no global figure state.
    was = "matplotlib.pyplot" in sys.modules
    figs = flow_figures(study.flow)
    if not was:
        assert "matplotlib.pyplot" not in sys.modules
    for fig in figs.values():
        save_figure(fig, tmp_path / "x.png")
