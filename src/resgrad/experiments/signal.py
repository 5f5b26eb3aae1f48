"""Shattering and the Jacobian spectrum of plain and residual twins at initialisation.

Two measurements per (family, arch, norm, depth, seed), on the nets of the flow
experiment (:func:`resgrad.experiments.flow.build_net`), in float64:

* **Gradient correlation** (Balduzzi et al. 2017, arXiv 1702.08591, §3, Figs. 2-3): the
  Pearson correlation between the input gradients (all logits x all input coordinates,
  :func:`resgrad.probes.gradient_correlation`) at consecutive points of a line through
  data space. Balduzzi et al. find it decays like 2^-L in plain ReLU nets and like
  1/sqrt(L) in residual nets with BatchNorm. ``neighbor`` is the mean lag-1 correlation;
  ``autocorrelation`` the mean at lags 0..max_lag.
* **Jacobian singular values** (Pennington, Schoenholz, Ganguli 2017, arXiv 1711.04735):
  the exact singular values of ``∂logits/∂x`` (10 x 40 for MNIST-1D) per example,
  :func:`resgrad.probes.jacobian_spectrum`. Dynamical isometry means all of them near 1.

The line: from one training example to another (``line_span`` = 1: the whole segment),
``line_points`` evenly spaced points, the pair drawn per seed. Balduzzi et al. sweep a
1-D input over [-2, 2]; the segment between two real inputs is the analogue in 40-D that
stays on the data's scale, where the BatchNorm statistics below were taken, and needs no
arbitrary radius. The same seed gives the same line to every arch, norm and depth, so
twins are compared on the same inputs.

BatchNorm: per-input gradients and per-example Jacobians need eval mode (train-mode BN
couples the examples of a batch), but at initialisation eval-mode BN uses the running
statistics (mean 0, variance 1), which is not the regime the flow experiment measures
(train mode, batch statistics). So each BN layer first takes its running statistics from
one train-mode forward pass of a data batch (``bn_batch`` examples, the batch the flow
experiment measures for the same seed): ``momentum=None`` with reset statistics makes
the running mean that batch's mean, and the running variance is rescaled from unbiased
to biased, so the eval-mode net computes exactly the train-mode function on that batch
(a test checks it), frozen as a per-example function.

Results (JSON-able; floats, None where non-finite)::

    config (asdict), seconds,
    shattering: [ {family, arch, norm, act, init, depth (blocks), layers, seeds, neighbor (mean over
                   seeds), neighbor_seeds, autocorrelation (mean over seeds, lag 0 first), points} ]
    spectrum:   [ {family, arch, norm, act, init, depth, layers, seeds, examples,
                   sigma_max, sigma_min (means over examples and seeds), condition (median over
                   examples and seeds of sigma_max/sigma_min), log10_mean (mean log10 sigma), q10, median,
                   q90 (quantiles of all singular values), hist_edges (log10 sigma, shared by all rows),
                   hist (fraction of singular values per bin, sums to 1; mean over seeds)} ]
    fits: {shattering: fit_shattering(shattering, fit_floor)}: per (family, arch, norm) series
           {family, arch, norm, act, init, depths, neighbor, used, floor, log2_slope, power}
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .. import stats
from ..data import DataBundle
from ..io import jsonable
from ..nets.blocks import blocks as _blocks
from ..probes.jacobian import jacobian_spectrum
from ..probes.shattering import gradient_correlation
from ._nets import FAMILIES, build_net
from .config import Config as BaseConfig
from .config import check_int, check_number, check_one_of, check_subset, is_int, need

__all__ = ["SignalConfig", "measure_signal", "fit_shattering", "calibrate_batchnorm", "signal_line"]

_BN = nn.modules.batchnorm._BatchNorm


@dataclass
class SignalConfig(BaseConfig):
    """What the signal measurement sweeps and how (every field goes into the results)."""

    families: tuple[str, ...] = ("mlp",)  # "mlp" (pre-act MLP) and/or "he2015" (He et al. CIFAR family, 1-D)
    archs: tuple[str, ...] = ("plain", "residual")  # twins: same parameters, with/without the skip
    norms: tuple[str, ...] = ("none", "batch")  # BN with running stats from one data batch (module docstring)
    activation: str = "relu"  # Balduzzi et al.'s theorems are for ReLU
    init: str = "he"  # Kaiming normal, as in the flow experiment
    depths: tuple[int, ...] = (2, 4, 8, 16, 32, 64)  # blocks, log-spaced (he2015: rounded to 3n)
    seeds: tuple[int, ...] = (0, 1)  # weights, the line's endpoints and the BN/spectrum batch
    width: int = 64  # MLP hidden width (he2015: 16/32/64 channels per stage)
    line_points: int = 128  # inputs along the line (Balduzzi et al. use 256 on [-2, 2])
    line_span: float = 1.0  # the line runs from train example a a fraction line_span of the way to example b
    max_lag: int = 16  # autocorrelation recorded at lags 0..max_lag (points along the line)
    bn_batch: int = 128  # examples whose statistics become BN's running statistics (flow's batch size)
    spectrum_examples: int = 16  # examples (the first of the BN batch) whose Jacobians are decomposed
    fit_floor: float = 0.02  # fits use only neighbor correlations above this: white-noise gradients
    #                          (10 x 40 entries, 127 neighbour pairs) average about 0 +- 1/sqrt(400 * 127) = 0.004
    hist_bins: int = 40  # bins of the log10 singular-value histogram
    hist_range: tuple[float, float] | None = None  # log10 sigma range of the bins; None: every measured
    #                                                value, rounded out to whole decades (values outside clip)
    dtype: str = "float64"  # deep unnormalised residual nets grow like 2^(L/2); float64 keeps them finite
    threads: int = 1  # torch intra-op threads while measuring (restored after); 0 leaves torch's setting
    device: str = "cpu"

    def __post_init__(self) -> None:
        for name in ("families", "archs", "norms", "depths", "seeds"):
            setattr(self, name, tuple(getattr(self, name)))
        check_subset("families", self.families, FAMILIES)
        check_subset("archs", self.archs, ("plain", "residual"))
        check_subset("norms", self.norms, ("none", "batch"))
        check_one_of("activation", self.activation, ("relu", "tanh", "sigmoid", "gelu"))
        check_one_of("init", self.init, ("he", "xavier"))
        check_one_of("dtype", self.dtype, ("float32", "float64"))
        need(bool(self.depths) and all(is_int(d) and d >= 1 for d in self.depths), "depths",
             "integers >= 1 (blocks)", self.depths)
        need(bool(self.seeds) and all(is_int(s) for s in self.seeds), "seeds", "one or more integers", self.seeds)
        for name, lo in (("width", 1), ("line_points", 3), ("max_lag", 1), ("bn_batch", 2),
                         ("spectrum_examples", 1), ("hist_bins", 1), ("threads", 0)):
            check_int(name, getattr(self, name), lo)
        check_number("fit_floor", self.fit_floor, lo=0, hi=1, open_hi=True, rule="a number in [0, 1)")
        need(self.max_lag < self.line_points, "max_lag", f"< line_points ({self.line_points})", self.max_lag)
        need(self.spectrum_examples <= self.bn_batch, "spectrum_examples", f"<= bn_batch ({self.bn_batch})",
             self.spectrum_examples)
        check_number("line_span", self.line_span, lo=0, hi=1, open_lo=True, rule="a fraction in (0, 1]")
        if self.hist_range is not None:
            r = tuple(self.hist_range)
            need(len(r) == 2 and all(isinstance(v, (int, float)) and math.isfinite(v) for v in r) and r[0] < r[1],
                 "hist_range", "None or (lo, hi) log10 values with lo < hi", self.hist_range)
            self.hist_range = (float(r[0]), float(r[1]))


# ---- pieces ----------------------------------------------------------------------------


@contextmanager
def _counting_bn(net: nn.Module) -> Iterator[dict[nn.Module, int]]:
    """Hooks that record how many values per channel each BN layer normalised; removed on exit."""
    counts: dict[nn.Module, int] = {}
    handles = []
    try:
        for m in net.modules():
            if isinstance(m, _BN):
                handles.append(m.register_forward_pre_hook(
                    lambda mod, args: counts.__setitem__(mod, args[0].numel() // args[0].shape[1])))
        yield counts
    finally:
        for h in handles:
            h.remove()


def calibrate_batchnorm(net: nn.Module, x: Tensor) -> nn.Module:
    """Set every BN layer's running statistics to ``x``'s batch statistics; return ``net`` in eval mode.

    After this, ``net.eval()(x)`` equals ``net.train()(x)``: the train-mode function the flow
    experiment measures, frozen so that gradients and Jacobians are per example.
    """
    bns = [m for m in net.modules() if isinstance(m, _BN)]
    momenta = [m.momentum for m in bns]
    try:
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative average: after one batch, exactly that batch's statistics
        net.train()
        with torch.no_grad(), _counting_bn(net) as counts:
            net(x)
        with torch.no_grad():
            for m in bns:
                n = counts[m]
                m.running_var.mul_((n - 1) / n)  # BN stores the unbiased variance but normalises with the biased one
    finally:
        for m, mom in zip(bns, momenta, strict=True):
            m.momentum = mom
    return net.eval()


def signal_line(data: DataBundle, seed: int, points: int, span: float = 1.0,
                dtype: torch.dtype = torch.float64) -> Tensor:
    """``points`` evenly spaced inputs from train example a toward example b (pair drawn by ``seed``).

    Computed in ``dtype`` (``line_inputs`` works in torch's default dtype, float32, which would round
    the steps between neighbouring points of a float64 measurement).
    """
    g = torch.Generator().manual_seed(20_000 + seed)
    i, j = torch.randperm(len(data.x_train), generator=g)[:2].tolist()
    a, b = data.x_train[i].to(dtype), data.x_train[j].to(dtype)
    t = torch.linspace(0, span, points, dtype=dtype).reshape(points, *([1] * a.dim()))
    return a + t * (b - a)  # (points, *input_shape)


def _batch(data: DataBundle, seed: int, n: int, dtype: torch.dtype) -> Tensor:
    # The flow experiment's measured batch for this seed (flow._measure_in draws it the same way).
    g = torch.Generator().manual_seed(10_000 + seed)
    idx = torch.randperm(len(data.x_train), generator=g)[:n]
    return data.x_train[idx].to(dtype)


def _layers(family: str, blocks: int) -> int:
    # mlp: stem + blocks + head Linear; he2015: 2 convs per block + first conv + fc (6n+2, 3n blocks)
    return 2 * blocks + 2 if family == "he2015" else blocks + 2


def _measure_one(config: SignalConfig, data: DataBundle, family: str, arch: str, norm: str, depth: int,
                 seed: int) -> dict[str, Any]:
    dtype = getattr(torch, config.dtype)
    torch.manual_seed(seed)
    net = build_net(family, arch, norm, config.activation, config.init, depth, data.input_shape,
                    data.num_classes, config.width).to(device=config.device, dtype=dtype)
    x = _batch(data, seed, config.bn_batch, dtype).to(config.device)
    calibrate_batchnorm(net, x)  # eval mode from here (a no-op for nets without BN)
    line = signal_line(data, seed, config.line_points, config.line_span, dtype).to(config.device)
    gc = gradient_correlation(net, line, outputs="all", max_lag=config.max_lag)
    spec = jacobian_spectrum(net, x[: config.spectrum_examples], method="dense")
    nb = len(_blocks(net))
    return {"depth": nb, "layers": _layers(family, nb), "neighbor": gc.neighbor,
            "autocorrelation": gc.autocorrelation.tolist(), "sv": spec.singular_values.numpy()}


def _f(v: float) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


def _mean(vs: list[float]) -> float | None:
    return _f(sum(vs) / len(vs)) if all(math.isfinite(v) for v in vs) else None


def _edges(svs: list[np.ndarray], config: SignalConfig) -> np.ndarray:
    if config.hist_range is not None:
        lo, hi = config.hist_range
    else:
        logs = np.concatenate([np.log10(s[s > 0]) for s in svs]) if svs else np.array([])
        logs = logs[np.isfinite(logs)]
        lo, hi = (math.floor(logs.min()), math.ceil(logs.max())) if logs.size else (-1.0, 1.0)
        if hi <= lo:
            lo, hi = lo - 1, hi + 1
    return np.linspace(lo, hi, config.hist_bins + 1)


def _hist(sv: np.ndarray, edges: np.ndarray) -> np.ndarray:
    s = np.log10(np.clip(sv.ravel(), 1e-300, None))
    s = np.clip(s, edges[0], edges[-1])  # out-of-range values land in the end bins
    counts, _ = np.histogram(s, bins=edges)
    return counts / max(counts.sum(), 1)


def _spectrum_row(svs: list[np.ndarray], edges: np.ndarray) -> dict[str, Any]:
    sv = np.stack(svs)  # (seeds, examples, min(d_in, d_out)), descending per example
    pooled = sv.ravel()
    with np.errstate(divide="ignore", invalid="ignore"):
        cond = sv[..., 0] / sv[..., -1]
        logs = np.log10(pooled)
    q10, med, q90 = np.quantile(pooled, [0.1, 0.5, 0.9])
    return {
        "examples": int(sv.shape[1]), "sigma_max": _f(sv[..., 0].mean()), "sigma_min": _f(sv[..., -1].mean()),
        "condition": _f(np.median(cond)), "log10_mean": _f(logs.mean()),
        "q10": _f(q10), "median": _f(med), "q90": _f(q90),
        "hist_edges": [float(e) for e in edges],
        "hist": [float(v) for v in np.mean([_hist(s, edges) for s in svs], axis=0)],
    }


# ---- fits (torch-free) -------------------------------------------------------------------


def _slope(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of ys on xs; None with fewer than two distinct xs."""
    return _f(stats.slope(xs, ys))


def fit_shattering(rows: list[dict[str, Any]], floor: float = 0.0) -> list[dict[str, Any]]:
    """Depth trends of the neighbour correlation, one per (family, arch, norm, act, init) series.

    ``log2_slope``: slope of log2(neighbor) against depth in blocks. Balduzzi et al.'s 2^-L for
    plain ReLU nets is -1 per layer; an MLP block here is one Linear + ReLU layer, so -1 per
    block (he2015 blocks hold two layers: -2). ``power``: slope of ln(neighbor) against
    ln(depth); their 1/sqrt(L) for residual nets with BN is -0.5. Only depths >= 1 whose
    neighbor correlation is finite and above ``floor`` (> 0) enter the logs (``used``
    counts them): values at the noise floor of white-noise gradients carry no trend and
    would set the slope at random. A fit with fewer than two is None. Numpy only, no torch.
    """
    series: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        series.setdefault((r["family"], r["arch"], r["norm"], r.get("act"), r.get("init")), []).append(r)
    fits = []
    for (family, arch, norm, act, init), rs in series.items():
        rs = sorted(rs, key=lambda r: r["depth"])
        ok = [r for r in rs if r["depth"] > 0 and r["neighbor"] is not None
              and math.isfinite(r["neighbor"]) and r["neighbor"] > max(floor, 0.0)]
        d = [float(r["depth"]) for r in ok]
        n = [float(r["neighbor"]) for r in ok]
        fits.append({
            "family": family, "arch": arch, "norm": norm, "act": act, "init": init,
            "depths": [r["depth"] for r in rs], "neighbor": [r["neighbor"] for r in rs], "used": len(ok), "floor": floor,
            "log2_slope": _slope(d, [math.log2(v) for v in n]),
            "power": _slope([math.log(v) for v in d], [math.log(v) for v in n]),
        })
    return fits


# ---- the measurement ---------------------------------------------------------------------


def measure_signal(config: SignalConfig | None = None, data: DataBundle | None = None) -> dict[str, Any]:
    """Gradient correlation and Jacobian spectrum over the grid; the dict of the module docstring.

    ``data``: a DataBundle (default: MNIST-1D). Seeds are set per config; the caller's RNG
    and torch's thread count are left as they were.
    """
    config = config or SignalConfig()
    if data is None:
        from ..data import load

        data = load("mnist1d")
    threads = torch.get_num_threads()
    t0 = time.perf_counter()
    try:
        if config.threads:
            torch.set_num_threads(config.threads)
        with torch.random.fork_rng(devices=[]):
            shattering, spectra = _grid(config, data)
    finally:
        torch.set_num_threads(threads)
    edges = _edges([s for _, svs in spectra for s in svs], config)
    spectrum = [{**head, **_spectrum_row(svs, edges)} for head, svs in spectra]
    return {"config": jsonable(asdict(config)), "seconds": time.perf_counter() - t0,
            "shattering": shattering, "spectrum": spectrum, "fits": {"shattering": fit_shattering(shattering, config.fit_floor)}}


def _grid(config: SignalConfig, data: DataBundle) -> tuple[list[dict[str, Any]], list[tuple[dict, list]]]:
    shattering: list[dict[str, Any]] = []
    spectra: list[tuple[dict, list]] = []
    for family in config.families:
        for norm in config.norms:
            for arch in config.archs:
                for depth in config.depths:
                    per = [_measure_one(config, data, family, arch, norm, depth, s) for s in config.seeds]
                    head = {"family": family, "arch": arch, "norm": norm, "act": config.activation,
                            "init": config.init, "depth": per[0]["depth"], "layers": per[0]["layers"],
                            "seeds": list(config.seeds)}
                    nbs = [p["neighbor"] for p in per]
                    auto = [_mean(list(v)) for v in zip(*(p["autocorrelation"] for p in per), strict=True)]
                    shattering.append({**head, "neighbor": _mean(nbs), "neighbor_seeds": [_f(v) for v in nbs],
                                       "autocorrelation": auto, "points": config.line_points})
                    spectra.append((dict(head), [p["sv"] for p in per]))
    return shattering, spectra

