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

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import stats
from ..data import DataBundle
from ..data import load as load_data
from ..io import environment, jsonable
from ..nets import build_for
from ..nets.registry import TWIN_UNITS, twin_names
from ..probes import GradientMonitor
from ..results import DegradationResult
from ..rundir import RunDir
from ..train import TrainConfig, fit

__all__ = ["DegradationConfig", "load_for", "run", "run_degradation", "twin_names"]


@dataclass
class DegradationConfig:
    """What to train. Errors are reported as fractions in [0, 1]."""

    data: str = "mnist1d"  # dataset name for resgrad.data.load
    data_kwargs: dict = field(default_factory=dict)  # e.g. {"data_dir": ...} for cifar10
    n_train: int | None = None  # use only the first n training examples (quick runs)
    n_test: int | None = None  # likewise for the test set
    depths: tuple[int, ...] = (20, 56, 110)  # layers, 6n+2 (He et al. 2015 §4.2)
    unit: str = "post"  # "post": the 2015 nets; "pre": pre-activation (He et al. 2016)
    seeds: tuple[int, ...] = (0,)  # one run per seed and model
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=30))  # same recipe for all
    monitor: bool = True  # record the per-block gradient profile once per epoch
    # (depth, iterations) at warmup_lr first, for the depths that need it: He et al. 2015
    # §4.2 warm ResNet-110 at lr 0.01 for ~400 iterations; every other net uses train's.
    warmup: tuple[tuple[int, int], ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.train, dict):
            self.train = TrainConfig(**self.train)
        self.depths = tuple(int(d) for d in self.depths)
        self.seeds = tuple(int(s) for s in self.seeds)
        self.warmup = tuple((int(d), int(n)) for d, n in self.warmup)
        if not self.depths:
            raise ValueError("depths is empty; give at least one depth, e.g. (20, 56)")
        if self.unit not in TWIN_UNITS:
            raise ValueError(f"unit must be 'post' or 'pre', received {self.unit!r}")


class _EpochProfile(GradientMonitor):
    """Measure block-input gradients on each epoch's first step; write them with the epoch."""

    def __init__(self, model: nn.Module, steps_per_epoch: int) -> None:
        super().__init__(model, schedule=lambda s: s % steps_per_epoch == 0, params=False, activations="blocks")

    def on_train_epoch_end(self, model: nn.Module, epoch: int, metrics: dict[str, Any]) -> None:
        try:
            prof = self.block_profile()
        except ValueError:  # resumed mid-epoch: this epoch's first step ran before the kill
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


def run(
    config: DegradationConfig,
    out: str | Path | RunDir,
    *,
    data: DataBundle | None = None,
    log: Callable[[str], None] = print,
    progress: bool | None = None,
) -> DegradationResult:
    """Train every (depth, plain|residual, seed) with one recipe (``out/runs/<model>-s<seed>``)."""
    out = out.path if isinstance(out, RunDir) else Path(out)
    data = load_for(config) if data is None else data
    spe = data.num_batches(config.train.batch_size)
    runs = []
    jobs = [(d, arch, name, s) for d in config.depths
            for arch, name in zip(("plain", "residual"), twin_names(d, config.unit), strict=True)
            for s in config.seeds]
    for i, (depth, arch, name, seed) in enumerate(jobs, 1):
        run_dir = RunDir(out / "runs" / f"{name}-s{seed}")
        torch.manual_seed(seed)  # initial weights are part of the run's seed
        model = build_for(name, data.input_shape, data.num_classes)
        spec = {"name": name, "kwargs": {}, "input_shape": list(data.input_shape), "num_classes": data.num_classes}
        warm = dict(config.warmup).get(depth, config.train.warmup_iters)
        train = replace(config.train, seed=seed, warmup_iters=warm)
        cbs = [_EpochProfile(model, spe)] if config.monitor else []
        log(f"[{i}/{len(jobs)}] {name} seed {seed}: {sum(p.numel() for p in model.parameters()):,} parameters")
        res = fit(model, data, train, callbacks=cbs, out_dir=run_dir, model_spec=spec, progress=progress)
        final = res.final
        log(f"      train error {final.get('train_error', float('nan')):.3f}, "
            f"test error {final.get('test_error', float('nan')):.3f}")
        runs.append({
            "model": name, "arch": arch, "depth": depth, "seed": seed,
            "params": sum(p.numel() for p in model.parameters()),
            "run_dir": str(run_dir.path),
            "history": [{k: v for k, v in h.items() if not k.startswith("grad_")} for h in res.history],
            "final": {k: final.get(k) for k in ("train_loss", "train_error", "test_loss", "test_error")},
            "grad": [{"epoch": h["epoch"], "block_norms": h["grad_block_norms"],
                      "ratio_first_last": h.get("grad_ratio_first_last")}
                     for h in res.history if "grad_block_norms" in h],
        })
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
                    log: Callable[[str], None] = print, progress: bool | None = None) -> DegradationResult:
    """The degradation experiment (the name of resgrad 0.1; same as :func:`run`)."""
    return run(config, out_dir, data=data, log=log, progress=progress)
