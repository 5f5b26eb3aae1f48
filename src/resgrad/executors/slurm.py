"""``slurm``: submitit job arrays, one array task per run.

``cluster=None`` lets submitit choose (Slurm when ``sbatch`` is on the PATH, else local
processes); ``"local"`` forces submitit's local executor, which is what the tests use.
submitit's logs and pickles go to ``folder`` (``<out>/submitit`` by default), the runs'
results to their run folders: both must be on storage every node sees. A job that dies
without a result (preempted, killed, timed out), or that checkpointed on a signal (fit's
SIGTERM/SIGUSR1: give ``extra={"slurm_signal_delay_s": 120}`` and
``SUBMITIT_PREEMPT_SIGNAL=USR1`` so Slurm warns it before the time limit), is submitted
again, up to ``max_retries`` times, and resumes from its checkpoint; an exception it
raised is not. A stop signal to this process passes the stop on to the running jobs
(SIGTERM through their controller or scancel) and raises
:class:`~resgrad.executors.Preempted` once they have checkpointed.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._checks import is_int
from ._base import Executor, OnEvent, StopSignals, Task, cores, run_task, stopped

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
            if not is_int(v) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, received {v!r}")
        if not is_int(gpus_per_task) or gpus_per_task < 0:
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
        finished = 0
        stop = StopSignals(forward=True)
        with stop:
            while todo:
                died: list[int] = []
                for k in range(0, len(todo), wave):
                    chunk = todo[k:k + wave]
                    jobs = ex.map_array(_call, [tasks[i] for i in chunk], [self.cpus_per_task] * len(chunk))
                    by_job = dict(zip((j.job_id for j in jobs), chunk, strict=True))
                    told = False
                    try:
                        for job in self._completed(jobs, stop, 0.5 if local else 10):
                            if stop.signum is not None and not told:
                                self._stop_jobs(jobs, local)
                                told = True
                            if job is None:
                                continue
                            i = by_job[job.job_id]
                            try:
                                results[i] = job.result()
                            # FailedJobError subclasses UncompletedJobError: it must be caught first, or a
                            # task's own error reads as a job that died (and is resubmitted, then reported so).
                            except FailedJobError as e:
                                lines = [s.strip() for s in str(e).strip().splitlines() if s.strip()]
                                if any(s.startswith(("resgrad.stopping.Preempted", "resgrad.train.Preempted", "Preempted")) for s in lines):
                                    died.append(i)  # it checkpointed on a signal: resubmit (it resumes)
                                    continue
                                err = next((s for s in reversed(lines) if not s.startswith(("-", "You can", "or at",
                                                                                             "- /"))), str(e))
                                raise RuntimeError(f"{tasks[i].label}: job {job.job_id} failed: {err}; its log: "
                                                   f"{job.paths.stderr}") from None
                            except UncompletedJobError:
                                died.append(i)
                                continue
                            finished += 1
                            if on_done:
                                on_done(i, tasks[i], results[i])
                    except BaseException:
                        for job in jobs:
                            if not job.done():
                                job.cancel(check=False)
                        raise
                    if stop.signum is not None:
                        raise stopped(stop.signum, finished, len(tasks))
                todo = sorted(died)
                if todo:
                    tries += 1
                    if tries > self.max_retries:
                        names = ", ".join(tasks[i].label or tasks[i].run_dir for i in todo)
                        raise RuntimeError(f"jobs died without a result {tries} times (preempted, killed or out of "
                                           f"time?): {names}; rerun to resume them, or raise --time; logs in "
                                           f"{self.folder}")
                    time.sleep(0.1)
        return results

    @staticmethod
    def _completed(jobs: list[Any], stop: StopSignals, poll: float) -> Any:
        """Yield each job as it completes (as submitit.helpers.as_completed), and None every
        ``poll`` seconds, so a stop signal is acted on while jobs run."""
        left = list(jobs)
        while left:
            for job in [j for j in left if j.done()]:
                left.remove(job)
                yield job
            if left:
                yield None
                time.sleep(poll if stop.signum is None else 0.2)

    @staticmethod
    def _stop_jobs(jobs: list[Any], local: bool) -> None:
        """Pass a stop on: Slurm's scancel sends SIGTERM (then SIGKILL after KillWait), which
        fit checkpoints on; a local job's controller forwards SIGTERM to its task (its cancel
        would send SIGINT, then SIGKILL a second later, too soon for a checkpoint)."""
        import signal

        for job in jobs:
            if job.done():
                continue
            proc = getattr(job, "_process", None)
            if local and proc is not None:
                with contextlib.suppress(ProcessLookupError, OSError):
                    proc.send_signal(signal.SIGTERM)
            else:
                job.cancel(check=False)
