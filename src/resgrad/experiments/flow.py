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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import stats
from .._checks import is_int
from ..data import DataBundle
from ..data import load as load_data
from ..executors import Executor
from ..io import jsonable
from ..nets.blocks import blocks as _blocks
from ..nets.mlp import ACTIVATIONS
from ..probes.gradients import block_gradient_profile
from ..results import FlowResult
from ..results.flow import FlowChunk
from ..rundir import RunDir
from ..verdicts import flow_verdict as verdict
from . import driver
from ._nets import FAMILIES, _he_n, build_net
from .config import Config as BaseConfig
from .config import check_int, check_number, check_one_of, check_subset, need
from .flow_chunks import fan_out, part_key
from .flow_summary import CONVENTIONS, VERDICTS, exp10
from .flow_summary import combine as _combine
from .signal import SignalConfig

__all__ = ["FlowConfig", "run_flow", "run", "compute", "fit_slope", "verdict", "SIZES", "FAMILIES", "KIND",
           "CHUNKS", "measure_chunk", "CONVENTIONS", "VERDICTS"]

KIND = "resgrad.flow"  # config.json's kind for a flow run folder
LABEL = "flow"
NEEDS_OUT = False  # without a folder the grid is measured in this process and nothing is written
REUSE_EXACT = True  # a finished grid is reused only for the very same config (threads, device included)
CHUNKS = 16  # parts of a grid sent out: enough to keep a few workers busy to the end; fixed so a
#             rerun with another --workers still finds (and reuses) the parts of a killed one
Result = FlowResult


@dataclass
class FlowConfig(BaseConfig):
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
    lr: float = 0.01  # learning rate for train_steps (per SGD step)
    dtype: str = "auto"  # "auto": float32, redone in float64 when anything is non-finite (deep
    #                       unnormalised residual nets overflow float32 in the forward pass)
    device: str = "cpu"
    threads: int = 1  # torch intra-op threads while measuring: these ops are small, and on a
    #                  shared machine a spinning second thread costs 10x (restored afterwards)
    threshold_decades: float = 2.0  # verdict: |fitted log10(first/last)| at least this many decades (100x) ...
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
        check_subset("families", self.families, FAMILIES)
        check_subset("archs", self.archs, ("plain", "residual"))
        check_subset("norms", self.norms, ("none", "batch"))
        check_subset("activations", self.activations, tuple(ACTIVATIONS))
        check_subset("inits", self.inits, ("he", "xavier"))
        for name in ("depths", "he_depths"):
            ds = getattr(self, name)
            need(bool(ds) and all(is_int(d) and d >= 2 for d in ds), name,
                 "integers >= 2 (blocks)", ds)
        need(bool(self.seeds), "seeds", "at least one seed", self.seeds)
        check_one_of("dtype", self.dtype, ("auto", "float32", "float64"))
        check_subset("figure_formats", self.figure_formats or ("png",), ("png", "svg", "pdf"))
        check_int("threads", self.threads, 0)
        check_int("batch_size", self.batch_size, 2)  # BatchNorm needs a batch
        check_int("he_batch_size", self.he_batch_size, 2)
        check_int("train_steps", self.train_steps, 0)
        check_number("threshold_decades", self.threshold_decades, lo=0, open_lo=True, rule="a finite number > 0 (decades)")
        check_number("ci_level", self.ci_level, lo=0, hi=1, open_lo=True, open_hi=True, rule="in (0, 1)")

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
    def from_dict(cls, d: dict[str, Any], *, source: str = "flow config") -> FlowConfig:
        """Strictly load a FlowConfig dict (an unknown or mistyped field is one line naming it)."""
        return cls.from_json(d, source=source)


Config = FlowConfig  # the experiment contract: this module's config type


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
            "norm": [exp10(v) for v in ln], "rms": [exp10(v) for v in lr_],
        },
        "log10_ratio": log_ratio, "ratio_first_last": exp10(log_ratio),
        "slope": fit_slope(lr_) if finite else float("nan"),
    }


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
        reuse: bool = True, progress: Callable[[int, int, dict], None] | None = None,
        executor: Executor | str | None = None, chunks: int = CHUNKS) -> FlowResult:
    """Run the grid and return its :class:`~resgrad.results.FlowResult`.

    With ``out``: a run folder (``config.json``, ``results.json``); a folder that finished
    this same config is reused, not recomputed (``reuse=False`` recomputes), and one that
    holds another config is refused, naming the fields that differ.
    ``progress(i, n, config_row)`` is called after each measured config (with an executor:
    after each chunk, with its last row).

    ``executor`` (an :class:`~resgrad.executors.Executor` or its name; needs ``out``): the
    grid goes out in ``chunks`` parts (group k, k + chunks, ...: every part gets shallow and
    deep nets alike) plus the signal measurement, each a Task writing its part under
    ``out/chunks/``; a rerun after a kill reuses the parts that validate. Every measurement
    seeds itself and runs at ``config.threads`` threads, so the numbers equal the in-process
    run's bit for bit, whatever the executor or its worker count.
    """
    if not is_int(chunks) or chunks < 1:
        raise ValueError(f"chunks must be an integer >= 1, received {chunks!r}")
    if out is None and executor is not None:
        raise ValueError("a flow grid through an executor needs a run folder for its parts; pass out=")
    return driver.run(config or FlowConfig(), out, executor=executor, log=None, progress=progress, reuse=reuse,
                      chunks=chunks)


def compute(config: FlowConfig, ctx: driver.Context) -> FlowResult:
    """The grid: in this process, or in ``ctx.input("chunks")`` parts through ``ctx.executor``."""
    if ctx.executor is None:
        return _compute(config, ctx.progress)
    if ctx.run_dir is None:
        raise ValueError("a flow grid through an executor needs a run folder for its parts; pass out=")
    return fan_out(config, ctx.run_dir, ctx.executor, ctx.input("chunks", CHUNKS), ctx.reuse, ctx.progress,
                   grid=_grid(config), comparable=comparable(asdict(config)))


def _compute(config: FlowConfig, progress: Callable[[int, int, Any], None]) -> FlowResult:
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
             reuse: bool = True, progress: Callable[[int, int, dict], None] | None = None,
             executor: Executor | str | None = None, chunks: int = CHUNKS) -> FlowResult:
    """The flow experiment (the name of resgrad 0.1; same as :func:`run`)."""
    return run(config, out_dir, reuse=reuse, progress=progress, executor=executor, chunks=chunks)


# Fields that change where or how the grid is computed, not what it measures.
_FREE = ("device", "threads", "figure_formats")


def comparable(cfg: dict[str, Any]) -> dict[str, Any]:
    """What a used folder must match: the config without the fields in ``_FREE``."""
    return {k: v for k, v in cfg.items() if k not in _FREE}


def _grid(config: FlowConfig) -> list[tuple[str, str, str, str, str, int]]:
    """The grid's groups (family, arch, norm, act, init, depth) in result order."""
    return [(f, a, n, act, i, d) for f in config.families for n in config.norms for act in config.activations
            for i in config.inits for d in (config.he_depths if f == "he2015" else config.depths)
            for a in config.archs]


def _measure_group(config: FlowConfig, data: DataBundle, gi: int, group: tuple) -> list[dict[str, Any]]:
    """One group's measurements, one per seed in config order."""
    rows = []
    for seed in config.seeds:
        r = _measure(config, data, *group, seed)
        r["group"] = gi
        rows.append(r)
    return rows


def _run(config: FlowConfig, progress: Callable[[int, int, Any], None]) -> FlowResult:
    t0 = time.perf_counter()
    data = load_data(config.data)
    grid = _grid(config)
    total = len(grid) * len(config.seeds)
    per_group: list[list[dict[str, Any]]] = []
    done = 0
    for gi, group in enumerate(grid):
        rows = _measure_group(config, data, gi, group)
        per_group.append(rows)
        for r in rows:
            done += 1
            progress(done, total, r)
    signal = None
    if config.signal is not None:
        from .signal import measure_signal

        signal = measure_signal(config.signal, data)
    return _combine(config, data, grid, per_group, signal, t0)


def measure_chunk(config: dict[str, Any], run_dir: str) -> dict[str, Any]:
    """A Task: measure one part of a flow grid into ``run_dir`` (a FlowChunk results.json).

    ``config``: ``flow`` (the FlowConfig as a dict), ``part`` ("grid" or "signal"),
    ``chunk`` and ``chunks`` (the grid part holds groups ``chunk::chunks``).
    """
    flow = FlowConfig.from_dict(config["flow"], source=f"{run_dir} task")
    part, k, n = config["part"], int(config["chunk"]), int(config["chunks"])
    threads = torch.get_num_threads()
    if flow.threads:
        torch.set_num_threads(flow.threads)  # the in-process run's threads, so the same bits
    try:
        with torch.random.fork_rng(devices=[]):
            data = load_data(flow.data)
            signal = None
            gis: list[int] = []
            rows: list[dict[str, Any]] = []
            if part == "signal":
                from .signal import measure_signal

                signal = measure_signal(flow.signal, data)
            else:
                grid = _grid(flow)
                gis = list(range(k, len(grid), n))
                for gi in gis:
                    rows += _measure_group(flow, data, gi, grid[gi])
    finally:
        torch.set_num_threads(threads)
    key = part_key(comparable(asdict(flow)), part, k, n)
    chunk = FlowChunk.of(jsonable({"config": key, "groups": gis, "configs": rows, "signal": signal}))
    RunDir(run_dir).write_results(chunk)
    return {"part": part, "chunk": k, "groups": len(gis)}
