"""The main job: gradient flow, degradation, the ensemble view and the Transformer twins, in one results.json.

``run(preset("default"), "runs/study-default")`` runs four stages into one run folder::

    config.json              the resolved StudyConfig (a rerun must match it)
    flow/                    experiments/flow.py: the grid at initialisation
    degradation/             experiments/degradation.py: its config.json and results.json, and
    degradation/runs/...     one resumable training run per (depth, plain|residual, seed)
    ensemble/                experiments/ensemble.py on the deepest trained pair
    transformer/             experiments/transformer.py: pre-LN, post-LN, no skip
    pretrained/              experiments/pretrained.py: real pretrained models (default and full presets)
    designs/                 experiments/designs.py: every residual design at initialisation
    results.json             the StudyResult (results/study.py), written atomically

Every stage is an experiment run by the same driver (experiments/driver.py) into its
sub-folder, so each reuses what a previous (killed) invocation finished: by its validated
results.json, and the training runs through ``fit``'s checkpoints. A finished study returns its
result; the command (``resgrad study``) renders report.html from it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..executors import Executor
from ..io import environment, jsonable
from ..results import StudyResult, TransformerResult
from ..results.study import Timing
from ..rundir import RunDir
from ..train import TrainConfig, load_run
from . import designs as _designs
from . import driver
from . import transformer as _transformer
from .config import Config as BaseConfig
from .degradation import DegradationConfig, load_for, twin_names
from .designs import DesignsConfig
from .ensemble import EnsembleConfig
from .flow import FlowConfig
from .pretrained import PretrainedConfig
from .pretrained import study_stage as _pretrained_stage
from .transformer import TransformerConfig

__all__ = ["StudyConfig", "PRESETS", "preset", "run", "run_study", "compute", "KIND"]

KIND = "resgrad.study"  # config.json's kind for a study folder
LABEL = "study"
CLAIM = "additions"  # a folder of an earlier version lacks later stages: they run, the rest is reused
Result = StudyResult

PRESETS = ("quick", "default", "he2015-cifar10")


@dataclass
class StudyConfig(BaseConfig):
    """The experiments of a study; each field is that experiment's own config."""

    preset: str = "default"  # the preset this came from (recorded; changes nothing itself)
    flow: FlowConfig = field(default_factory=FlowConfig)  # gradient flow at initialisation
    degradation: DegradationConfig = field(default_factory=DegradationConfig)  # plain vs residual training
    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)  # on the deepest trained pair
    transformer: TransformerConfig | None = None  # pre-LN vs post-LN vs no skip (None: no such stage)
    pretrained: PretrainedConfig | None = None  # real pretrained models on real text (None: no such stage)
    designs: DesignsConfig | None = None  # the residual designs at initialisation (None: no such stage)
    device: str = "cpu"  # where training and measuring run

    def to_dict(self) -> dict[str, Any]:
        return jsonable(asdict(self))


Config = StudyConfig  # the experiment contract: this module's config type


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
        # Lesions on every test example the training run reported (eval_examples=None): one baseline per net.
        ens = EnsembleConfig.preset("quick", device=device, eval_examples=None)
        tr = _transformer.preset("quick", device=device)
    elif name == "default":
        # The embedded default: MNIST-1D (Greydanus 2020), no downloads, ~5 min on 2 CPU cores.
        flow = FlowConfig.preset("default", inits=("he",), depths=(4, 16, 64, 256), device=device)
        # lr 0.02, not He et al.'s 0.1: 12 epochs leave no room for their warm-up, and at 0.1
        # ResNet-110 spent the budget recovering from its first steps (55.9% train error,
        # measured); at 0.02 it reaches 4.1%, while plain-56/110 stay at 60%/89% as at 0.1.
        deg = DegradationConfig(depths=(20, 56, 110), train=TrainConfig(epochs=12, lr=0.02, device=device))
        # 200 sampled paths per length (Veit et al. used 1,000: `resgrad paths` does that): keeps the
        # stage near a minute on a CPU. Lesion errors on the whole test split the training run reported
        # (eval_examples=None), so the intact net's error is the same number in every section.
        ens = EnsembleConfig.preset("default", samples=200, examples=256, eval_examples=None, trials=3,
                                    device=device)
        tr = _transformer.preset("default", device=device)
    else:
        # He et al. 2015 §4.2 on CIFAR-10 (2-D nets, option A, the full recipe): meant for a GPU.
        if data_dir is not None:
            data_kwargs["data_dir"] = str(data_dir)
        flow = FlowConfig.preset("default", device=device)
        deg = DegradationConfig(data="cifar10", data_kwargs=data_kwargs, depths=(20, 32, 44, 56, 110),
                                train=TrainConfig(epochs=164, device=device),
                                warmup=((110, 400),))  # ResNet-110: lr 0.01 for ~400 iterations (§4.2)
        ens = EnsembleConfig.preset("default", device=device)
        tr = _transformer.preset("full", device=device)  # MNIST-1D: CIFAR-10 is the ResNets' data here
    if seeds is not None:
        deg.seeds = tuple(int(s) for s in seeds)
    if epochs is not None:
        deg.train = replace(deg.train, epochs=int(epochs))
    # The ensemble stage measures the deepest trained pair (recorded under these names).
    ens.plain, ens.residual = twin_names(max(deg.depths), deg.unit)
    ens.data, ens.data_kwargs = deg.data, dict(data_kwargs)
    # The pretrained models (issue 20): MiniLM, short, in the default study; both at the default size in the full one.
    pre = None if name == "quick" else _pretrained_stage(name, device=device)
    # Every residual design at initialisation, a few seconds (experiments/designs.py; `resgrad designs` trains them).
    designs = _designs.preset("panel", device=device)
    return StudyConfig(preset=name, flow=flow, degradation=deg, ensemble=ens, transformer=tr, pretrained=pre,
                       designs=designs,
                       device=device)


def comparable(config: dict[str, Any]) -> dict[str, Any]:
    """What a used folder must match: the study on any device."""
    return {k: v for k, v in config.items() if k != "device"}


def check_folder(run_dir: RunDir) -> None:
    """A study folder of resgrad 0.1 (``study-config.json``) is refused: its stages are not reused."""
    root = run_dir.path
    if (root / "study-config.json").is_file() and not run_dir.has_config():
        raise ValueError(f"{root} holds a study of resgrad 0.1, whose stages this version does not reuse; use a new "
                         f"--out folder (its report still opens: {run_dir.report_path})")


def run(
    config: StudyConfig,
    out: str | Path | RunDir,
    *,
    log: Callable[[str], None] | None = print,
    progress: driver.Progress | bool | Callable[[int, int, Any], None] | None = None,
    executor: Executor | str | None = None,
) -> StudyResult:
    """Run (or resume) the study in ``out``; write and return its StudyResult.

    ``executor`` trains the degradation stage's runs and measures the flow grid in chunks
    (an Executor, left open, or its name, made once for every stage and closed here; None: in
    this process, one after another). It changes where runs go, never a number: each run or
    chunk sets its own seeds and threads.
    """
    return driver.run(config, out, executor=executor, log=log, progress=progress)


def compute(config: StudyConfig, ctx: driver.Context) -> StudyResult:
    """The stages, each an experiment run by the same driver into its sub-folder (reused when finished)."""
    log, progress, executor = ctx.log, ctx.progress, ctx.executor
    cfg = config.to_dict()
    started = datetime.now(timezone.utc)
    seconds: dict[str, float] = {}

    t = time.perf_counter()
    n = 3 + (config.transformer is not None) + (config.pretrained is not None)
    log(f"1/{n} gradient flow at initialisation")
    flow = driver.run(config.flow, ctx.sub("flow"), executor=executor, log=log)  # in chunks, when one is given
    seconds["flow"] = time.perf_counter() - t

    t = time.perf_counter()
    deg = config.degradation
    log(f"2/{n} degradation: plain vs residual, depths {', '.join(map(str, deg.depths))}, "
        f"{deg.train.epochs} epochs on {deg.data}")
    data = load_for(deg)  # the same examples train the nets and measure their paths
    deg_dir = ctx.sub("degradation")
    degradation = driver.run(deg, deg_dir, executor=executor, log=log, progress=progress, data=data)
    seconds["degradation"] = time.perf_counter() - t

    t = time.perf_counter()
    deepest = max(deg.depths)
    plain_name, res_name = twin_names(deepest, deg.unit)
    seed = deg.seeds[0]
    log(f"3/{n} ensemble view on {res_name} and {plain_name} (seed {seed})")
    runs = deg_dir.sub("runs")
    # The trained twins are loaded only when the stage is computed (not when a killed study finished it).
    ensemble = driver.run(
        config.ensemble, ctx.sub("ensemble"), log=log, reuse=True, data=data, names=(res_name, plain_name),
        residual=driver.Lazy(lambda: load_run(runs.sub(f"{res_name}-s{seed}"), device=config.device)[0]),
        plain=driver.Lazy(lambda: load_run(runs.sub(f"{plain_name}-s{seed}"), device=config.device)[0]))
    seconds["ensemble"] = time.perf_counter() - t

    transformer: TransformerResult | None = None
    if config.transformer is not None:
        t = time.perf_counter()
        tc = config.transformer
        log(f"4/{n} Transformers: pre-LN, post-LN and no skip, {tc.layers} layers on {tc.data}")
        transformer = driver.run(tc, ctx.sub("transformer"), log=log, progress=progress, executor=executor)
        seconds["transformer"] = time.perf_counter() - t
    pretrained = None
    if config.pretrained is not None:
        t = time.perf_counter()
        pc = config.pretrained
        log(f"{n}/{n} pretrained models on real text: {', '.join(pc.specs)}")
        pretrained = driver.run(pc, ctx.sub("pretrained"), log=log, reuse=True)
        seconds["pretrained"] = time.perf_counter() - t
    designs = None
    if config.designs is not None:
        t = time.perf_counter()
        log(f"designs at initialisation: {len(config.designs.designs)} designs")
        designs = driver.run(config.designs, ctx.sub("designs"), log=log)
        seconds["designs"] = time.perf_counter() - t
    seconds["total"] = sum(seconds.values())

    return StudyResult(
        preset=config.preset, config=cfg, environment=environment(config.device),
        timing=Timing(started=started.isoformat(timespec="seconds"),
                      finished=datetime.now(timezone.utc).isoformat(timespec="seconds"), seconds=seconds),
        flow=flow, degradation=degradation, ensemble=ensemble, transformer=transformer, pretrained=pretrained,
        designs=designs,
    )


def run_study(config: StudyConfig, out_dir: str | Path, *, log: Callable[[str], None] | None = print,
              progress: driver.Progress | bool | Callable[[int, int, Any], None] | None = None,
              executor: Executor | str | None = None) -> StudyResult:
    """The study (the name of resgrad 0.1; same as :func:`run`; ``resgrad study`` also renders the report)."""
    return run(config, out_dir, log=log, progress=progress, executor=executor)
