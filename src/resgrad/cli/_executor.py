"""The executor options every fan-out command shares (``study``, ``sweep``), defined once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ._common import UsageError

__all__ = ["ExecutorOpt", "WorkersOpt", "ThreadsOpt", "AddressOpt", "NumCpusOpt", "NumGpusOpt", "PartitionOpt",
           "TimeOpt", "GpusPerTaskOpt", "ClusterOpt", "build_executor"]

ExecutorOpt = Annotated[str, typer.Option("--executor", help="Where runs train: local (process pool), ray or slurm.")]
WorkersOpt = Annotated[
    int | None, typer.Option("--workers", help="local: processes (default 1, in this process; use the cores with 2+ and equal --threads).")
]
ThreadsOpt = Annotated[
    int | None, typer.Option("--threads", help="Torch threads per run (default: cores // workers). On a CPU, "
                                               "runs are bitwise identical at equal --threads.")
]
AddressOpt = Annotated[
    str | None, typer.Option("--address", help="ray: 'auto' or ray://host:10001 to join a cluster (default: start one).")
]
NumCpusOpt = Annotated[float | None, typer.Option("--num-cpus", help="ray: CPUs per run (default: --threads or 1).")]
NumGpusOpt = Annotated[float, typer.Option("--num-gpus", help="ray: GPUs per run; fractions share one (0.25).")]
PartitionOpt = Annotated[str | None, typer.Option("--partition", help="slurm: the partition to submit to.")]
TimeOpt = Annotated[int | None, typer.Option("--time", help="slurm: minutes per run (default 60).")]
GpusPerTaskOpt = Annotated[int, typer.Option("--gpus-per-task", help="slurm: GPUs per run.")]
ClusterOpt = Annotated[
    str | None, typer.Option("--cluster", help="slurm: slurm, or local (submitit's local processes; tests).")
]


def build_executor(
    executor: str, *, workers: int | None, threads: int | None, address: str | None, num_cpus: float | None,
    num_gpus: float, partition: str | None, time: int | None, gpus_per_task: int, cluster: str | None,
    folder: Path,
) -> Any:
    """The executor the options name, started (so a bad address fails before any work).

    Every bad combination is a UsageError line naming the flag and the fix.
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
        # One process unless asked: on a CPU the torch thread count changes the last bits of every
        # loss (measured: ResNet-20 epoch 1 train loss 2.4505840 at 1 thread, 2.4504834 at 2), so a
        # pool with cores // workers threads would not reproduce the numbers of one process.
        workers = 1
    try:
        ex = make_executor(kind, workers=workers, threads=threads, address=address, num_cpus=num_cpus,
                           num_gpus=num_gpus, partition=partition, time_min=time, gpus_per_task=gpus_per_task,
                           cluster=cluster, folder=folder / "submitit")
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
