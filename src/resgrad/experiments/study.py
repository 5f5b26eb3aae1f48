"""The main job: gradient flow, degradation and the ensemble view, in one results.json.

``run_study(preset("default"), "runs/study-default")`` runs three stages into one folder::

    study-config.json        the resolved StudyConfig (a rerun must match it)
    flow/                    experiments/flow.py: the grid at initialisation
    degradation/runs/...     one resumable training run per (depth, plain|residual, seed)
    ensemble/                experiments/ensemble.py on the deepest trained pair
    results.json             everything (docs/results-schema.md), written atomically
    report.html              rendered from results.json only

Each stage reuses what a previous (killed) invocation finished: flow and ensemble by their
results.json, training runs through ``fit``'s checkpoints. A finished study rerun only
re-renders the report.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..io import environment, jsonable, read_json, write_json
from ..train import TrainConfig, load_run
from .degradation import DegradationConfig, load_for, run_degradation, twin_names
from .ensemble import EnsembleConfig, run_ensemble
from .flow import FlowConfig, run_flow

__all__ = ["StudyConfig", "PRESETS", "preset", "run_study"]

PRESETS = ("quick", "default", "he2015-cifar10")


@dataclass
class StudyConfig:
    """The three experiments of a study; each field is that experiment's own config."""

    preset: str = "default"  # the preset this came from (recorded; changes nothing itself)
    flow: FlowConfig = field(default_factory=FlowConfig)  # gradient flow at initialisation
    degradation: DegradationConfig = field(default_factory=DegradationConfig)  # plain vs residual training
    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)  # on the deepest trained pair
    device: str = "cpu"  # where training and measuring run

    def to_dict(self) -> dict[str, Any]:
        return jsonable(asdict(self))


def preset(
    name: str,
    *,
    device: str = "cpu",
    seeds: tuple[int, ...] | None = None,
    epochs: int | None = None,
    data_dir: str | None = None,
) -> StudyConfig:
    """A named study. ``epochs``/``seeds`` override the training part (e.g. to shorten on CPU)."""
    if name not in PRESETS:
        raise ValueError(f"preset must be one of {', '.join(PRESETS)}, received {name!r}")
    data_kwargs: dict[str, Any] = {}
    if name == "quick":
        # Seconds: for tests and a first look. MNIST-1D subset, two shallow depths.
        flow = FlowConfig.preset("quick", device=device)
        deg = DegradationConfig(depths=(8, 20), n_train=1000, n_test=500,
                                train=TrainConfig(epochs=3, device=device))
        ens = EnsembleConfig.preset("quick", device=device)
    elif name == "default":
        # The embedded default: MNIST-1D (Greydanus 2020), no downloads, ~5 min on 2 CPU cores.
        flow = FlowConfig.preset("default", inits=("he",), depths=(4, 16, 64, 256), device=device)
        # lr 0.02, not He et al.'s 0.1: 12 epochs leave no room for their warm-up, and at 0.1
        # ResNet-110 spent the budget recovering from its first steps (55.9% train error,
        # measured); at 0.02 it reaches 4.1%, while plain-56/110 stay at 60%/89% as at 0.1.
        deg = DegradationConfig(depths=(20, 56, 110), train=TrainConfig(epochs=12, lr=0.02, device=device))
        # 200 sampled paths per length (Veit et al. used 1,000: `resgrad paths` does that),
        # lesion errors on 500 test examples: keeps the stage near a minute on a CPU.
        ens = EnsembleConfig.preset("default", samples=200, examples=256, eval_examples=500, trials=3,
                                    device=device)
    else:
        # He et al. 2015 §4.2 on CIFAR-10 (2-D nets, option A, the full recipe): meant for a GPU.
        if data_dir is not None:
            data_kwargs["data_dir"] = str(data_dir)
        flow = FlowConfig.preset("default", device=device)
        deg = DegradationConfig(data="cifar10", data_kwargs=data_kwargs, depths=(20, 32, 44, 56, 110),
                                train=TrainConfig(epochs=164, device=device),
                                warmup=((110, 400),))  # ResNet-110: lr 0.01 for ~400 iterations (§4.2)
        ens = EnsembleConfig.preset("default", device=device)
    if seeds is not None:
        deg.seeds = tuple(int(s) for s in seeds)
    if epochs is not None:
        deg.train = TrainConfig(**{**asdict(deg.train), "epochs": int(epochs)})
    # The ensemble stage measures the deepest trained pair (recorded under these names).
    ens.plain, ens.residual = twin_names(max(deg.depths), deg.unit)
    ens.data, ens.data_kwargs = deg.data, dict(data_kwargs)
    return StudyConfig(preset=name, flow=flow, degradation=deg, ensemble=ens, device=device)


def _same_or_fail(path: Path, cfg: dict[str, Any]) -> None:
    if path.is_file():
        old = read_json(path)
        if old != cfg:
            diff = sorted(k for k in set(old) | set(cfg) if old.get(k) != cfg.get(k))
            raise ValueError(
                f"{path.parent} holds a study with a different config (differs in {', '.join(diff)}); "
                f"use a new --out folder, or remove {path.parent} to start over"
            )
    else:
        write_json(path, cfg)


def run_study(
    config: StudyConfig,
    out_dir: str | Path,
    *,
    log: Callable[[str], None] = print,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Run (or resume) the study in ``out_dir``; write results.json and report.html."""
    from ..report import render  # the report reads results only; imported late to keep startup light

    out = Path(out_dir)
    cfg = config.to_dict()
    cfg_for_check = {k: v for k, v in cfg.items() if k != "device"}
    _same_or_fail(out / "study-config.json", cfg_for_check)
    final = out / "results.json"
    if final.is_file():
        results = read_json(final)
        log(f"study already finished in {out}; re-rendering the report")
        path = render(results, out / "report.html")
        log(f"report: {path}")
        return results

    started = datetime.now(timezone.utc)
    seconds: dict[str, float] = {}

    t = time.perf_counter()
    log("1/3 gradient flow at initialisation")
    flow = run_flow(config.flow, out / "flow")
    seconds["flow"] = time.perf_counter() - t

    t = time.perf_counter()
    deg = config.degradation
    log(f"2/3 degradation: plain vs residual, depths {', '.join(map(str, deg.depths))}, "
        f"{deg.train.epochs} epochs on {deg.data}")
    data = load_for(deg)  # the same examples train the nets and measure their paths
    degradation = run_degradation(deg, out / "degradation", data=data, log=log, progress=progress)
    write_json(out / "degradation" / "results.json", degradation)
    seconds["degradation"] = time.perf_counter() - t

    t = time.perf_counter()
    deepest = max(deg.depths)
    plain_name, res_name = twin_names(deepest, deg.unit)
    seed = deg.seeds[0]
    log(f"3/3 ensemble view on {res_name} and {plain_name} (seed {seed})")
    ens_dir = out / "ensemble"
    if (ens_dir / "results.json").is_file():  # finished before an interruption
        ensemble = read_json(ens_dir / "results.json")
    else:
        residual, _ = load_run(out / "degradation" / "runs" / f"{res_name}-s{seed}", device=config.device)
        plain, _ = load_run(out / "degradation" / "runs" / f"{plain_name}-s{seed}", device=config.device)
        ensemble = run_ensemble(config.ensemble, residual=residual, plain=plain, data=data, out_dir=ens_dir,
                                names=(res_name, plain_name), log=log)
    seconds["ensemble"] = time.perf_counter() - t
    seconds["total"] = sum(seconds.values())

    results = {
        "experiment": "study",
        "preset": config.preset,
        "config": cfg,
        "environment": environment(config.device),
        "timing": {"started": started.isoformat(timespec="seconds"),
                   "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                   "seconds": seconds},
        "flow": flow,
        "degradation": degradation,
        "ensemble": ensemble,
    }
    write_json(final, results)
    path = render(results, out / "report.html")
    log(f"report: {path}")
    return results
