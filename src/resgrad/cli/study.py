"""``resgrad study``: the main job, all three kinds of evidence and one report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from resgrad.experiments.config import default
from resgrad.experiments.study import StudyConfig

from ._common import DataDirOpt, DeviceOpt, OutOpt, guarded, resolve_device, run_and_report
from ._executor import ExecutorOptions, executor_options

__all__ = ["command"]


def _seeds(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        seeds = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise ValueError(f"--seeds takes comma-separated integers such as 0,1,2, received {text!r}") from None
    if not seeds or any(s < 0 for s in seeds):
        raise ValueError(f"--seeds takes comma-separated integers >= 0 such as 0,1,2, received {text!r}")
    return seeds


@guarded
@executor_options
def command(
    preset: Annotated[
        str, typer.Option(help="quick (<1 min), default (MNIST-1D, ~5 min on 2 CPU cores), he2015-cifar10 (GPU).")
    ] = default(StudyConfig, "preset"),
    out: OutOpt = None,
    device: DeviceOpt = "auto",  # not StudyConfig's "cpu": the command takes CUDA when there is one
    seeds: Annotated[str | None, typer.Option(help="Training seeds, comma-separated (default: the preset's).")] = None,
    epochs: Annotated[int | None, typer.Option(help="Training epochs per net (default: the preset's).")] = None,
    data_dir: DataDirOpt = None,
    *,
    executors: ExecutorOptions,
) -> None:
    """Answer "do residual connections solve vanishing gradients?" by measurement, in one report.

    Runs the gradient-flow grid at initialisation, trains plain and residual twins of
    growing depth with one recipe (in parallel: one worker per core by default, or a Ray or
    Slurm cluster through --executor; every run at --threads threads, default 1, so the
    numbers do not depend on --workers), and decomposes the deepest residual net's gradient by
    path length and lesions its blocks. Rerun the same command to resume a killed study;
    a finished one only re-renders its report.

    Examples:
      resgrad study
      resgrad study --preset quick --out runs/first-look
      resgrad study --preset he2015-cifar10 --data-dir ~/data --device cuda
      resgrad study --workers 1                        # in this process, one net after another (same numbers)
      resgrad study --executor ray --address auto --num-gpus 0.25
    """
    from resgrad.experiments.study import PRESETS, run_study
    from resgrad.experiments.study import preset as make_preset

    if preset not in PRESETS:
        raise ValueError(f"--preset must be one of {', '.join(PRESETS)}, received {preset!r}")
    if epochs is not None and epochs < 1:
        raise ValueError(f"--epochs must be >= 1, received {epochs}")
    dev = resolve_device(device)
    config = make_preset(preset, device=dev, seeds=_seeds(seeds), epochs=epochs,
                         data_dir=str(data_dir) if data_dir else None)
    run_dir = out if out is not None else Path("runs") / f"study-{preset}"

    run_and_report(executors, run_dir, lambda **kw: run_study(config, run_dir, **kw))
