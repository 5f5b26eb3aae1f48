"""One interface for independent runs: a local process pool, Ray core, or Slurm via submitit.

Every study, sweep and grid is a set of independent runs. Each is a :class:`Task` (a
function's import path, its config as plain data, its run folder); an :class:`Executor`
runs a list of them and the caller reads each run's folder back, so the order in which
runs finish never changes a number. ::

    with make_executor("local", workers=2) as ex:       # or "ray", "slurm"
        ex.map([Task("resgrad.experiments.degradation:train_run", cfg, "runs/x/plain20-s0"), ...])

| kind | engine | extra |
| --- | --- | --- |
| local (default) | ``concurrent.futures.ProcessPoolExecutor`` (spawn), workers spread over the GPUs; ``workers=1``: in process | — |
| ray | Ray core tasks (``num_cpus``, fractional ``num_gpus``, retries) | ``resgrad[ray]`` |
| slurm | submitit job arrays (``cluster="local"`` in tests) | ``resgrad[slurm]`` |

SIGTERM, SIGINT or SIGUSR1 (Slurm's preemption, Ctrl-C) stop every executor the way one
``train`` stops: running runs checkpoint mid-epoch, no new run starts, and
:class:`Preempted` ("stopped on SIGTERM ...; rerun the same command to resume") is raised;
the CLI exits 128 + signal, and the rerun resumes every run from its folder.

On the CPU, a run's numbers depend on its intra-op thread count (oneDNN splits
reductions by thread), which each run records (``environment.torch_threads``): runs are
identical across executors and worker counts at the same ``threads``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from ._base import (
    Executor,
    NotStarted,
    OnEvent,
    Preempted,
    StopSignals,
    Task,
    TaskFailed,
    cores,
    portable,
    probe,
    run_task,
    torch_threads,
)
from .local import LocalExecutor

__all__ = ["Executor", "Task", "TaskFailed", "Preempted", "NotStarted", "StopSignals", "OnEvent", "LocalExecutor", "RayExecutor", "SlurmExecutor",
           "EXECUTORS", "make_executor", "run_task", "probe", "cores", "portable", "torch_threads"]

EXECUTORS = ("local", "ray", "slurm")


def __getattr__(name: str) -> Any:
    # Ray and submitit are optional: import their executors (and them) only when asked for.
    if name == "RayExecutor":
        from .ray import RayExecutor

        return RayExecutor
    if name == "SlurmExecutor":
        from .slurm import SlurmExecutor

        return SlurmExecutor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def make_executor(
    kind: str | Executor | None = "local",
    *,
    workers: int | None = None,
    threads: int | None = None,
    address: str | None = None,
    num_cpus: float | None = None,
    num_gpus: float = 0,
    partition: str | None = None,
    time_min: int | None = None,
    gpus_per_task: int = 0,
    cluster: str | None = None,
    folder: str | os.PathLike | None = None,
    max_retries: int | None = None,
    gpus: Sequence[int | str] | None = None,
) -> Executor:
    """An executor by name; an :class:`Executor` passes through, None is ``local``.

    ``local``: ``workers`` (default: one per core), ``threads`` per worker (default
    cores // workers), ``gpus`` to spread the workers over (default: every visible GPU
    when there are several; ``()``: leave them be). ``ray``: ``address`` (None starts a local cluster), ``num_cpus``
    (default ``threads`` or 1) and ``num_gpus`` per run. ``slurm``: ``partition``,
    ``time_min``, ``gpus_per_task``, ``cluster`` (None: auto, "local" for tests) and the
    ``folder`` for submitit's logs.
    """
    if isinstance(kind, Executor):
        return kind
    kind = "local" if kind is None else kind
    key = kind.strip().lower() if isinstance(kind, str) else kind
    if key not in EXECUTORS:
        raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, received {kind!r}")
    retries = {} if max_retries is None else {"max_retries": max_retries}
    if key == "local":
        return LocalExecutor(workers, threads=threads, gpus=gpus, **retries)
    if key == "ray":
        from .ray import RayExecutor

        cpus = num_cpus if num_cpus is not None else (threads or 1)
        return RayExecutor(address, num_cpus=cpus, num_gpus=num_gpus, **retries)
    from .slurm import SlurmExecutor

    if folder is None:
        raise ValueError("the slurm executor needs a folder for submitit's logs that every node sees; pass folder=")
    return SlurmExecutor(folder, cluster=cluster, partition=partition, time_min=time_min or 60,
                         gpus_per_task=gpus_per_task, cpus_per_task=threads or 1, **retries)
