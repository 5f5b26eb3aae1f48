"""Gradient flow at initialisation across depth, architecture, normalisation, activation, init.

The grid: family {mlp, he2015} x arch {plain, residual} x norm {none, batch} x act
{relu, tanh, sigmoid} x init {he, xavier} x depth (blocks) x seed. For each config one
batch of data goes forward and backward (in float64; optionally after ``train_steps``
SGD steps) and the gradient of the loss w.r.t. the input of every block is measured with
:func:`resgrad.probes.block_gradient_profile`, which renormalises at every block and sums
logs, so nothing under- or overflows (a depth-256 sigmoid plain net reports a ratio near
1e-130, not 0). The He et al. 2015 family's variants (no BN, other activations, Xavier init) are
the registered nets with BatchNorm swapped for Identity, ReLU for the activation, and the
convolutions re-initialised.

Direction convention: block 0 is nearest the input, block L-1 nearest the loss; the
gradient flows from L-1 down to 0. ``ratio_first_last`` = ‖∂L/∂x_0‖ / ‖∂L/∂x_{L-1}‖ (< 1:
the gradient shrinks on its way to the input). ``slope`` is the least-squares slope of
log10 RMS(∂L/∂x_l) against k = L-1-l, the number of blocks the gradient has crossed:
decades per block, negative = vanishing. ``decades`` = slope x (L-1), the fitted log10 of
the ratio. Verdict per config group (same config, all seeds): *vanishing* if decades <=
-threshold and the slope's CI across seeds lies below 0; *exploding* if decades >=
+threshold and the CI lies above 0; *healthy* otherwise; *non-finite* if any seed's loss
or profile is NaN/Inf. Default threshold: 2 decades (a 100x change across the net), CI
95% (Student t over seeds; with one seed the point estimate decides). Exponential
vanishing or explosion shows as ``decades`` growing in proportion to depth; the summary's
``depth_trend`` fits that rate across depths, which a single depth's verdict cannot show.

He et al. 2015 (§4.1) report "healthy" backward norms in BN plain nets; Philipp et al.
2018 (arXiv 1712.05577) report exploding gradients in BN plain MLPs. The grid measures
both; nothing here assumes an answer.

The result is a :class:`resgrad.results.FlowResult` (results/flow.py defines every field).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import stats
from ..data import DataBundle
from ..data import load as load_data
from ..io import environment, jsonable
from ..nets.blocks import blocks as _blocks
from ..nets.mlp import ACTIVATIONS
from ..probes.gradients import block_gradient_profile
from ..results import FlowResult
from ..rundir import RunDir
from ..verdicts import flow_verdict as verdict
from ._nets import FAMILIES, _he_n, build_net
from .signal import SignalConfig

__all__ = ["FlowConfig", "run_flow", "run", "fit_slope", "verdict", "SIZES", "FAMILIES", "KIND"]

KIND = "resgrad.flow"  # config.json's kind for a flow run folder
VERDICTS = ("vanishing", "healthy", "exploding", "non-finite")


@dataclass
class FlowConfig:
    """What the flow experiment sweeps and how it measures (every field is in results)."""

    families: tuple[str, ...] = FAMILIES  # "mlp" (pre-act MLP), "he2015" (He et al. CIFAR family, 1-D)
    archs: tuple[str, ...] = ("plain", "residual")  # twins: same parameters, with/without skip
    norms: tuple[str, ...] = ("none", "batch")  # normalisation in every block (BN in train mode)
    activations: tuple[str, ...] = ("relu", "tanh", "sigmoid")
    inits: tuple[str, ...] = ("he", "xavier")  # he: Kaiming normal (ReLU gain); xavier: gain of the activation
    depths: tuple[int, ...] = (4, 8, 16, 32, 64, 128, 256)  # MLP blocks, log-spaced
    he_depths: tuple[int, ...] = (4, 8, 16, 32, 64, 128)  # he2015 blocks, rounded to 3n (n per stage);
    #                   128 -> 129 blocks = a 260-layer net, deeper than ResNet-110 (conv costs 5x an MLP block)
    seeds: tuple[int, ...] = (0, 1, 2)  # weights and measured batch; the CI is across seeds
    width: int = 64  # MLP hidden width (he2015: 16/32/64 channels per stage)
    data: str = "mnist1d"  # dataset name for resgrad.data.load; the measured batch comes from its train split
    batch_size: int = 128  # MLP: examples in the measured batch (BN statistics come from it)
    he_batch_size: int = 32  # he2015: examples per batch (x 40 positions per channel for BN statistics)
    train_steps: int = 0  # SGD steps (momentum 0.9) before measuring; 0 = at initialisation
    lr: float = 0.01  # learning rate for train_steps
    dtype: str = "auto"  # "auto": float32, redone in float64 when anything is non-finite (deep
    #                       unnormalised residual nets overflow float32 in the forward pass)
    device: str = "cpu"
    threads: int = 1  # torch intra-op threads while measuring: these ops are small, and on a
    #                  shared machine a spinning second thread costs 10x (restored afterwards)
    threshold_decades: float = 2.0  # verdict: |fitted log10(first/last)| at least this (100x) ...
    ci_level: float = 0.95  # ... and the slope's CI across seeds excludes 0 in that direction
    figure_formats: tuple[str, ...] = ("png", "svg")  # figures `resgrad flow` writes beside results.json (none: ())
    size: str = "custom"  # preset this config came from ("quick", "default", "full") or "custom"
    # Shattering and the Jacobian spectrum of plain/residual twins (experiments/signal.py); None: skip.
    signal: SignalConfig | None = field(default_factory=lambda: SignalConfig())

    def __post_init__(self) -> None:
        if isinstance(self.signal, dict):
            self.signal = SignalConfig(**self.signal)
        for name in ("families", "archs", "norms", "activations", "inits", "depths", "he_depths", "seeds",
                     "figure_formats"):
            setattr(self, name, tuple(getattr(self, name)))
        _check_sub("families", self.families, FAMILIES)
        _check_sub("archs", self.archs, ("plain", "residual"))
        _check_sub("norms", self.norms, ("none", "batch"))
        _check_sub("activations", self.activations, tuple(ACTIVATIONS))
        _check_sub("inits", self.inits, ("he", "xavier"))
        for name in ("depths", "he_depths"):
            ds = getattr(self, name)
            if not ds or any(isinstance(d, bool) or not isinstance(d, int) or d < 2 for d in ds):
                raise ValueError(f"{name} must be integers >= 2 (blocks), received {ds!r}")
        if not self.seeds:
            raise ValueError("seeds must name at least one seed, received ()")
        if self.dtype not in ("auto", "float32", "float64"):
            raise ValueError(f"dtype must be 'auto', 'float32' or 'float64', received {self.dtype!r}")
        _check_sub("figure_formats", self.figure_formats or ("png",), ("png", "svg", "pdf"))
        if self.threads < 0:
            raise ValueError(f"threads must be >= 0 (0: leave torch's setting), received {self.threads}")
        if min(self.batch_size, self.he_batch_size) < 2:
            raise ValueError(
                f"batch sizes must be >= 2 (BatchNorm needs a batch), received {self.batch_size}, {self.he_batch_size}"
            )
        if self.train_steps < 0:
            raise ValueError(f"train_steps must be >= 0, received {self.train_steps}")

    @classmethod
    def preset(cls, size: str, **overrides: Any) -> FlowConfig:
        """A named size: ``quick`` (seconds: tests, the study), ``default``, ``full``."""
        if size not in SIZES:
            raise ValueError(f"size must be one of {', '.join(SIZES)}, received {size!r}")
        kw = {**SIZES[size], "size": size, **overrides}
        if size == "quick" and "signal" not in overrides:
            kw["signal"] = SignalConfig(depths=(2, 8, 32), seeds=(0,), line_points=64, spectrum_examples=8)
        return cls(**kw)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FlowConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def _check_sub(name: str, got: tuple, allowed: tuple) -> None:
    bad = [v for v in got if v not in allowed]
    if bad or not got:
        raise ValueError(f"{name} must be a non-empty subset of {', '.join(map(str, allowed))}; received {list(got)}")


SIZES: dict[str, dict[str, Any]] = {
    # A few seconds: the grid's corners (relu/sigmoid, with/without BN, shallow/deep).
    "quick": {"activations": ("relu", "sigmoid"), "inits": ("he",), "depths": (4, 16), "he_depths": (4, 16),
              "seeds": (0, 1), "batch_size": 64, "he_batch_size": 16, "figure_formats": ("png",),
              "signal": None},  # set in FlowConfig.preset: a SignalConfig is not a shared constant
    # The full grid, log-spaced depths (MLP 4..256, he2015 4..128), 3 seeds: under 3 minutes on 2 CPU cores.
    "default": {},
    # More seeds and depth 512, for a tighter CI.
    "full": {"depths": (4, 8, 16, 32, 64, 128, 256, 512), "he_depths": (4, 8, 16, 32, 64, 128, 256),
             "seeds": (0, 1, 2, 3, 4)},
}


# ---- statistics -------------------------------------------------------------------------


def fit_slope(log10_rms: list[float]) -> float:
    """Least-squares slope of log10 RMS vs blocks crossed backward (k = L-1-l): decades/block."""
    L = len(log10_rms)
    if L < 2:
        return float("nan")
    return stats.slope(list(range(L)), list(reversed(log10_rms)))  # index k: k blocks from the loss end


# ---- the experiment ---------------------------------------------------------------------


def _measure(config: FlowConfig, data: DataBundle, family: str, arch: str, norm: str, act: str,
             init: str, depth: int, seed: int) -> dict[str, Any]:
    if config.dtype == "auto":
        r = _measure_in(config, data, family, arch, norm, act, init, depth, seed, torch.float32)
        if r["finite"]:
            return r
        return _measure_in(config, data, family, arch, norm, act, init, depth, seed, torch.float64)
    return _measure_in(config, data, family, arch, norm, act, init, depth, seed, getattr(torch, config.dtype))


def _measure_in(config: FlowConfig, data: DataBundle, family: str, arch: str, norm: str, act: str,
                init: str, depth: int, seed: int, dtype: torch.dtype) -> dict[str, Any]:
    torch.manual_seed(seed)
    net = build_net(family, arch, norm, act, init, depth, data.input_shape, data.num_classes, config.width)
    net = net.to(device=config.device, dtype=dtype).train()
    g = torch.Generator().manual_seed(10_000 + seed)
    bs = config.he_batch_size if family == "he2015" else config.batch_size
    idx = torch.randperm(len(data.x_train), generator=g)[:bs]
    x = data.x_train[idx].to(config.device, dtype)
    y = data.y_train[idx].to(config.device)
    if config.train_steps:
        opt = torch.optim.SGD(net.parameters(), lr=config.lr, momentum=0.9)
        for xb, yb in _take(data.batches(bs, generator=g), config.train_steps):
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(net(xb.to(config.device, dtype)), yb.to(config.device)).backward()
            opt.step()
        opt.zero_grad(set_to_none=True)
    prof = block_gradient_profile(net, x, y)
    net.zero_grad(set_to_none=True)
    ln, lr_ = prof["log10_norm"], prof["log10_rms"]
    finite = math.isfinite(prof["loss"]) and all(math.isfinite(v) for v in ln)
    log_ratio = ln[0] - ln[-1] if finite else float("nan")
    layers = (6 * _he_n(depth) + 2) if family == "he2015" else depth + 2
    return {
        "family": family, "arch": arch, "norm": norm, "act": act, "init": init,
        "depth": len(_blocks(net)), "layers": layers, "seed": seed, "train_steps": config.train_steps,
        "dtype": str(dtype).replace("torch.", ""), "loss": prof["loss"], "finite": finite,
        "profile": {
            "names": prof["names"], "numel": prof["numel"], "log10_norm": ln, "log10_rms": lr_,
            "norm": [_exp10(v) for v in ln], "rms": [_exp10(v) for v in lr_],
        },
        "log10_ratio": log_ratio, "ratio_first_last": _exp10(log_ratio),
        "slope": fit_slope(lr_) if finite else float("nan"),
    }


def _exp10(v: float) -> float:
    if not math.isfinite(v):
        return v
    return 10.0 ** v if v > -320 else 0.0


def _take(it, n: int):
    while True:
        for b in it:
            yield b
            n -= 1
            if n == 0:
                return
        if n == 0:
            return


def run(config: FlowConfig | None = None, out: str | Path | RunDir | None = None, *,
        reuse: bool = True, progress: Callable[[int, int, dict], None] | None = None) -> FlowResult:
    """Run the grid and return its :class:`~resgrad.results.FlowResult`.

    With ``out``: a run folder (``config.json``, ``results.json``); a folder that finished
    this same config is reused, not recomputed (``reuse=False`` recomputes), and one that
    holds another config is refused, naming the fields that differ.
    ``progress(i, n, config_row)`` is called after each measured config.
    """
    config = config or FlowConfig()
    run_dir = None if out is None else out if isinstance(out, RunDir) else RunDir(out)
    if run_dir is None:
        return _compute(config, progress)
    cfg = jsonable(asdict(config))
    with run_dir.locked(read_only_ok=True):  # one writer; a finished folder can be read on read-only storage
        run_dir.claim({"kind": KIND, "config": cfg, "environment": environment(config.device)},
                      compare=lambda r: _comparable(r.get("config") or {}))
        if reuse and (done := run_dir.finished(FlowResult, cfg)) is not None:
            return done
        result = _compute(config, progress)
        run_dir.write_results(result)
    return result


def _compute(config: FlowConfig, progress: Callable[[int, int, dict], None] | None) -> FlowResult:
    threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        with torch.random.fork_rng(devices=[]):  # seeds per config; the caller's RNG is left as it was
            result = _run(config, progress)
    finally:
        torch.set_num_threads(threads)
    return result


def run_flow(config: FlowConfig | None = None, out_dir: str | Path | None = None, *,
             reuse: bool = True, progress: Callable[[int, int, dict], None] | None = None) -> FlowResult:
    """The flow experiment (the name of resgrad 0.1; same as :func:`run`)."""
    return run(config, out_dir, reuse=reuse, progress=progress)


# Fields that change where or how the grid is computed, not what it measures.
_FREE = ("device", "threads", "figure_formats")


def _comparable(cfg: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in cfg.items() if k not in _FREE}


def _run(config: FlowConfig, progress: Callable[[int, int, dict], None] | None) -> FlowResult:
    cfg = asdict(config)
    t0 = time.perf_counter()
    data = load_data(config.data)
    grid = [(f, a, n, act, i, d) for f in config.families for n in config.norms for act in config.activations
            for i in config.inits for d in (config.he_depths if f == "he2015" else config.depths)
            for a in config.archs]
    total = len(grid) * len(config.seeds)
    rows: list[dict[str, Any]] = []
    groups: list[dict[str, Any]] = []
    done = 0
    for gi, (family, arch, norm, act, init, depth) in enumerate(grid):
        seeds_rows = []
        for seed in config.seeds:
            r = _measure(config, data, family, arch, norm, act, init, depth, seed)
            r["group"] = gi
            seeds_rows.append(r)
            done += 1
            if progress is not None:
                progress(done, total, r)
        slopes = [r["slope"] for r in seeds_rows]
        L = seeds_rows[0]["depth"]
        finite = all(r["finite"] for r in seeds_rows)
        slope = stats.mean(slopes) if finite else float("nan")
        ci = stats.t_interval(slopes, config.ci_level) if finite else None
        v = verdict(slope, ci, L, config.threshold_decades)
        lrs = [r["log10_ratio"] for r in seeds_rows]
        log_ratio = stats.mean(lrs) if finite else float("nan")
        prof = [sum(c) / len(c) for c in zip(*(r["profile"]["log10_rms"] for r in seeds_rows), strict=True)]
        grp = {
            "family": family, "arch": arch, "norm": norm, "act": act, "init": init, "depth": L,
            "layers": seeds_rows[0]["layers"], "seeds": list(config.seeds),
            "slope": slope, "slope_ci": list(ci) if ci else None,
            "decades": slope * (L - 1) if finite else float("nan"),
            "log10_ratio": log_ratio, "ratio_first_last": _exp10(log_ratio), "verdict": v,
            "profile_log10_rms": prof,
        }
        groups.append(grp)
        for r in seeds_rows:
            r.update(slope_ci=grp["slope_ci"], decades=grp["decades"], verdict=v)
        rows.extend(seeds_rows)

    results: dict[str, Any] = {
        "config": cfg,
        "environment": environment(config.device),
        "data": {"name": data.name, "input_shape": list(data.input_shape),
                 "num_classes": data.num_classes,
                 "batch_size": {"mlp": config.batch_size, "he2015": config.he_batch_size}},
        "conventions": CONVENTIONS,
        "thresholds": {"decades": config.threshold_decades, "ci_level": config.ci_level},
        "configs": rows,
        "groups": groups,
        "summary": _summary(groups),
    }
    if config.signal is not None:
        from .signal import measure_signal

        sig = measure_signal(config.signal, data)
        results["signal"] = {**sig, "fits": sig["fits"]["shattering"]}
    results["wall_time_s"] = time.perf_counter() - t0
    return FlowResult.of(jsonable(results))


CONVENTIONS = {
    "profile": "gradient of the loss w.r.t. the INPUT of each block, block 0 nearest the network input; "
               "norm over the whole batch tensor, rms = norm / sqrt(numel)",
    "ratio": "ratio_first_last = ||dL/dx_0|| / ||dL/dx_{L-1}|| (first block input over last block input); "
             "< 1: the gradient shrinks on its way back to the input",
    "slope": "least-squares slope of log10 rms against k = L-1-l (blocks crossed by the backward pass), "
             "decades per block; negative = vanishing; mean over seeds, CI = Student t across seeds",
    "decades": "slope * (L-1): the fitted log10 change of the gradient from the last block to the first",
    "verdict": "vanishing if decades <= -threshold and the CI's upper end < 0; exploding if decades >= "
               "+threshold and the CI's lower end > 0; healthy otherwise; non-finite if a loss or norm is "
               "NaN/Inf (one seed: the point estimate decides)",
}


def _summary(groups: list[dict[str, Any]]) -> dict[str, Any]:
    def pick(g: dict[str, Any]) -> dict[str, Any]:
        return {"log10_ratio": g["log10_ratio"], "decades": g["decades"], "verdict": g["verdict"]}

    largest: list[dict[str, Any]] = []
    by_key: dict[tuple, dict[str, dict[str, Any]]] = {}
    deepest: dict[str, int] = {}
    for g in groups:
        deepest[g["family"]] = max(deepest.get(g["family"], 0), g["depth"])
    for g in groups:
        if g["depth"] == deepest[g["family"]]:
            by_key.setdefault((g["family"], g["norm"], g["act"], g["init"], g["depth"]), {})[g["arch"]] = g
    for (family, norm, act, init, depth), d in by_key.items():
        largest.append({"family": family, "norm": norm, "act": act, "init": init, "depth": depth,
                        **{a: pick(g) for a, g in d.items()}})
    bn_plain = [{"family": g["family"], "act": g["act"], "init": g["init"], "depth": g["depth"], **pick(g)}
                for g in groups if g["arch"] == "plain" and g["norm"] == "batch"]
    counts: dict[str, dict[str, int]] = {}
    for g in groups:
        c = counts.setdefault(g["arch"], dict.fromkeys(VERDICTS, 0))
        c[g["verdict"]] += 1
    series: dict[tuple, list[dict[str, Any]]] = {}
    for g in groups:
        series.setdefault((g["family"], g["arch"], g["norm"], g["act"], g["init"]), []).append(g)
    trend = []
    for (family, arch, norm, act, init), gs in series.items():
        gs = sorted(gs, key=lambda g: g["depth"])
        xs, ys = [g["depth"] - 1 for g in gs], [g["decades"] for g in gs]
        trend.append({"family": family, "arch": arch, "norm": norm, "act": act, "init": init,
                      "depths": [g["depth"] for g in gs], "decades": ys, "rate_per_block": stats.slope(xs, ys)})
    return {"largest_depth": largest, "bn_plain": bn_plain, "depth_trend": trend, "verdict_counts": counts}
