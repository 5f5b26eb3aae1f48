"""The signal measurement against independent computations: a linear net's correlation is 1
and its singular values are the weight product's; one config's Jacobian spectrum from
torch.autograd.functional.jacobian, another's correlation by hand; the shattering of
plain-with-BN nets vs residual ones (Balduzzi et al. 2017); the fits against scipy."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from resgrad.data import load
from resgrad.experiments import signal as sig
from resgrad.experiments.flow import build_net
from resgrad.experiments.signal import (
    SignalConfig,
    calibrate_batchnorm,
    fit_shattering,
    measure_signal,
    signal_line,
)
from resgrad.nets.blocks import Plain

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = dict(depths=(2, 3), seeds=(0,), width=32, line_points=24, max_lag=4, bn_batch=32, spectrum_examples=4,
             hist_bins=8)


@pytest.fixture(scope="module")
def data():
    return load("mnist1d")


def _row(res: dict, kind: str, **key) -> dict:
    (r,) = [r for r in res[kind] if all(r[k] == v for k, v in key.items())]
    return r


# ---- the pipeline on a linear net: closed forms ---------------------------------------------


def _linear_net(depth: int, width: int, d_in: int, d_out: int) -> nn.Module:
    # No activation anywhere: the gradient is the same at every input, J = W_out W_L ... W_1 W_stem.
    return nn.Sequential(nn.Flatten(), nn.Linear(d_in, width), *[Plain(nn.Linear(width, width)) for _ in range(depth)],
                         nn.Linear(width, d_out))


def test_linear_net_correlation_is_one_and_singular_values_are_the_weight_products(data, monkeypatch):
    monkeypatch.setattr(sig, "build_net", lambda family, arch, norm, act, init, depth, shape, classes, width:
                        _linear_net(depth, width, math.prod(shape), classes))
    cfg = SignalConfig(norms=("none",), archs=("plain",), **SMALL)
    res = measure_signal(cfg, data)
    for depth in (2, 3):
        s = _row(res, "shattering", depth=depth)
        assert s["neighbor"] == pytest.approx(1.0, abs=1e-12)
        assert s["autocorrelation"] == pytest.approx([1.0] * (cfg.max_lag + 1), abs=1e-12)
        torch.manual_seed(0)  # measure_signal seeds every config the same way before building
        net = _linear_net(depth, cfg.width, 40, 10).double()
        w = net[1].weight
        for m in net[2:]:
            w = (m.branch if isinstance(m, Plain) else m).weight @ w
        sv = torch.linalg.svdvals(w).detach().numpy()  # the same at every example
        p = _row(res, "spectrum", depth=depth)
        assert p["sigma_max"] == pytest.approx(sv[0], rel=1e-10)
        assert p["sigma_min"] == pytest.approx(sv[-1], rel=1e-10)
        assert p["condition"] == pytest.approx(sv[0] / sv[-1], rel=1e-10)
        assert p["median"] == pytest.approx(np.quantile(np.tile(sv, 4), 0.5), rel=1e-10)
        assert p["log10_mean"] == pytest.approx(np.log10(sv).mean(), rel=1e-10)


# ---- real nets against independent computations -------------------------------------------


def _batch_stats_net(family: str, arch: str, norm: str, depth: int, width: int, x: torch.Tensor) -> nn.Module:
    """The net frozen at ``x``'s batch statistics, computed here by hooks (not by momentum=None)."""
    net = build_net(family, arch, norm, "relu", "he", depth, (1, 40), 10, width).double()
    stats_: dict[nn.Module, tuple[torch.Tensor, torch.Tensor]] = {}
    hooks = [m.register_forward_hook(lambda m, a, o: stats_.__setitem__(m, (a[0].mean(0), a[0].var(0, unbiased=False))))
             for m in net.modules() if isinstance(m, nn.BatchNorm1d)]
    net.train()
    with torch.no_grad():
        net(x)
    for h in hooks:
        h.remove()
    with torch.no_grad():
        for m, (mean, var) in stats_.items():
            m.running_mean.copy_(mean)
            m.running_var.copy_(var)
    return net.eval()


def test_spectrum_matches_autograd_jacobian_and_svdvals(data):
    cfg = SignalConfig(norms=("batch",), archs=("residual",), **SMALL)
    res = measure_signal(cfg, data)
    depth = 3
    x = sig._batch(data, 0, cfg.bn_batch, torch.float64)
    torch.manual_seed(0)
    net = _batch_stats_net("mlp", "residual", "batch", depth, cfg.width, x)
    svs = np.stack([torch.linalg.svdvals(torch.autograd.functional.jacobian(net, xi[None]).reshape(10, 40)).numpy()
                    for xi in x[: cfg.spectrum_examples]])  # (examples, 10)
    p = _row(res, "spectrum", depth=depth)
    assert p["examples"] == cfg.spectrum_examples and p["layers"] == depth + 2
    assert p["sigma_max"] == pytest.approx(svs[:, 0].mean(), rel=1e-9)
    assert p["sigma_min"] == pytest.approx(svs[:, -1].mean(), rel=1e-9)
    assert p["condition"] == pytest.approx(np.median(svs[:, 0] / svs[:, -1]), rel=1e-9)
    for q, key in ((0.1, "q10"), (0.5, "median"), (0.9, "q90")):
        assert p[key] == pytest.approx(np.quantile(svs, q), rel=1e-9)
    assert p["log10_mean"] == pytest.approx(np.log10(svs).mean(), rel=1e-9)
    edges = np.array(p["hist_edges"])
    assert len(edges) == cfg.hist_bins + 1 and edges[0] <= np.log10(svs).min() and edges[-1] >= np.log10(svs).max()
    assert p["hist"] == pytest.approx(np.histogram(np.log10(svs), bins=edges)[0] / svs.size, abs=1e-12)
    for r in res["spectrum"]:  # one set of edges for every config, so the figure can overlay them
        assert r["hist_edges"] == p["hist_edges"]


def test_gradient_correlation_by_hand(data):
    cfg = SignalConfig(norms=("none",), archs=("plain",), **{**SMALL, "seeds": (1,)})
    res = measure_signal(cfg, data)
    depth = 3
    line = signal_line(data, 1, cfg.line_points)
    torch.manual_seed(1)
    net = build_net("mlp", "plain", "none", "relu", "he", depth, (1, 40), 10, cfg.width).double().eval()
    g = np.stack([torch.autograd.functional.jacobian(net, xi[None]).reshape(-1).numpy() for xi in line])  # (N, 400)
    c = np.corrcoef(g)  # Pearson between the flattened gradients at every pair of points
    auto = [np.mean(np.diagonal(c, k)) for k in range(cfg.max_lag + 1)]
    s = _row(res, "shattering", depth=depth)
    assert s["neighbor"] == pytest.approx(auto[1], abs=1e-10)
    assert s["neighbor_seeds"] == pytest.approx([auto[1]], abs=1e-10)
    assert s["autocorrelation"] == pytest.approx(auto, abs=1e-10)
    assert s["points"] == cfg.line_points and s["seeds"] == [1] and s["layers"] == depth + 2


def test_line_runs_between_two_training_examples(data):
    line = signal_line(data, 3, 9, span=0.5)
    assert line.shape == (9, 1, 40) and line.dtype == torch.float64
    a = line[0]
    step = line[1] - line[0]
    torch.testing.assert_close(line, a + torch.arange(9, dtype=torch.float64)[:, None, None] * step)
    b = a + 16 * step  # span 0.5: 8 steps reach half way
    x = data.x_train.double()
    assert ((x - a).flatten(1).norm(dim=1) == 0).any() and ((x - b).flatten(1).norm(dim=1) < 1e-5).any()
    torch.testing.assert_close(signal_line(data, 3, 9, span=0.5), line)  # seeded


def test_calibrated_batchnorm_computes_the_train_mode_function(data):
    torch.manual_seed(0)
    net = build_net("mlp", "plain", "batch", "relu", "he", 4, (1, 40), 10, 16).double()
    x = data.x_train[:32].double()
    with torch.no_grad():
        want = net.train()(x)
    before = [m.momentum for m in net.modules() if isinstance(m, nn.BatchNorm1d)]
    calibrate_batchnorm(net, x)
    assert not net.training
    assert [m.momentum for m in net.modules() if isinstance(m, nn.BatchNorm1d)] == before
    with torch.no_grad():
        torch.testing.assert_close(net(x), want, rtol=1e-10, atol=1e-10)
        # ... and, being in eval mode, per example: one input alone gives its row of the batch.
        torch.testing.assert_close(net(x[5:6]), want[5:6], rtol=1e-10, atol=1e-10)
    # At init's running statistics (mean 0, var 1) the eval-mode net is a different function.
    fresh = build_net("mlp", "plain", "batch", "relu", "he", 4, (1, 40), 10, 16).double()
    fresh.load_state_dict({k: v for k, v in net.state_dict().items() if "running" not in k}, strict=False)
    with torch.no_grad():
        assert not torch.allclose(fresh.eval()(x), want, rtol=1e-3)


# ---- the qualitative result ------------------------------------------------------------------


def test_plain_bn_shatters_residual_bn_does_not(data):
    # Balduzzi et al. 2017 Fig. 3: plain nets' gradients decorrelate with depth, residual nets' far less.
    cfg = SignalConfig(norms=("batch",), depths=(2, 8, 32), seeds=(0, 1), line_points=64, max_lag=2,
                       spectrum_examples=8, bn_batch=64)
    res = measure_signal(cfg, data)
    plain = [_row(res, "shattering", arch="plain", depth=d)["neighbor"] for d in cfg.depths]
    resid = [_row(res, "shattering", arch="residual", depth=d)["neighbor"] for d in cfg.depths]
    assert plain[0] > plain[1] > plain[2]
    assert plain[2] < 0.2 < 0.9 < resid[2]  # measured: about 0.007 (noise) vs 0.94
    for seed_p, seed_r in zip(_row(res, "shattering", arch="plain", depth=32)["neighbor_seeds"],
                              _row(res, "shattering", arch="residual", depth=32)["neighbor_seeds"], strict=True):
        assert seed_p < seed_r / 4
    fits = {f["arch"]: f for f in res["fits"]["shattering"]}
    assert fits["plain"]["log2_slope"] < -0.02  # measured: -0.04 per block (residual: -0.002)
    assert fits["plain"]["log2_slope"] < 20 * fits["residual"]["log2_slope"]
    # The Jacobian: BN plain nets spread their singular values over decades, residual ones stay near 1.
    p, r = (_row(res, "spectrum", arch=a, depth=32) for a in ("plain", "residual"))
    assert p["q90"] / p["q10"] > 100 > 20 > r["q90"] / r["q10"]
    assert 0.3 < r["median"] < 3


# ---- fits, shape, config -----------------------------------------------------------------------


def test_fits_equal_scipy_linregress():
    depths = [2, 4, 8, 16, 32]
    rows = []
    rng = np.random.default_rng(0)
    for arch, rate in (("plain", 0.7), ("residual", 0.97)):
        for d in depths:
            rows.append({"family": "mlp", "arch": arch, "norm": "none", "act": "relu", "init": "he", "depth": d,
                         "neighbor": float(rate ** d * np.exp(rng.normal(0, 0.1)))})
    rows.append({"family": "mlp", "arch": "plain", "norm": "none", "act": "relu", "init": "he", "depth": 64,
                 "neighbor": -0.01})  # non-positive: left out of the logs
    fits = {f["arch"]: f for f in fit_shattering(rows)}
    for arch in ("plain", "residual"):
        sel = [r for r in rows if r["arch"] == arch and r["neighbor"] > 0]
        d = np.array([r["depth"] for r in sel], float)
        n = np.array([r["neighbor"] for r in sel])
        f = fits[arch]
        assert f["log2_slope"] == pytest.approx(stats.linregress(d, np.log2(n)).slope, rel=1e-12)
        assert f["power"] == pytest.approx(stats.linregress(np.log(d), np.log(n)).slope, rel=1e-12)
        assert f["used"] == 5
    assert fits["plain"]["depths"] == [2, 4, 8, 16, 32, 64] and fits["plain"]["neighbor"][-1] == -0.01
    floored = {f["arch"]: f for f in fit_shattering(rows, floor=0.1)}  # only neighbours above 0.1 enter
    sel = [r for r in rows if r["arch"] == "plain" and r["neighbor"] > 0.1]
    assert floored["plain"]["used"] == len(sel) and floored["plain"]["floor"] == 0.1 and len(sel) == 2
    assert floored["plain"]["log2_slope"] == pytest.approx(
        stats.linregress([r["depth"] for r in sel], np.log2([r["neighbor"] for r in sel])).slope, rel=1e-12)
    assert fit_shattering([{"family": "mlp", "arch": "plain", "norm": "none", "depth": 4, "neighbor": 0.5}])[0][
        "power"] is None  # one depth: no slope


def test_results_shape_json_rng_threads(data):
    cfg = SignalConfig(families=("mlp", "he2015"), **{**SMALL, "depths": (3,), "bn_batch": 8})
    torch.manual_seed(123)
    want = torch.rand(3)
    torch.manual_seed(123)
    threads = torch.get_num_threads()
    res = measure_signal(cfg, data)
    torch.testing.assert_close(torch.rand(3), want)  # the caller's RNG is untouched
    assert torch.get_num_threads() == threads
    json.dumps(res, allow_nan=False)
    assert set(res) == {"config", "seconds", "shattering", "spectrum", "fits"}
    assert res["config"]["depths"] == [3] and res["seconds"] > 0
    assert SignalConfig(**json.loads(json.dumps(res["config"]))) == cfg  # the results say how to rerun them
    assert len(res["shattering"]) == len(res["spectrum"]) == 2 * 2 * 2  # families x norms x archs
    for s in res["shattering"]:
        assert set(s) == {"family", "arch", "norm", "act", "init", "depth", "layers", "seeds", "neighbor",
                          "neighbor_seeds", "autocorrelation", "points"}
        assert len(s["autocorrelation"]) == cfg.max_lag + 1 and s["autocorrelation"][0] == pytest.approx(1.0)
    for p in res["spectrum"]:
        assert {"sigma_max", "sigma_min", "condition", "log10_mean", "q10", "median", "q90", "hist_edges",
                "hist", "examples"} <= set(p)
        assert sum(p["hist"]) == pytest.approx(1.0) and p["q10"] <= p["median"] <= p["q90"]
    he = _row(res, "spectrum", family="he2015", arch="plain", norm="batch")
    assert he["depth"] == 3 and he["layers"] == 8  # 3 stages x 1 block: the 8-layer net of He et al. §4.2
    again = measure_signal(cfg, data)
    assert again["shattering"] == res["shattering"] and again["spectrum"] == res["spectrum"]


@pytest.mark.parametrize("kw, match", [
    ({"families": ("vgg",)}, "families"), ({"archs": ()}, "archs"), ({"norms": ("layer",)}, "norms"),
    ({"activation": "elu"}, "activation"), ({"init": "lsuv"}, "init"), ({"dtype": "float16"}, "dtype"),
    ({"depths": (4, 0)}, "depths"), ({"depths": (2.5,)}, "depths"), ({"seeds": ()}, "seeds"),
    ({"width": 0}, "width"), ({"line_points": 2}, "line_points"), ({"max_lag": 200}, "max_lag"),
    ({"spectrum_examples": 500}, "spectrum_examples"), ({"line_span": 0.0}, "line_span"),
    ({"line_span": 1.5}, "line_span"), ({"hist_range": (2.0, 1.0)}, "hist_range"), ({"threads": -1}, "threads"),
    ({"bn_batch": 1}, "bn_batch"), ({"fit_floor": 1.0}, "fit_floor"), ({"hist_bins": True}, "hist_bins"),
])
def test_bad_config_is_a_one_line_value_error(kw, match):
    with pytest.raises(ValueError, match=match) as e:
        SignalConfig(**kw)
    msg = str(e.value)
    assert "\n" not in msg and "received" in msg
