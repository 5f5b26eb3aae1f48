"""The executor options every fan-out command shares (``study``, ``sweep``, ``flow``), defined once.

A command declares one parameter ``executors: ExecutorOptions`` and is wrapped in
:func:`executor_options`, which gives it the eleven flags below and hands them over as one
object (``opts.build(folder)`` makes the executor), so no command repeats them.

Numbers do not depend on the worker count: every run fanned out uses ``--threads``
intra-op threads (default 1) whether it runs alone (``--workers 1``) or beside others
(default: one worker per core). On a CPU the thread count changes the last bits of a loss
(measured: ResNet-20 epoch 1 train loss 2.4505840 at 1 thread, 2.4504834 at 2), which is why
it is fixed per run and recorded in each run's ``environment.torch_threads``, not derived from
the cores left over.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from ._common import UsageError

__all__ = ["ExecutorOpt", "WorkersOpt", "ThreadsOpt", "AddressOpt", "NumCpusOpt", "NumGpusOpt", "PartitionOpt",
           "TimeOpt", "GpusPerTaskOpt", "ClusterOpt", "GpusOpt", "ExecutorOptions", "executor_options", "build_executor",
           "DEFAULT_THREADS"]

DEFAULT_THREADS = 1  # torch threads per fanned-out run unless --threads says otherwise

ExecutorOpt = Annotated[str, typer.Option("--executor", help="Where runs go: local (process pool), ray or slurm.")]
WorkersOpt = Annotated[
    int | None, typer.Option("--workers", help="local: worker processes (default: one per core; 1: in this "
                                               "process). The numbers are the same for any count.")
]
ThreadsOpt = Annotated[
    int | None, typer.Option("--threads", help="Torch threads per run (default 1; recorded in each run). On a CPU "
                                               "runs are bitwise identical at equal --threads, whatever --workers.")
]
GpusOpt = Annotated[
    str | None, typer.Option("--gpus", help="local: GPUs to spread the workers over, e.g. 0,1 (default: every "
                                            "visible GPU; none: leave CUDA_VISIBLE_DEVICES as it is).")
]
AddressOpt = Annotated[
    str | None, typer.Option("--address", help="ray: 'auto' or ray://host:10001 to join a cluster (default: start one).")
]
NumCpusOpt = Annotated[float | None, typer.Option("--num-cpus", help="ray: CPUs per run (default: --threads).")]
NumGpusOpt = Annotated[float, typer.Option("--num-gpus", help="ray: GPUs per run; fractions share one (0.25).")]
PartitionOpt = Annotated[str | None, typer.Option("--partition", help="slurm: the partition to submit to.")]
TimeOpt = Annotated[int | None, typer.Option("--time", help="slurm: minutes per run (default 60).")]
GpusPerTaskOpt = Annotated[int, typer.Option("--gpus-per-task", help="slurm: GPUs per run.")]
ClusterOpt = Annotated[
    str | None, typer.Option("--cluster", help="slurm: slurm, or local (submitit's local processes; tests).")
]


@dataclass(frozen=True)
class ExecutorOptions:
    """The fan-out flags of one command line, as given (None/0: the default)."""

    executor: str = "local"
    workers: int | None = None
    threads: int | None = None
    gpus: str | None = None
    address: str | None = None
    num_cpus: float | None = None
    num_gpus: float = 0
    partition: str | None = None
    time: int | None = None
    gpus_per_task: int = 0
    cluster: str | None = None

    def build(self, folder: Path) -> Any:
        """The executor these flags name, started (see :func:`build_executor`)."""
        return build_executor(**{f.name: getattr(self, f.name) for f in fields(self)}, folder=folder)


_OPTION_TYPES: dict[str, Any] = {
    "executor": ExecutorOpt, "workers": WorkersOpt, "threads": ThreadsOpt, "gpus": GpusOpt, "address": AddressOpt,
    "num_cpus": NumCpusOpt, "num_gpus": NumGpusOpt, "partition": PartitionOpt, "time": TimeOpt,
    "gpus_per_task": GpusPerTaskOpt, "cluster": ClusterOpt,
}

F = TypeVar("F", bound=Callable[..., Any])


def executor_options(fn: F) -> F:
    """Give a command the executor flags; it receives them as ``executors: ExecutorOptions``.

    Typer reads the wrapper's signature: the command's own parameters (``executors``
    removed) followed by the eleven flags, so ``--help`` lists them after the command's own.
    """
    sig = inspect.signature(fn)
    if "executors" not in sig.parameters:
        raise TypeError(f"{fn.__name__} needs a parameter 'executors: ExecutorOptions'")
    own = [p for n, p in sig.parameters.items() if n != "executors"]
    defaults = ExecutorOptions()
    added = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=getattr(defaults, name),
                               annotation=ann) for name, ann in _OPTION_TYPES.items()]

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        opts = ExecutorOptions(**{name: kwargs.pop(name, getattr(defaults, name)) for name in _OPTION_TYPES})
        return fn(*args, executors=opts, **kwargs)

    own_kw = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
              else p for p in own]
    wrapper.__signature__ = sig.replace(parameters=[*own_kw, *added])  # type: ignore[attr-defined]
    anns = {k: v for k, v in getattr(fn, "__annotations__", {}).items() if k != "executors"}
    wrapper.__annotations__ = {**anns, **_OPTION_TYPES}
    return wrapper  # type: ignore[return-value]


def build_executor(
    executor: str, *, workers: int | None, threads: int | None, address: str | None, num_cpus: float | None,
    num_gpus: float, partition: str | None, time: int | None, gpus_per_task: int, cluster: str | None,
    folder: Path, gpus: str | None = None,
) -> Any:
    """The executor the options name, started (so a bad address fails before any work).

    ``local`` defaults to one worker per core, every run at ``threads`` (default 1) torch
    threads, so its numbers equal those of ``--workers 1``. Every bad combination is a
    UsageError line naming the flag and the fix.
    """
    from resgrad.executors import EXECUTORS, cores, make_executor

    kind = executor.strip().lower()
    if kind not in EXECUTORS:
        raise UsageError(f"--executor must be one of {', '.join(EXECUTORS)}, received {executor!r}")
    if workers is not None and workers < 1:
        raise UsageError(f"--workers must be >= 1 (processes; {cores()} cores here), "
                         f"received {workers}")
    if threads is not None and threads < 1:
        raise UsageError(f"--threads must be >= 1, received {threads}")

    def only(flag: str, value: Any, default: Any, kinds: str) -> None:
        if value != default and kind not in kinds.split("|"):
            raise UsageError(f"{flag} is an option of --executor {kinds.replace('|', ' or ')}, not {kind}; "
                             f"add --executor {kinds.split('|')[0]} or drop {flag}")

    only("--workers", workers, None, "local")
    only("--gpus", gpus, None, "local")
    only("--address", address, None, "ray")
    only("--num-cpus", num_cpus, None, "ray")
    only("--num-gpus", num_gpus, 0, "ray")
    only("--partition", partition, None, "slurm")
    only("--time", time, None, "slurm")
    only("--gpus-per-task", gpus_per_task, 0, "slurm")
    only("--cluster", cluster, None, "slurm")
    if cluster is not None and cluster not in ("slurm", "local"):
        raise UsageError(f"--cluster must be slurm or local, received {cluster!r}")
    if time is not None and time < 1:
        raise UsageError(f"--time must be >= 1 minute, received {time}")
    if kind == "local" and workers is None:
        workers = cores()
    gpu_list = _parse_gpus(gpus)
    threads = DEFAULT_THREADS if threads is None else threads
    try:
        ex = make_executor(kind, workers=workers, threads=threads, address=address, num_cpus=num_cpus,
                           num_gpus=num_gpus, partition=partition, time_min=time, gpus_per_task=gpus_per_task,
                           cluster=cluster, folder=folder / "submitit", gpus=gpu_list)
    except ImportError as e:
        raise UsageError(str(e).replace("the ray executor", "--executor ray")
                         .replace("the slurm executor", "--executor slurm")) from None
    except ValueError as e:
        raise UsageError(str(e)) from None
    try:
        ex.start()
    except BaseException:
        ex.close()
        raise
    return ex


def _parse_gpus(raw: str | None) -> tuple[str, ...] | None:
    """``--gpus``: None (every visible GPU), "none" (no pinning) or a comma list of indices or UUIDs."""
    from resgrad.executors.local import check_gpus

    if raw is None:
        return None
    if raw.strip().lower() == "none":
        return ()
    try:
        return check_gpus([s.strip() for s in raw.split(",")])  # the executor's rule, not a second copy
    except ValueError:
        raise UsageError(f"--gpus must be GPU indices or UUIDs separated by commas (0,1 or GPU-...), or none; "
                         f"received {raw!r}") from None
