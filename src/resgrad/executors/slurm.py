"""``slurm``: submitit job arrays, one array task per run.

``cluster=None`` lets submitit choose (Slurm when ``sbatch`` is on the PATH, else local
processes); ``"local"`` forces submitit's local executor, which is what the tests use.
submitit's logs and pickles go to ``folder`` (``<out>/submitit`` by default), the runs'
results to their run folders: both must be on storage every node sees. A job that dies
without a result (preempted, killed, timed out) is submitted again, up to
``max_retries`` times, and resumes from its checkpoint; an exception it raised is not.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._base import Executor, OnEvent, Task, cores, run_task

__all__ = ["SlurmExecutor", "import_submitit"]


def import_submitit() -> Any:
    """The ``submitit`` module, or one ImportError line naming the extra to install."""
    try:
        import submitit
    except ImportError:
        raise ImportError("the slurm executor needs submitit, which is not installed; "
                          "pip install 'resgrad[slurm]'") from None
    return submitit


def _call(task: Task, threads: int) -> Any:
    import torch

    torch.set_num_threads(threads)
    return run_task(task)  # submitit pickles the exception (or its traceback text) itself


class SlurmExecutor(Executor):
    """submitit job arrays (Slurm, or local processes for tests)."""

    kind = "slurm"

    def __init__(self, folder: str | os.PathLike, *, cluster: str | None = None, partition: str | None = None,
                 time_min: int = 60, gpus_per_task: int = 0, cpus_per_task: int = 1, mem_gb: float | None = None,
                 array_parallelism: int | None = None, max_retries: int = 1,
                 extra: dict[str, Any] | None = None) -> None:
        if cluster not in (None, "local", "slurm", "debug"):
            raise ValueError(f"cluster must be None (auto), 'slurm', 'local' or 'debug', received {cluster!r}")
        for name, v in (("time_min", time_min), ("cpus_per_task", cpus_per_task)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, received {v!r}")
        if not isinstance(gpus_per_task, int) or isinstance(gpus_per_task, bool) or gpus_per_task < 0:
            raise ValueError(f"gpus_per_task must be an integer >= 0 (Slurm gives whole GPUs), received {gpus_per_task!r}")
        self._submitit = import_submitit()
        self.folder = Path(folder)
        self.cluster = cluster
        self.partition = partition
        self.time_min = time_min
        self.gpus_per_task = gpus_per_task
        self.cpus_per_task = cpus_per_task
        self.mem_gb = mem_gb
        self.array_parallelism = array_parallelism
        self.max_retries = max_retries
        self.extra = dict(extra or {})

    def describe(self) -> str:
        part = f", partition {self.partition}" if self.partition else ""
        return (f"slurm (submitit, cluster {self.cluster or 'auto'}{part}), {self.cpus_per_task} CPU + "
                f"{self.gpus_per_task} GPU per run, {self.time_min} min")

    def _executor(self) -> Any:
        ex = self._submitit.AutoExecutor(folder=self.folder / "%j", cluster=self.cluster)
        params: dict[str, Any] = {"timeout_min": self.time_min, "cpus_per_task": self.cpus_per_task,
                                  "gpus_per_node": self.gpus_per_task, "tasks_per_node": 1, "nodes": 1,
                                  "name": "resgrad"}
        if self.mem_gb is not None:
            params["mem_gb"] = self.mem_gb
        if self.partition:
            params["slurm_partition"] = self.partition
        if self.array_parallelism:
            params["slurm_array_parallelism"] = self.array_parallelism
        ex.update_parameters(**params, **self.extra)
        return ex

    def map(self, tasks: Sequence[Task], *, on_start: OnEvent | None = None,
            on_done: OnEvent | None = None) -> list[Any]:
        from submitit.core.utils import FailedJobError, UncompletedJobError

        tasks = list(tasks)
        results: list[Any] = [None] * len(tasks)
        ex = self._executor()
        # submitit's local executor starts a whole array at once; cap it at the cores we have.
        local = ex.cluster in ("local", "debug")
        wave = len(tasks) or 1
        if local:
            wave = self.array_parallelism or max(1, cores() // self.cpus_per_task)
        for i, t in enumerate(tasks):
            if on_start:
                on_start(i, t, None)
        todo = list(range(len(tasks)))
        tries = 0
        while todo:
            died: list[int] = []
            for k in range(0, len(todo), wave):
                chunk = todo[k:k + wave]
                jobs = ex.map_array(_call, [tasks[i] for i in chunk], [self.cpus_per_task] * len(chunk))
                by_job = dict(zip((j.job_id for j in jobs), chunk, strict=True))
                try:
                    for job in self._submitit.helpers.as_completed(jobs, poll_frequency=0.5 if local else 10):
                        i = by_job[job.job_id]
                        try:
                            results[i] = job.result()
                        except UncompletedJobError:
                            died.append(i)
                            continue
                        except FailedJobError as e:
                            last = [s for s in str(e).strip().splitlines() if s.strip()]
                            raise RuntimeError(f"{tasks[i].label}: job {job.job_id} failed: "
                                               f"{last[-1].strip() if last else e}; its log: {job.paths.stderr}") from None
                        if on_done:
                            on_done(i, tasks[i], results[i])
                except BaseException:
                    for job in jobs:
                        if not job.done():
                            job.cancel(check=False)
                    raise
            todo = sorted(died)
            if todo:
                tries += 1
                if tries > self.max_retries:
                    names = ", ".join(tasks[i].label or tasks[i].run_dir for i in todo)
                    raise RuntimeError(f"jobs died without a result {tries} times (preempted, killed or out of "
                                       f"time?): {names}; rerun to resume them, or raise --time; logs in {self.folder}")
                time.sleep(0.1)
        return results
