"""The degradation experiment: plain and residual twins of growing depth, one recipe.

He et al. 2015 (arXiv 1512.03385, §4.2, Fig. 1 and 6): deeper plain nets have *higher*
training error than shallower ones, which the residual twins (same depth, same
parameters with option-A shortcuts) do not. Here every (depth, architecture, seed) is one
resumable ``resgrad.fit`` run in ``out_dir/runs/<model>-s<seed>/``; a killed experiment
rerun skips finished runs and resumes the interrupted one from its checkpoint.

Per epoch, a :class:`~resgrad.probes.GradientMonitor` also records the gradient norm at
every block's input on the epoch's first step (the first is the net at initialisation).

The result is a :class:`resgrad.results.DegradationResult` (results/degradation.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import stats
from ..data import DataBundle
from ..data import load as load_data
from ..executors import Executor, Task
from ..io import environment, jsonable
from ..nets import build_for
from ..nets.he2015 import valid_depths
from ..nets.registry import TWIN_UNITS, twin_names
from ..probes import GradientMonitor
from ..results import DegradationResult
from ..rundir import RunDir
from ..train import RUN_KIND, TrainConfig, fit
from . import driver
from .config import Config as BaseConfig
from .config import check_one_of, need

__all__ = ["DegradationConfig", "load_for", "run", "run_degradation", "compute", "twin_names", "train_run",
           "train_runs", "read_run", "count_params", "fingerprint", "KIND"]

KIND = "resgrad.degradation"  # config.json's kind for a degradation run folder
LABEL = "degradation"
Result = DegradationResult


@dataclass
class DegradationConfig(BaseConfig):
    """What to train. Errors are reported as fractions in [0, 1]."""

    data: str = "mnist1d"  # dataset name for resgrad.data.load
    data_kwargs: dict = field(default_factory=dict)  # e.g. {"data_dir": ...} for cifar10
    n_train: int | None = None  # use only the first n training examples (quick runs); None: all
    n_test: int | None = None  # likewise for the test set (examples)
    depths: tuple[int, ...] = (20, 56, 110)  # layers, 6n+2 (He et al. 2015 §4.2)
    unit: str = "post"  # "post": the 2015 nets; "pre": pre-activation (He et al. 2016)
    seeds: tuple[int, ...] = (0,)  # one run per seed and model
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=30))  # same recipe for all
    monitor: bool = True  # record the per-block gradient profile once per epoch (on its first step)
    # (depth, iterations) at warmup_lr first, for the depths that need it: He et al. 2015
    # §4.2 warm ResNet-110 at lr 0.01 for ~400 iterations; every other net uses train's.
    warmup: tuple[tuple[int, int], ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.train, dict):
            self.train = TrainConfig(**self.train)
        self.depths = tuple(int(d) for d in self.depths)
        self.seeds = tuple(int(s) for s in self.seeds)
        self.warmup = tuple((int(d), int(n)) for d, n in self.warmup)
        need(bool(self.depths), "depths", "at least one depth, e.g. (20, 56) (depths is empty)", self.depths)
        check_one_of("unit", self.unit, tuple(TWIN_UNITS))
        # The twins are He et al.'s nets: 6n+2 layers (pre-activation also 9n+2, bottleneck blocks).
        ok = set(valid_depths("basic", max(self.depths))) | (
            set(valid_depths("bottleneck", max(self.depths))) if self.unit == "pre" else set())
        bad = [d for d in self.depths if d not in ok]
        need(not bad, "depths", "6n+2 layers, as He et al. 2015's nets (8, 14, 20, 32, 44, 56, 110, ...)", bad)


Config = DegradationConfig  # the experiment contract: this module's config type


class _EpochProfile(GradientMonitor):
    """Measure block-input gradients on each epoch's first step; write them with the epoch.

    A mid-epoch checkpoint (SIGTERM) carries the profile already measured for the epoch in
    progress, so the resumed run writes the same epoch row as an uninterrupted one.
    """

    def __init__(self, model: nn.Module, steps_per_epoch: int) -> None:
        super().__init__(model, schedule=lambda s: s % steps_per_epoch == 0, params=False, activations="blocks")
        self._spe = steps_per_epoch
        self._carried: list[float | None] | None = None  # this epoch's profile, from a mid-epoch checkpoint

    def _profile(self) -> list[float | None] | None:
        try:
            return self.block_profile()  # the last measured step: this epoch's first
        except ValueError:  # nothing measured in this process: resumed mid-epoch
            return self._carried

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        if self._step % self._spe:  # a checkpoint inside an epoch whose first step was measured
            state["profile"] = self._profile()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._carried = state.get("profile")

    def on_train_epoch_end(self, model: nn.Module, epoch: int, metrics: dict[str, Any]) -> None:
        prof, self._carried = self._profile(), None
        if prof is None:  # a checkpoint written before this epoch carried profiles (older runs)
            return
        metrics["grad_block_norms"] = prof
        first, last = prof[0], prof[-1]
        metrics["grad_ratio_first_last"] = first / last if first is not None and last else None


def load_for(config: DegradationConfig) -> DataBundle:
    """The dataset of ``config``, cut to ``n_train``/``n_test`` when they are set."""
    data = load_data(config.data, **config.data_kwargs)
    if config.n_train is not None or config.n_test is not None:
        data = data.subset(config.n_train, config.n_test)
    return data


def _data_spec(config: DegradationConfig) -> dict[str, Any]:
    """What a worker needs to load the same examples: plain data, part of every task."""
    return jsonable({"data": config.data, "data_kwargs": config.data_kwargs, "n_train": config.n_train,
                     "n_test": config.n_test})


def fingerprint(data: DataBundle) -> dict[str, Any]:
    """Shapes and float64 sums of a dataset: a worker that loads other examples than the
    parent was given (a stale cache, another data folder) is caught before it trains."""
    return jsonable({"name": data.name, "train": [list(data.x_train.shape), float(data.x_train.double().sum()),
                                                   int(data.y_train.sum())],
                     "test": [list(data.x_test.shape), float(data.x_test.double().sum()), int(data.y_test.sum())]})


# Datasets loaded in this process, by data spec: a worker trains many runs on one dataset.
# The parent puts the bundle it was given here, so in-process runs train on that very object.
_DATA: dict[str, DataBundle] = {}
_PRINTS: dict[int, dict[str, Any]] = {}  # fingerprints by id of a bundle in _DATA


def _data_for(spec: dict[str, Any]) -> DataBundle:
    key = json.dumps({k: spec[k] for k in ("data", "data_kwargs", "n_train", "n_test")}, sort_keys=True)
    if key not in _DATA:
        cfg = DegradationConfig(data=spec["data"], data_kwargs=dict(spec["data_kwargs"]), n_train=spec["n_train"],
                                n_test=spec["n_test"])
        _DATA[key] = load_for(cfg)
    data = _DATA[key]
    want = spec.get("fingerprint")
    if want is not None and _PRINTS.setdefault(id(data), fingerprint(data)) != want:
        raise ValueError(f"this worker loaded other examples for {spec['data']!r} than the parent process holds "
                         f"({fingerprint(data)} vs {want}); give every worker the same data folder and cache "
                         "(RESGRAD_DATA, RESGRAD_CACHE), or run with --workers 1")
    return data


def train_run(config: dict[str, Any], run_dir: str) -> dict[str, Any]:
    """One training run, the unit of work an executor runs (``Task.fn``).

    ``config``: ``model`` (registry name), ``model_kwargs`` (optional builder options),
    ``seed``, ``train`` (TrainConfig fields, the seed included), ``monitor``, ``data`` (a data spec: name, kwargs, n_train, n_test, fingerprint)
    and ``progress``. The weights are initialised from ``torch.manual_seed(seed)``, so the run is
    a function of its config wherever it runs; ``fit`` resumes it from ``run_dir``.
    """
    data = _data_for(config["data"])
    name, seed = config["model"], int(config["seed"])
    kwargs = dict(config.get("model_kwargs") or {})  # builder options (a Transformer's task, vocab, ...)
    torch.manual_seed(seed)  # initial weights are part of the run's seed
    model = build_for(name, data.input_shape, data.num_classes, **kwargs)
    spec = {"name": name, "kwargs": kwargs, "input_shape": list(data.input_shape), "num_classes": data.num_classes}
    train = TrainConfig(**config["train"])
    cbs = [_EpochProfile(model, data.num_batches(train.batch_size))] if config.get("monitor", True) else []
    res = fit(model, data, train, callbacks=cbs, out_dir=run_dir, model_spec=spec, progress=config.get("progress"))
    return {"final": {k: res.final.get(k) for k in ("train_loss", "train_error", "test_loss", "test_error")}}


def count_params(name: str, data: DataBundle, **kwargs: Any) -> int:
    """Parameters of ``name`` built for ``data`` (on the meta device: nothing allocated, no RNG drawn)."""
    try:
        with torch.device("meta"):
            model = build_for(name, data.input_shape, data.num_classes, **kwargs)
    except (NotImplementedError, RuntimeError):
        with torch.random.fork_rng(devices=[]):
            model = build_for(name, data.input_shape, data.num_classes, **kwargs)
    return sum(p.numel() for p in model.parameters())


def read_run(run_dir: RunDir) -> dict[str, Any]:
    """A finished training run as the parent sees it: read from its folder, never from memory.

    Returns ``params``, ``history`` (metrics rows without the gradient columns), ``final``
    (the last epoch's errors and losses) and ``grad`` (one profile per epoch that has one).
    """
    record = run_dir.read_config(RUN_KIND)
    rows = run_dir.read_metrics()
    total = (record.get("schedule") or {}).get("total_steps")
    if not rows or (total is not None and rows[-1].get("steps") != total):
        done = rows[-1].get("steps") if rows else 0
        raise RuntimeError(f"{run_dir.path} stopped at step {done} of {total}: the run did not finish; rerun the "
                           "command to resume it")
    last = rows[-1]
    return {
        "params": int(record["parameters"]),
        "history": [{k: v for k, v in h.items() if not k.startswith("grad_")} for h in rows],
        "final": {k: last.get(k) for k in ("train_loss", "train_error", "test_loss", "test_error")},
        "grad": [{"epoch": h["epoch"], "block_norms": h["grad_block_norms"],
                  "ratio_first_last": h.get("grad_ratio_first_last")}
                 for h in rows if "grad_block_norms" in h],
    }


def train_runs(
    jobs: Sequence[dict[str, Any]],
    data: DataBundle,
    executor: Executor,
    *,
    log: Callable[[str], None] = print,
    progress: driver.Progress | bool | Callable[[int, int, Any], None] | None = None,
) -> list[dict[str, Any]]:
    """Train ``jobs`` (each: ``model``, ``seed``, ``train``, ``monitor``, ``data`` spec, ``run_dir``,
    ``label``) through ``executor``; return each run read back from its folder, in job order.

    ``progress``: as everywhere (:class:`resgrad.experiments.driver.Progress`): training bars
    (in this process only: bars of parallel runs would interleave), or ``progress(done, n,
    label)`` after each run."""
    prog = driver.Progress(progress)
    spec_keys: set[str] = set()
    for j in jobs:  # in-process runs train on the bundle given, not a fresh load
        spec = j["data"]
        key = json.dumps({k: spec[k] for k in ("data", "data_kwargs", "n_train", "n_test")}, sort_keys=True)
        if key not in _DATA:
            _DATA[key] = data
            spec_keys.add(key)
    show = prog.bars if executor.in_process else False  # bars of parallel runs would interleave
    tasks = [Task(fn=f"{__name__}:train_run", config={**{k: v for k, v in j.items() if k not in ("run_dir", "label")},
                                                       "progress": show},
                  run_dir=j["run_dir"], label=j["label"]) for j in jobs]
    params = {j["label"]: count_params(j["model"], data, **(j.get("model_kwargs") or {})) for j in jobs}
    n = len(tasks)
    finished_runs = [0]

    def started(i: int, t: Task, _: Any) -> None:
        log(f"[{i + 1}/{n}] {t.config['model']} seed {t.config['seed']}: {params[t.label]:,} parameters")

    def finished(i: int, t: Task, out: Any) -> None:
        f = (out or {}).get("final") or {}
        who = "" if executor.in_process else f"[{i + 1}/{n}] {t.label} done: "
        log(f"      {who}train error {_fmt(f.get('train_error'))}, test error {_fmt(f.get('test_error'))}")
        finished_runs[0] += 1
        prog(finished_runs[0], n, t.label)

    # Longest first on a pool (LPT scheduling): the deepest nets started last would leave the
    # other workers idle at the end. Folders are read back in job order, so no number moves.
    todo = tasks if executor.in_process else sorted(tasks, key=lambda t: -params[t.label])
    try:
        executor.map(todo, on_start=started, on_done=finished)
    finally:
        for key in spec_keys:
            _PRINTS.pop(id(_DATA.pop(key)), None)
    return [read_run(RunDir(t.run_dir)) for t in tasks]


def _fmt(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, (int, float)) else "nan"


def run(
    config: DegradationConfig,
    out: str | Path | RunDir,
    *,
    data: DataBundle | None = None,
    log: Callable[[str], None] | None = print,
    progress: driver.Progress | bool | Callable[[int, int, Any], None] | None = None,
    executor: Executor | str | None = None,
) -> DegradationResult:
    """Train every (depth, plain|residual, seed) with one recipe (``out/runs/<model>-s<seed>``).

    ``data``: the examples to train on (default: ``load_for(config)``). ``executor``: where the
    runs train (an :class:`~resgrad.executors.Executor`, left open, or its name, closed here;
    None: one after another in this process). A finished folder of the same config returns its
    result; an unfinished one resumes each run from its checkpoint.
    """
    return driver.run(config, out, executor=executor, log=log, progress=progress, data=data)


def comparable(config: dict[str, Any]) -> dict[str, Any]:
    """What a used folder must match: the config without where the runs train."""
    train = {k: v for k, v in (config.get("train") or {}).items() if k not in ("device", "eval_batch_size")}
    return {**config, "train": train}


def device_of(config: DegradationConfig) -> str:
    return config.train.device


def compute(config: DegradationConfig, ctx: driver.Context) -> DegradationResult:
    """Train the twins through ``ctx.pool()``; read every run back from its folder."""
    assert ctx.run_dir is not None  # NEEDS_OUT: the driver refuses a run without a folder
    out = ctx.run_dir.path
    data = ctx.input("data")
    data = load_for(config) if data is None else data
    spec = {**_data_spec(config), "fingerprint": fingerprint(data)}
    jobs = []
    for depth in config.depths:
        for arch, name in zip(("plain", "residual"), twin_names(depth, config.unit), strict=True):
            for seed in config.seeds:
                warm = dict(config.warmup).get(depth, config.train.warmup_iters)
                train = replace(config.train, seed=seed, warmup_iters=warm)
                jobs.append({"model": name, "seed": seed, "train": asdict(train), "monitor": config.monitor,
                             "data": spec, "run_dir": str(out / "runs" / f"{name}-s{seed}"),
                             "label": f"{name}-s{seed}", "depth": depth, "arch": arch})
    got = train_runs([{k: v for k, v in j.items() if k not in ("depth", "arch")} for j in jobs], data, ctx.pool(),
                     log=ctx.log, progress=ctx.progress)
    runs = [{"model": j["model"], "arch": j["arch"], "depth": j["depth"], "seed": j["seed"],
             "params": g["params"], "run_dir": j["run_dir"], "history": g["history"], "final": g["final"],
             "grad": g["grad"]} for j, g in zip(jobs, got, strict=True)]
    table = []
    for depth in config.depths:
        row: dict[str, Any] = {"depth": depth}
        for arch in ("plain", "residual"):
            rs = [r for r in runs if r["depth"] == depth and r["arch"] == arch]
            tr = stats.summary([r["final"]["train_error"] for r in rs])
            te = stats.summary([r["final"]["test_error"] for r in rs])
            row[arch] = {"model": rs[0]["model"], "train_error": tr.mean, "test_error": te.mean,
                         "train_error_std": tr.std, "test_error_std": te.std, "n_seeds": len(rs)}
        table.append(row)
    return DegradationResult.of(jsonable({
        "config": asdict(config),
        "data": {"name": data.name, "input_shape": list(data.input_shape), "num_classes": data.num_classes,
                 "n_train": len(data.x_train), "n_test": len(data.x_test)},
        "environment": environment(config.train.device),
        "runs": runs,
        "table": table,
    }))


def run_degradation(config: DegradationConfig, out_dir: str | Path, *, data: DataBundle | None = None,
                    log: Callable[[str], None] | None = print,
                    progress: driver.Progress | bool | Callable[[int, int, Any], None] | None = None,
                    executor: Executor | str | None = None) -> DegradationResult:
    """The degradation experiment (the name of resgrad 0.1; same as :func:`run`)."""
    return run(config, out_dir, data=data, log=log, progress=progress, executor=executor)
