"""The figures the CLI writes (report/cli_figures.py): drawn from typed results, saved atomically, closed."""

from __future__ import annotations

import dataclasses
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


def test_diagnose_figure(tmp_path):
    fig = diagnose_figure(_diagnose([1.0, 0.1, 1e-9, None, 0.5]))
    assert fig is not None
    assert len(fig.axes[0].lines) == 4  # the profile, the flagged layers, the two threshold lines
    _written(save_figure(fig, tmp_path / "diagnose.png", dpi=110, tight=True))
    assert diagnose_figure(_diagnose([None, 0.0])) is None  # nothing finite to draw


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
