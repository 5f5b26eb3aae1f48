"""The flow experiment: every config's profile, ratio, slope, CI and verdict; verdicts that
match the textbook cases; the results file and its reuse."""

from __future__ import annotations

import json
import math

import pytest

from resgrad.experiments import FlowConfig, run_flow
from resgrad.experiments import flow as flow_mod
from resgrad.experiments.flow import fit_slope, verdict
from resgrad.results import FlowResult, load

TINY = dict(families=("mlp", "he2015"), activations=("relu", "sigmoid"), inits=("he",), depths=(4, 8), signal=None,
            he_depths=(4,), seeds=(0, 1), batch_size=16, he_batch_size=8, data="synthetic")


def test_results_hold_every_config_profile_ratio_slope_ci_verdict(tmp_path):
    res = run_flow(FlowConfig(**TINY), tmp_path)
    assert isinstance(res, FlowResult) and res.to_json()["schema"] == "resgrad.flow"
    assert tuple(res.config["depths"]) == (4, 8)
    assert "torch" in res.environment
    n_groups = 2 * 2 * 2 * (2 + 1)  # archs x norms x acts x (mlp depths + he depths)
    assert len(res.groups) == n_groups and len(res.configs) == 2 * n_groups
    for c in res.configs:
        prof = c.profile
        assert len(prof.norm) == len(prof.rms) == len(prof.log10_norm) == c.depth
        assert c.ratio_first_last == pytest.approx(prof.norm[0] / prof.norm[-1], rel=1e-9)
        assert c.verdict in ("vanishing", "healthy", "exploding")
        assert res.groups[c.group].arch == c.arch
    for g in res.groups:
        lo, hi = g.slope_ci
        assert lo <= g.slope <= hi
    assert {c.depth for c in res.configs if c.family == "he2015"} == {3}  # 3 stages x 1 block
    assert (res.thresholds.decades, res.thresholds.ci_level) == (2.0, 0.95)
    assert set(res.conventions) >= {"profile", "ratio", "slope", "verdict"}
    assert res.summary.largest_depth and res.summary.bn_plain and res.summary.depth_trend
    # written atomically as JSON, and read back into an equal object
    assert load(tmp_path / "results.json") == res
    assert json.loads((tmp_path / "config.json").read_text())["kind"] == "resgrad.flow"


def test_a_different_config_in_a_used_folder_is_refused(tmp_path):
    cfg = FlowConfig(**{**TINY, "families": ("mlp",), "depths": (4,), "activations": ("relu",)})
    run_flow(cfg, tmp_path)
    with pytest.raises(ValueError, match=r"different config \(depths: \[4\] -> \[8\]\)"):
        run_flow(FlowConfig(**{**TINY, "families": ("mlp",), "depths": (8,), "activations": ("relu",)}), tmp_path)


def test_finished_folder_is_reused(tmp_path, monkeypatch):
    cfg = FlowConfig(**{**TINY, "families": ("mlp",), "depths": (4,), "activations": ("relu",)})
    first = run_flow(cfg, tmp_path)

    def boom(*a, **k):
        raise AssertionError("recomputed")

    monkeypatch.setattr(flow_mod, "_measure", boom)
    again = run_flow(cfg, tmp_path)
    assert again.configs[0].log10_ratio == pytest.approx(first.configs[0].log10_ratio)
    with pytest.raises(AssertionError, match="recomputed"):
        run_flow(cfg, tmp_path, reuse=False)


def test_sigmoid_plain_mlp_depth50_vanishes_residual_twin_does_not():
    cfg = FlowConfig(families=("mlp",), norms=("none",), activations=("sigmoid",), inits=("he",),
                     depths=(50, 256), seeds=(0, 1, 2), batch_size=32, data="synthetic")
    res = run_flow(cfg)
    g = {(x.arch, x.depth): x for x in res.groups}
    assert g[("plain", 50)].verdict == "vanishing"
    assert g[("residual", 50)].verdict != "vanishing"
    assert g[("plain", 50)].slope_ci[1] < 0 < g[("residual", 50)].slope_ci[1]
    deep = g[("plain", 256)]
    # far below float32's range, still a number: log-space backprop, not 0
    assert deep.log10_ratio < -60 and math.isfinite(deep.log10_ratio)
    assert all(c.ratio_first_last > 0 for c in res.configs if c.depth == 256 and c.arch == "plain")


def test_slope_direction_and_verdict_rule():
    # gradient shrinks by 10x per block toward the input: log10 rms = i - (L-1) for block i
    assert fit_slope([float(i - 4) for i in range(5)]) == pytest.approx(-1.0)
    assert verdict(-1.0, (-1.2, -0.8), depth=5) == "vanishing"
    assert verdict(+1.0, (0.8, 1.2), depth=5) == "exploding"
    assert verdict(-1.0, (-2.0, 0.1), depth=5) == "healthy"  # CI crosses zero
    assert verdict(-0.1, None, depth=5) == "healthy"  # 0.4 decades across the net
    assert verdict(float("nan"), None, depth=5) == "non-finite"


def test_presets_and_bad_configs():
    q = FlowConfig.preset("quick")
    assert q.size == "quick" and max(q.depths) <= 32
    assert FlowConfig.preset("default").depths[-1] == 256
    with pytest.raises(ValueError, match="size must be one of"):
        FlowConfig.preset("huge")
    with pytest.raises(ValueError, match="activations must be a non-empty subset"):
        FlowConfig(activations=("swish",))
    with pytest.raises(ValueError, match="depths must be integers >= 2"):
        FlowConfig(depths=(1,))
    with pytest.raises(ValueError, match="unknown dataset"):
        run_flow(FlowConfig(**{**TINY, "data": "nope"}))


def test_after_training_steps_and_rng_untouched():
    import torch

    torch.manual_seed(123)
    want = torch.rand(1)
    torch.manual_seed(123)
    res = run_flow(FlowConfig(families=("mlp",), norms=("batch",), activations=("relu",), inits=("he",), depths=(4,),
                              seeds=(0,), train_steps=3, batch_size=16, data="synthetic"))
    assert torch.rand(1) == want
    assert all(c.train_steps == 3 and c.finite for c in res.configs)
    assert res.groups[0].slope_ci is None  # one seed: no CI, the point estimate decides


def _numbers(res: FlowResult) -> dict:
    """The result without what is timing or host, not measurement."""
    d = res.to_json()
    d.pop("wall_time_s")
    d.pop("environment")
    if d.get("signal"):
        d["signal"].pop("seconds", None)
    return d


def test_the_grid_in_chunks_through_a_pool_equals_the_in_process_run_bitwise(tmp_path):
    from resgrad.executors import LocalExecutor

    cfg = FlowConfig(**TINY)
    alone = flow_mod.run(cfg)  # no folder, no executor: measured here, one config after another
    with LocalExecutor(2, threads=1) as ex:
        fanned = flow_mod.run(cfg, tmp_path, executor=ex, chunks=5)
    assert _numbers(fanned) == _numbers(alone)  # every float equal, and the groups in grid order
    assert [c.group for c in fanned.configs] == sorted(c.group for c in alone.configs)
    parts = sorted(p.name for p in (tmp_path / "chunks").iterdir())
    assert parts == [f"grid-{k:03d}-of-005" for k in range(5)]
    assert load(tmp_path / "results.json") == fanned


def test_a_killed_chunked_grid_reuses_its_valid_parts_and_redoes_the_rest(tmp_path, monkeypatch):
    from resgrad.executors import LocalExecutor

    cfg = FlowConfig(**{**TINY, "signal": flow_mod.SignalConfig(depths=(2, 4), seeds=(0,), line_points=32,
                                                                   spectrum_examples=4)})
    first = flow_mod.run(cfg, tmp_path, executor=LocalExecutor(1, threads=1), chunks=4)
    # As if killed before results.json, with part 1 never written and part 2 torn mid-write
    # (a part that does not validate is measured again, never trusted).
    (tmp_path / "results.json").unlink()
    (tmp_path / "chunks" / "grid-001-of-004" / "results.json").unlink()
    (tmp_path / "chunks" / "grid-002-of-004" / "results.json").write_text('{"schema": "resgrad.flow-chu')
    calls = []
    real = flow_mod._measure
    monkeypatch.setattr(flow_mod, "_measure", lambda *a: calls.append(a[2:]) or real(*a))
    again = flow_mod.run(cfg, tmp_path, executor=LocalExecutor(1, threads=1), chunks=4)
    grid = flow_mod._grid(cfg)
    redone = {tuple(grid[g]) for g in range(len(grid)) if g % 4 in (1, 2)}
    assert {c[:6] for c in calls} == redone and len(calls) == len(redone) * len(cfg.seeds)
    assert _numbers(again) == _numbers(first)
    with pytest.raises(ValueError, match="chunks must be an integer >= 1"):
        flow_mod.run(cfg, tmp_path / "x", executor=LocalExecutor(1), chunks=0)


def test_a_non_finite_measurement_survives_its_chunk_file(tmp_path):
    from resgrad.executors import LocalExecutor

    # Float32 forced: a 400-block unnormalised residual ReLU MLP overflows in the forward pass,
    # so the chunk's JSON holds nulls where the in-process run had NaN/Inf.
    cfg = FlowConfig(families=("mlp",), archs=("residual",), norms=("none",), activations=("relu",), inits=("he",),
                     depths=(400,), seeds=(0, 1), batch_size=16, data="synthetic", signal=None, dtype="float32")
    alone = flow_mod.run(cfg)
    assert [c.finite for c in alone.configs] == [False, False] and alone.groups[0].verdict == "non-finite"
    fanned = flow_mod.run(cfg, tmp_path, executor=LocalExecutor(1, threads=1), chunks=1)
    assert _numbers(fanned) == _numbers(alone)
