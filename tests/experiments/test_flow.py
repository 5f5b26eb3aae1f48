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
