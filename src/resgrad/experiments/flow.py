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
from ..executors import Executor, Task, make_executor
from ..io import environment, jsonable
from ..nets.blocks import blocks as _blocks
from ..nets.mlp import ACTIVATIONS
from ..probes.gradients import block_gradient_profile
from ..results import FlowResult
from ..results.flow import FlowChunk
from ..rundir import RunDir
from ..verdicts import flow_verdict as verdict
from ._nets import FAMILIES, _he_n, build_net
from .signal import SignalConfig

__all__ = ["FlowConfig", "run_flow", "run", "fit_slope", "verdict", "SIZES", "FAMILIES", "KIND", "CHUNKS",
           "measure_chunk"]

KIND = "resgrad.flow"  # config.json's kind for a flow run folder
CHUNKS = 16  # parts of a grid sent out: enough to keep a few workers busy to the end; fixed so a
#             rerun with another --workers still finds (and reuses) the parts of a killed one
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
    config = config or FlowConfig()
    run_dir = None if out is None else out if isinstance(out, RunDir) else RunDir(out)
    if run_dir is None:
        if executor is not None:
            raise ValueError("a flow grid through an executor needs a run folder for its parts; pass out=")
        return _compute(config, progress)
    if isinstance(chunks, bool) or not isinstance(chunks, int) or chunks < 1:
        raise ValueError(f"chunks must be an integer >= 1, received {chunks!r}")
    cfg = jsonable(asdict(config))
    with run_dir.locked(read_only_ok=True):  # one writer; a finished folder can be read on read-only storage
        run_dir.claim({"kind": KIND, "config": cfg, "environment": environment(config.device)},
                      compare=lambda r: _comparable(r.get("config") or {}))
        if reuse and (done := run_dir.finished(FlowResult, cfg)) is not None:
            return done
        if executor is None:
            result = _compute(config, progress)
        else:
            owned = not isinstance(executor, Executor)
            ex = make_executor(executor)
            try:
                result = _fan_out(config, run_dir, ex, chunks, reuse, progress)
            finally:
                if owned:
                    ex.close()
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
             reuse: bool = True, progress: Callable[[int, int, dict], None] | None = None,
             executor: Executor | str | None = None, chunks: int = CHUNKS) -> FlowResult:
    """The flow experiment (the name of resgrad 0.1; same as :func:`run`)."""
    return run(config, out_dir, reuse=reuse, progress=progress, executor=executor, chunks=chunks)


# Fields that change where or how the grid is computed, not what it measures.
_FREE = ("device", "threads", "figure_formats")


def _comparable(cfg: dict[str, Any]) -> dict[str, Any]:
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


def _run(config: FlowConfig, progress: Callable[[int, int, dict], None] | None) -> FlowResult:
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
            if progress is not None:
                progress(done, total, r)
    signal = None
    if config.signal is not None:
        from .signal import measure_signal

        signal = measure_signal(config.signal, data)
    return _combine(config, data, grid, per_group, signal, t0)


def _combine(config: FlowConfig, data: DataBundle, grid: list[tuple], per_group: list[list[dict[str, Any]]],
             signal: dict[str, Any] | None, t0: float) -> FlowResult:
    """The FlowResult of the grid's measurements (``per_group[g]``: group g's seeds in order)."""
    rows: list[dict[str, Any]] = []
    groups: list[dict[str, Any]] = []
    for (family, arch, norm, act, init, _), seeds_rows in zip(grid, per_group, strict=True):
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
        "config": asdict(config),
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
    if signal is not None:
        results["signal"] = {**signal, "fits": signal["fits"]["shattering"]}
    results["wall_time_s"] = time.perf_counter() - t0
    return FlowResult.of(jsonable(results))


# ---- the grid in chunks, through an executor ---------------------------------------------

def _part_key(config: FlowConfig, part: str, chunk: int, chunks: int) -> dict[str, Any]:
    return jsonable({"flow": _comparable(asdict(config)), "part": part, "chunk": chunk, "chunks": chunks})


def _unnull(v: Any) -> Any:
    # A raw measurement holds no None: a null in a part's JSON was a NaN/Inf (JSON has none). The
    # combined result nulls them again, so NaN for all of them gives the same FlowResult.
    if v is None:
        return float("nan")
    if isinstance(v, list):
        return [_unnull(x) for x in v]
    if isinstance(v, dict):
        return {k: _unnull(x) for k, x in v.items()}
    return v


def measure_chunk(config: dict[str, Any], run_dir: str) -> dict[str, Any]:
    """A Task: measure one part of a flow grid into ``run_dir`` (a FlowChunk results.json).

    ``config``: ``flow`` (the FlowConfig as a dict), ``part`` ("grid" or "signal"),
    ``chunk`` and ``chunks`` (the grid part holds groups ``chunk::chunks``).
    """
    flow = FlowConfig.from_dict(config["flow"])
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
    chunk = FlowChunk.of(jsonable({"config": _part_key(flow, part, k, n), "groups": gis, "configs": rows,
                                   "signal": signal}))
    RunDir(run_dir).write_results(chunk)
    return {"part": part, "chunk": k, "groups": len(gis)}


def _fan_out(config: FlowConfig, run_dir: RunDir, ex: Executor, chunks: int, reuse: bool,
             progress: Callable[[int, int, dict], None] | None) -> FlowResult:
    t0 = time.perf_counter()
    data = load_data(config.data)
    grid = _grid(config)
    n = min(chunks, len(grid))
    parts = [("grid", k, n) for k in range(n)] + ([("signal", 0, 1)] if config.signal is not None else [])
    folders = {p: run_dir.sub("chunks").sub(f"{p[0]}-{p[1]:03d}-of-{p[2]:03d}") for p in parts}
    flow_dict = jsonable(asdict(config))
    found: dict[tuple, FlowChunk] = {}
    if reuse:
        for p in parts:
            got = folders[p].finished(FlowChunk, _part_key(config, *p))  # a part that does not validate is redone
            if got is not None and (p[0] == "signal" or got.groups == list(range(p[1], len(grid), p[2]))):
                found[p] = got
    todo = [p for p in parts if p not in found]
    total = len(grid) * len(config.seeds)
    done = [sum(len(c.configs) for c in found.values())]

    def finished(i: int, t: Task, _: Any) -> None:
        p = todo[i]
        found[p] = folders[p].read_results(FlowChunk)
        done[0] += len(found[p].configs)
        if progress is not None and found[p].configs:
            progress(done[0], total, found[p].configs[-1])

    tasks = [Task(fn=f"{__name__}:measure_chunk",
                  config={"flow": flow_dict, "part": p[0], "chunk": p[1], "chunks": p[2]},
                  run_dir=str(folders[p].path), label=f"flow {p[0]} {p[1] + 1}/{p[2]}") for p in todo]
    ex.map(tasks, on_done=finished)
    per_group: list[list[dict[str, Any]] | None] = [None] * len(grid)
    for p in parts:
        if p[0] != "grid":
            continue
        rows = _unnull(found[p].configs)
        for gi in found[p].groups:
            per_group[gi] = [r for r in rows if r["group"] == gi]
    missing = [gi for gi, g in enumerate(per_group) if not g or len(g) != len(config.seeds)]
    if missing:
        raise RuntimeError(f"{run_dir.path / 'chunks'}: groups {missing[:5]} have no complete measurement; remove "
                           "that folder and rerun")
    signal = None
    if config.signal is not None:
        s = found[("signal", 0, 1)].signal
        signal = None if s is None else dict(s)
    return _combine(config, data, grid, per_group, signal, t0)  # type: ignore[arg-type]


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
