"""A sweep: a grid of independent training runs, through an executor, into one folder.

The grid is datasets x models x seeds, the models given by name or as a family and its
depths (``he2015``: the He et al. 2015 plain/residual twins of depth 6n+2; ``mlp``: the
plain/residual MLPs of that many blocks). Every run is the degradation experiment's
training run (``degradation.train_run``: the same seeding, recipe and gradient profile),
so the study's degradation stage is the sweep of family ``he2015`` over one dataset::

    out/config.json                         the resolved SweepConfig (a rerun must match it)
    out/runs/<dataset>/<model>-s<seed>/     one resumable training run each
    out/results.json                        the SweepResult (results/sweep.py)

A killed sweep rerun resumes its unfinished runs from their checkpoints and reuses the
finished ones; a finished sweep returns its result. Configs come from TOML
(:func:`load_config`); every unknown key or bad value is one line naming it.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .. import stats
from .._checks import is_int, is_number
from ..data import DATASETS
from ..executors import Executor
from ..io import environment, jsonable
from ..nets.registry import TWIN_UNITS, twin_names
from ..results import SweepResult
from ..results.sweep import METRICS
from ..rundir import RunDir
from ..train import TrainConfig
from . import driver
from .config import Config as BaseConfig
from .degradation import DegradationConfig, fingerprint, load_for, train_runs

__all__ = ["SweepConfig", "FAMILIES", "KIND", "load_config", "parse_config", "model_names", "run", "run_sweep",
           "compute"]

KIND = "resgrad.sweep"  # config.json's kind for a sweep folder
LABEL = "sweep"
Result = SweepResult
FAMILIES = ("he2015", "mlp")


@dataclass
class SweepConfig(BaseConfig):
    """The grid and its one training recipe (TOML: the same keys; ``[train]``, ``[data_kwargs.<name>]``)."""

    models: tuple[str, ...] = ()  # registry names ("resnet20", "plainmlp-8x64"); if given, family/depths are unused
    designs: tuple[str, ...] = ()  # residual designs ("preln", "mhc", "fixup"): each at every depth, instead of family
    family: str = "he2015"  # "he2015": twins of depth 6n+2; "mlp": MLPs of `depth` blocks and `width`
    depths: tuple[int, ...] = (20, 56)  # layers (he2015) or blocks (mlp)
    archs: tuple[str, ...] = ("plain", "residual")  # which twins of each depth
    unit: str = "post"  # he2015: "post" (2015 nets) or "pre" (pre-activation, He et al. 2016)
    width: int = 64  # mlp: hidden width
    seeds: tuple[int, ...] = (0, 1, 2)  # repeats of every cell; the statistics are over them
    datasets: tuple[str, ...] = ("mnist1d",)  # resgrad.data names
    data_kwargs: dict[str, dict[str, Any]] = field(default_factory=dict)  # per dataset: loader arguments
    n_train: int | None = None  # use only the first n training examples of every dataset
    n_test: int | None = None  # likewise for the test sets
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=12, lr=0.02))  # one recipe for all
    monitor: bool = True  # record the per-block gradient profile once per epoch (the gradient ratios)
    warmup: tuple[tuple[int, int], ...] = ()  # (depth, iterations at train.warmup_lr) for the depths that need it
    level: float = 0.95  # confidence level of the intervals over seeds

    def __post_init__(self) -> None:
        if isinstance(self.train, dict):
            self.train = TrainConfig(**self.train)
        self.models = tuple(str(m).strip().lower() for m in self.models)
        self.designs = tuple(str(m).strip().lower() for m in self.designs)
        self.depths = tuple(int(d) for d in self.depths)
        self.archs = tuple(self.archs)
        self.seeds = tuple(int(s) for s in self.seeds)
        self.datasets = tuple(str(d) for d in self.datasets)
        self.warmup = tuple((int(d), int(n)) for d, n in self.warmup)
        _check(self)

    def to_dict(self) -> dict[str, Any]:
        return jsonable(asdict(self))


Config = SweepConfig  # the experiment contract: this module's config type


def _check(c: SweepConfig) -> None:
    def need(ok: bool, what: str) -> None:
        if not ok:
            raise ValueError(what)

    need(bool(c.seeds), "seeds is empty; give at least one seed, e.g. seeds = [0, 1, 2]")
    need(all(s >= 0 for s in c.seeds) and len(set(c.seeds)) == len(c.seeds),
         f"seeds must be distinct integers >= 0, received {list(c.seeds)}")
    need(bool(c.datasets), f"datasets is empty; choose from {', '.join(DATASETS)}")
    for d in c.datasets:
        key = d.strip().lower().replace("-", "").replace("_", "")
        if key not in DATASETS:
            close = difflib.get_close_matches(key, DATASETS, n=2, cutoff=0.5)
            hint = f"did you mean {' or '.join(close)}? " if close else ""
            raise ValueError(f"datasets: unknown dataset {d!r}; {hint}choose from {', '.join(DATASETS)}")
    need(len(set(c.datasets)) == len(c.datasets), f"datasets has a repeat: {list(c.datasets)}")
    for d in c.data_kwargs:
        need(d in c.datasets, f"data_kwargs names {d!r}, which is not in datasets {list(c.datasets)}")
        need(isinstance(c.data_kwargs[d], dict), f"data_kwargs.{d} must be a table of loader arguments")
    if c.designs:
        from .designs import check_designs

        check_designs(c.designs)
    if not c.models and not c.designs:
        need(c.family in FAMILIES, f"family must be one of {', '.join(FAMILIES)}, received {c.family!r} "
                                   "(or list registry names in models)")
        need(bool(c.depths), "depths is empty; give at least one, e.g. depths = [20, 56]")
        need(bool(c.archs) and all(a in ("plain", "residual") for a in c.archs) and len(set(c.archs)) == len(c.archs),
             f"archs must be 'plain' and/or 'residual', received {list(c.archs)}")
        need(c.unit in TWIN_UNITS, f"unit must be 'post' or 'pre', received {c.unit!r}")
        if c.family == "he2015":
            bad = [d for d in c.depths if d < 8 or (d - 2) % 6]
            need(not bad, f"depths {bad}: He et al. 2015 nets have 6n+2 layers (8, 14, 20, 32, 44, 56, 110, ...)")
        else:
            need(all(d >= 1 for d in c.depths), f"depths must be >= 1 blocks for mlp, received {list(c.depths)}")
            need(c.width >= 1, f"width must be >= 1, received {c.width}")
    need(len(set(model_names(c))) == len(model_names(c)), f"models has a repeat: {list(model_names(c))}")
    for name in c.models or (model_names(c) if c.designs else ()):
        _check_model(name)
    need(c.n_train is None or c.n_train >= 2, f"n_train must be >= 2 or absent, received {c.n_train}")
    need(c.n_test is None or c.n_test >= 1, f"n_test must be >= 1 or absent, received {c.n_test}")
    need(0 < c.level < 1, f"level must be in (0, 1), e.g. 0.95, received {c.level}")


def _check_model(name: str) -> None:
    import torch

    from ..nets import build_for

    try:  # the meta device builds nothing real: an unknown name or depth is said up front
        with torch.device("meta"):
            build_for(name, (1, 8), 2)
    except ValueError as e:
        raise ValueError(f"models: {name!r}: {e}") from None
    except (NotImplementedError, RuntimeError):
        pass  # cannot build on meta: the real build in the run will tell


def model_names(c: SweepConfig) -> tuple[str, ...]:
    """The grid's models in order: ``models``, or per depth the family's twins in ``archs`` order."""
    if c.models:
        return c.models
    if c.designs:  # designs x depths (experiments/designs.py spells each design's registry name)
        from .designs import model_name

        return tuple(model_name(d, n) for n in c.depths for d in c.designs)
    out = []
    for d in c.depths:
        if c.family == "he2015":
            pair = dict(zip(("plain", "residual"), twin_names(d, c.unit), strict=True))
        else:
            pair = {"plain": f"plainmlp-{d}x{c.width}", "residual": f"resmlp-{d}x{c.width}"}
        out += [pair[a] for a in c.archs]
    return tuple(out)


def _arch_depth(name: str) -> tuple[str, int | None]:
    arch = ("plain" if re.match(r"^(pre)?plain", name) else
            "residual" if re.match(r"^(pre)?res", name) else "other")
    m = re.search(r"(\d+)", name)
    return arch, int(m.group(1)) if m else None


# ---- TOML ------------------------------------------------------------------------------


def _toml() -> Any:
    if sys.version_info >= (3, 11):
        import tomllib

        return tomllib
    try:
        import tomli
    except ImportError:
        raise ImportError("reading a sweep file on Python 3.10 needs tomli; pip install tomli "
                          "(or use Python >= 3.11, which has tomllib)") from None
    return tomli


_TYPES: dict[str, str] = {  # TOML key -> what it must hold, for one-line errors
    "models": "strs", "designs": "strs", "family": "str", "depths": "ints", "archs": "strs", "unit": "str", "width": "int",
    "seeds": "ints", "datasets": "strs", "data_kwargs": "table", "n_train": "int", "n_test": "int",
    "train": "table", "monitor": "bool", "warmup": "pairs", "level": "float",
}


def _typed(where: str, v: Any, kind: str) -> Any:
    ok = {
        "str": isinstance(v, str),
        "strs": isinstance(v, list) and all(isinstance(x, str) for x in v),
        "int": is_int(v),
        "ints": isinstance(v, list) and all(is_int(x) for x in v),
        "bool": isinstance(v, bool),
        "float": is_number(v),
        "table": isinstance(v, dict),
        "pairs": isinstance(v, list) and all(isinstance(p, list) and len(p) == 2 and all(is_int(x) for x in p)
                                             for p in v),
    }[kind]
    if not ok:
        want = {"str": "a string", "strs": 'a list of strings, e.g. ["mnist1d"]', "int": "an integer",
                "ints": "a list of integers, e.g. [0, 1, 2]", "bool": "true or false", "float": "a number",
                "table": "a table", "pairs": "a list of [depth, iterations] pairs, e.g. [[110, 400]]"}[kind]
        raise ValueError(f"{where} is {_show(v)}, expected {want}")
    return v


def _show(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 40 else s[:37] + "..."


def _unknown(where: str, key: str, known: list[str]) -> ValueError:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}? " if close else ""
    extra = ""
    if where == "" and key in {f.name for f in fields(TrainConfig)}:
        hint, extra = "", f"training options go in the [train] table ([train] {key} = ...); "
    at = f"[{where}] " if where else ""
    return ValueError(f"unknown key {at}{key!r}; {hint}{extra}known: {', '.join(known)}")


def parse_config(doc: dict[str, Any], *, source: str = "sweep config", device: str | None = None) -> SweepConfig:
    """A SweepConfig from parsed TOML; ``device`` (when given) overrides ``[train] device``."""
    try:
        known = list(_TYPES)
        kw: dict[str, Any] = {}
        for k, v in doc.items():
            if k not in _TYPES:
                raise _unknown("", k, known)
            kw[k] = _typed(k, v, _TYPES[k])
        train_keys = [f.name for f in fields(TrainConfig)]
        train = dict(kw.pop("train", {}))
        for k in train:
            if k not in train_keys:
                raise _unknown("train", k, train_keys)
        if device is not None:
            train["device"] = device
        try:
            kw["train"] = replace(SweepConfig().train, **train)
        except (ValueError, TypeError) as e:
            raise ValueError(f"[train] {e}") from None
        if "warmup" in kw:
            kw["warmup"] = [tuple(p) for p in kw["warmup"]]
        return SweepConfig(**kw)
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from None


def load_config(path: str | os.PathLike, *, device: str | None = None) -> SweepConfig:
    """Read a sweep TOML file (one-line errors naming the file, the key and the fix)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"sweep file {p} does not exist; pass a TOML file such as examples/sweep.toml")
    toml = _toml()
    try:
        doc = toml.loads(p.read_text())
    except toml.TOMLDecodeError as e:
        raise ValueError(f"{p} is not valid TOML ({e}); fix the line it names") from None
    return parse_config(doc, source=str(p), device=device)


# ---- the experiment --------------------------------------------------------------------


def comparable(config: dict[str, Any]) -> dict[str, Any]:
    """What a used folder must match: the sweep on any device (and evaluation batch size)."""
    train = {k: v for k, v in (config.get("train") or {}).items() if k not in ("device", "eval_batch_size")}
    keep = {k: v for k, v in config.items() if k != "designs" or v}  # a sweep before the designs axis had none
    return {**keep, "train": train}


def device_of(config: SweepConfig) -> str:
    return config.train.device


def _stat(values: list[float | None], level: float) -> dict[str, Any]:
    s = stats.summary(values)
    finite = [v for v in values if v is not None and math.isfinite(v)]
    ci = stats.t_interval(finite, level) if len(finite) >= 2 else None
    return {"mean": s.mean, "std": s.std, "ci_low": ci[0] if ci else None, "ci_high": ci[1] if ci else None,
            "level": level, "n": s.n, "n_finite": s.n_finite, "values": values}


def _log10(v: Any) -> float | None:
    return math.log10(v) if isinstance(v, (int, float)) and math.isfinite(v) and v > 0 else None


def run(
    config: SweepConfig,
    out: str | Path | RunDir,
    *,
    executor: Executor | str | None = None,
    log: Callable[[str], None] | None = print,
    progress: driver.Progress | bool | Callable[[int, int, Any], None] | None = None,
) -> SweepResult:
    """Run (or resume) the grid in ``out``; write and return its SweepResult.

    ``executor``: an :class:`~resgrad.executors.Executor` (left open) or its name (made and
    closed here); None: in this process, one run after another.
    """
    return driver.run(config, out, executor=executor, log=log, progress=progress)


def compute(config: SweepConfig, ctx: driver.Context) -> SweepResult:
    """Every run of the grid through ``ctx.pool()``, read back; the cells' statistics over seeds."""
    assert ctx.run_dir is not None  # NEEDS_OUT
    run_dir, log, progress, ex = ctx.run_dir, ctx.log, ctx.progress, ctx.pool()
    cfg = config.to_dict()
    names = model_names(config)
    runs: list[dict[str, Any]] = []
    infos = []
    log(f"sweep: {len(config.datasets)} dataset(s) x {len(names)} model(s) x {len(config.seeds)} seed(s) = "
        f"{len(config.datasets) * len(names) * len(config.seeds)} runs ({ex.describe()})")
    for ds in config.datasets:
        dcfg = DegradationConfig(data=ds, data_kwargs=dict(config.data_kwargs.get(ds, {})),
                                 n_train=config.n_train, n_test=config.n_test)
        data = load_for(dcfg)
        infos.append({"name": data.name, "input_shape": list(data.input_shape), "num_classes": data.num_classes,
                      "n_train": len(data.x_train), "n_test": len(data.x_test)})
        spec = jsonable({"data": ds, "data_kwargs": dcfg.data_kwargs, "n_train": config.n_train,
                         "n_test": config.n_test, "fingerprint": fingerprint(data)})
        jobs, meta = [], []
        for name in names:
            arch, depth = _arch_depth(name)
            for seed in config.seeds:
                warm = dict(config.warmup).get(depth, config.train.warmup_iters) if depth else \
                    config.train.warmup_iters
                train = replace(config.train, seed=seed, warmup_iters=warm)
                folder = run_dir.sub("runs").sub(ds).sub(f"{name}-s{seed}")
                jobs.append({"model": name, "seed": seed, "train": asdict(train), "monitor": config.monitor,
                             "data": spec, "run_dir": str(folder.path), "label": f"{ds}/{name}-s{seed}"})
                meta.append({"dataset": ds, "model": name, "arch": arch, "depth": depth, "seed": seed,
                             "run_dir": str(folder.path)})
        log(f"{ds}: {len(jobs)} runs")
        got = train_runs(jobs, data, ex, log=log, progress=progress)
        runs += [{**m, **g} for m, g in zip(meta, got, strict=True)]

    cells = []
    for ds in config.datasets:
        for name in names:
            rs = [r for r in runs if r["dataset"] == ds and r["model"] == name]
            rs.sort(key=lambda r: config.seeds.index(r["seed"]))
            init = [_log10(r["grad"][0]["ratio_first_last"]) if r["grad"] else None for r in rs]
            last = [_log10(r["grad"][-1]["ratio_first_last"]) if r["grad"] else None for r in rs]
            gi, gl = _stat(init, config.level), _stat(last, config.level)
            cells.append({
                "dataset": ds, "model": name, "arch": rs[0]["arch"], "depth": rs[0]["depth"],
                "seeds": [r["seed"] for r in rs],
                "metrics": {m: _stat([r["final"][m] for r in rs], config.level) for m in METRICS},
                "log10_grad_ratio_init": gi, "log10_grad_ratio_final": gl,
                "grad_ratio_init": 10 ** gi["mean"] if math.isfinite(gi["mean"]) else None,
                "grad_ratio_final": 10 ** gl["mean"] if math.isfinite(gl["mean"]) else None,
            })
    return SweepResult.of(jsonable({
        "config": cfg, "environment": environment(config.train.device), "data": infos, "runs": runs,
        "cells": cells,
    }))


def run_sweep(config: SweepConfig, out_dir: str | Path, *, executor: Executor | str | None = None,
              log: Callable[[str], None] | None = print,
              progress: driver.Progress | bool | Callable[[int, int, Any], None] | None = None) -> SweepResult:
    """The sweep (same as :func:`run`)."""
    return run(config, out_dir, executor=executor, log=log, progress=progress)
