"""The sweep section: per cell, final errors with mean, std and a 95% interval over seeds and the
gradient ratio, computed from the runs; checked against scipy's t interval and plain arithmetic."""

from __future__ import annotations

import dataclasses
import math
import statistics

import pytest
import scipy.stats
from typer.testing import CliRunner

from resgrad import stats
from resgrad.cli import app
from resgrad.report import sweep as sweep_report
from resgrad.report._fmt import pct, sig
from resgrad.report.html import to_html
from resgrad.results import load
from resgrad.results.sweep import Stat

from .conftest import load_study

GRID = """
depths = [8]
seeds = [0, 1, 2]
datasets = ["synthetic"]
warmup = [[8, 1]]
[data_kwargs.synthetic]
shape = [1, 16]
n_train = 128
n_test = 64
seed = 3
[train]
epochs = 1
batch_size = 64
lr = 0.05
"""


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("sweep")
    (d / "grid.toml").write_text(GRID)
    res = CliRunner().invoke(app, ["sweep", str(d / "grid.toml"), "--out", str(d / "out"), "--device", "cpu",
                                   "--workers", "1"])
    assert res.exit_code == 0, res.stderr
    return d / "out"


def _t_interval(xs: list[float], level: float) -> tuple[float, float]:
    m, se = statistics.fmean(xs), statistics.stdev(xs) / math.sqrt(len(xs))
    return scipy.stats.t.interval(level, len(xs) - 1, loc=m, scale=se)


def test_cells_hold_mean_std_t_interval_and_geometric_gradient_ratio(sweep_dir):
    result = load(sweep_dir / "results.json")
    cells = sweep_report.cells(result)
    assert [(c["model"], c["arch"], c["depth"], c["seeds"]) for c in cells] == [
        ("plain8", "plain", 8, [0, 1, 2]), ("resnet8", "residual", 8, [0, 1, 2])]
    for c in cells:
        runs = [r for r in result.runs if r.model == c["model"]]
        for metric in ("train_error", "test_error"):
            xs = [getattr(r.final, metric) for r in runs]
            got = c[metric]
            assert got["mean"] == pytest.approx(statistics.fmean(xs), abs=1e-15)
            assert got["std"] == pytest.approx(statistics.stdev(xs), abs=1e-15)
            assert got["ci"] == pytest.approx(_t_interval(xs, 0.95), rel=1e-9)
        inits = [r.grad[0].ratio_first_last for r in runs]
        assert c["grad_ratio_init"] == pytest.approx(statistics.geometric_mean(inits), rel=1e-12)
        assert c["grad_ratio_final"] == pytest.approx(statistics.geometric_mean(
            [r.grad[-1].ratio_first_last for r in runs]), rel=1e-12)
        assert c["overrides"] == "warm-up 1 it at lr 0.01"


def test_report_of_a_sweep_folder_shows_the_computed_values(sweep_dir):
    res = CliRunner().invoke(app, ["report", str(sweep_dir)])
    assert res.exit_code == 0, res.stderr
    html = (sweep_dir / "report.html").read_text()
    for c in sweep_report.cells(load(sweep_dir / "results.json")):
        for metric in ("train_error", "test_error"):
            s = c[metric]
            assert f"{pct(s['mean'])} ± {pct(s['std'])}" in html
            lo, hi = stats.clip_interval(*s["ci"])  # an error rate's interval, cut to [0, 1]
            assert f"[{pct(lo)}, {pct(hi)}]" in html
        assert f"<td>{sig(c['grad_ratio_init'])}</td><td>{sig(c['grad_ratio_final'])}</td>" in html
    assert "95% Student-t interval" in html and "Sweep: plain vs residual" in html


def _with_test_stat(result, values):
    """``result`` with its first cell's stored test-error summary made from ``values`` (as the sweep does)."""
    c0 = result.cells[0]
    level = c0.metrics["test_error"].level
    stat = Stat.from_json(stats.seed_stat(values, level))
    c0 = dataclasses.replace(c0, metrics={**c0.metrics, "test_error": stat})
    return dataclasses.replace(result, cells=[c0, *result.cells[1:]])


def test_one_seed_has_no_interval_and_a_diverged_seed_is_counted(sweep_dir):
    result = load(sweep_dir / "results.json")
    xs = [r.final.test_error for r in result.runs if r.model == result.cells[0].model]
    diverged = _with_test_stat(result, [None, *xs[1:3]])
    c = sweep_report.cells(diverged)[0]
    assert c["test_error"]["n_finite"] == 2 and c["test_error"]["mean"] == pytest.approx(statistics.fmean(xs[1:3]))
    assert "(1 diverged)" in sweep_report.section(diverged)
    one = sweep_report.cells(_with_test_stat(result, xs[:1]))
    assert one[0]["test_error"]["ci"] is None and one[0]["test_error"]["std"] == 0


def test_the_sweep_page_reads_the_stored_cell_summaries(sweep_dir):
    # One place for seed statistics: the sweep experiment's summaries, not a second computation here.
    result = load(sweep_dir / "results.json")
    runs = [dataclasses.replace(r, final=dataclasses.replace(r.final, test_error=0.5)) for r in result.runs]
    assert sweep_report.cells(dataclasses.replace(result, runs=runs)) == sweep_report.cells(result)
    changed = _with_test_stat(result, [0.25, 0.5, 0.75])
    assert sweep_report.cells(changed)[0]["test_error"]["mean"] == pytest.approx(0.5)
    assert "50% ± 25%" in sweep_report.section(changed)


def test_the_study_report_shows_cells_when_its_degradation_repeats_seeds():
    study = load_study()
    assert "Per cell, over seeds" not in to_html(study)  # one seed: the degradation table says it all
    deg = study.degradation
    twice = [*deg.runs, *(dataclasses.replace(r, seed=1, final=dataclasses.replace(
        r.final, test_error=(r.final.test_error or 0) / 2)) for r in deg.runs)]
    html = to_html(dataclasses.replace(study, degradation=dataclasses.replace(deg, runs=twice)))
    assert "Per cell, over seeds" in html
    r = deg.runs[0]
    xs = [r.final.test_error, r.final.test_error / 2]
    lo, hi = _t_interval(xs, 0.95)
    assert f"[{pct(max(lo, 0))}, {pct(min(hi, 1))}] (n = 2: not meaningful)" in html


def test_an_interval_over_two_seeds_is_cut_to_0_100_and_marked_not_meaningful(sweep_dir):
    # Issue 23: a sweep with 2 seeds printed an error-rate interval of [-6.0, 137.5].
    from resgrad.cli.sweep import _err as cli_err

    result = load(sweep_dir / "results.json")
    two = _with_test_stat(result, [0.1, 0.7])  # t(0.975, 1) = 12.7: the raw interval runs far past 0 and 1
    raw = two.cells[0].metrics["test_error"]
    assert raw.ci_low < 0 and raw.ci_high > 1
    html = sweep_report.section(two)
    assert "[0%, 100%] (n = 2: not meaningful)" in html
    assert cli_err(raw).endswith("[0.0, 100.0] (n = 2: not meaningful)")
    three = _with_test_stat(result, [0.4, 0.5, 0.6])
    lo, hi = _t_interval([0.4, 0.5, 0.6], 0.95)
    assert f"[{pct(lo)}, {pct(hi)}]</span>" in sweep_report.section(three)  # inside [0, 1]: unchanged, unmarked
    assert stats.clip_interval(-0.06, 1.375) == (0.0, 1.0) and stats.clip_interval(0.2, 0.4) == (0.2, 0.4)
