"""``local``: a process pool over this machine's cores (``concurrent.futures``, spawn context).

``workers=1`` runs the tasks in this process, one after another. More workers each get
``cores // workers`` intra-op threads. A worker that dies (kill -9, out of memory)
breaks the pool; the tasks that had not finished are submitted again to a fresh pool,
up to ``max_retries`` times, and resume from their run folders' checkpoints.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from ._base import Executor, OnEvent, Task, cores, portable, run_task, torch_threads

__all__ = ["LocalExecutor"]


def _die_with_parent(parent: int) -> None:
    # A parent killed with -9 cannot stop its pool; without this its workers would train on,
    # writing into run folders that the rerun of the command resumes (two writers).
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except OSError:
            pass

    def watch() -> None:  # portable fallback, and for a parent that died before prctl ran
        while True:
            if os.getppid() != parent:
                os._exit(1)
            time.sleep(0.5)

    threading.Thread(target=watch, name="resgrad-parent-watch", daemon=True).start()


def _init_worker(threads: int, parent: int) -> None:
    _die_with_parent(parent)
    import torch

    torch.set_num_threads(threads)


def _call(task: Task) -> Any:
    try:
        return run_task(task)
    except Exception as e:  # pickled back to the parent: it must survive the trip
        raise portable(e, task.label) from None


class LocalExecutor(Executor):
    """A process pool on this machine; ``workers=1``: in this process."""

    kind = "local"

    def __init__(self, workers: int | None = None, *, threads: int | None = None, max_retries: int = 2,
                 context: str = "spawn") -> None:
        n = cores()
        if workers is not None and (not isinstance(workers, int) or isinstance(workers, bool) or workers < 1):
            raise ValueError(f"workers must be an integer >= 1 (processes; default: one per core, {n} here), "
                             f"received {workers!r}")
        if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
            raise ValueError(f"threads must be an integer >= 1 (intra-op threads per worker), received {threads!r}")
        if context not in ("spawn", "forkserver"):
            # fork would copy torch's thread pools and any CUDA state into the child: unsafe
            raise ValueError(f"context must be 'spawn' or 'forkserver', received {context!r}")
        self.workers = workers if workers is not None else n
        self.threads = threads if threads is not None else max(1, n // self.workers)
        self.max_retries = max_retries
        self.context = context
        self.in_process = self.workers == 1
        self.restarts = 0  # pools replaced after a worker died, over this executor's life

    def describe(self) -> str:
        if self.in_process:
            return f"local, in this process, {self.threads} thread{'s' * (self.threads > 1)}"
        return f"local, {self.workers} worker processes x {self.threads} thread{'s' * (self.threads > 1)}"

    def map(self, tasks: Sequence[Task], *, on_start: OnEvent | None = None,
            on_done: OnEvent | None = None) -> list[Any]:
        tasks = list(tasks)
        results: list[Any] = [None] * len(tasks)
        if self.in_process:
            with torch_threads(self.threads):
                for i, t in enumerate(tasks):
                    if on_start:
                        on_start(i, t, None)
                    results[i] = run_task(t)
                    if on_done:
                        on_done(i, t, results[i])
            return results
        if on_start:
            for i, t in enumerate(tasks):
                on_start(i, t, None)
        pending = list(range(len(tasks)))
        deaths = 0
        while pending:
            pending = self._round(tasks, pending, results, on_done)
            if pending:
                deaths += 1
                self.restarts += 1
                if deaths > self.max_retries:
                    names = ", ".join(tasks[i].label or tasks[i].run_dir for i in pending)
                    raise RuntimeError(f"a worker process died {deaths} times (killed, out of memory, or a script "
                                       "without `if __name__ == '__main__':` that spawned workers re-run); "
                                       f"unfinished: {names}; rerun the command to resume them, with fewer "
                                       "--workers if memory is short")
        return results

    def _round(self, tasks: list[Task], todo: list[int], results: list[Any], on_done: OnEvent | None) -> list[int]:
        """Run ``todo`` on a fresh pool; return the indices left unfinished by a dead worker."""
        ctx = mp.get_context(self.context)
        broken: list[int] = []
        with ProcessPoolExecutor(max_workers=min(self.workers, len(todo)), mp_context=ctx,
                                 initializer=_init_worker, initargs=(self.threads, os.getpid())) as pool:
            futs: dict[Future, int] = {pool.submit(_call, tasks[i]): i for i in todo}
            waiting = set(futs)
            try:
                while waiting:
                    done, waiting = wait(waiting, return_when=FIRST_COMPLETED)
                    for f in sorted(done, key=futs.__getitem__):  # deterministic order for logs
                        i = futs[f]
                        try:
                            results[i] = f.result()
                        except BrokenProcessPool:
                            broken.append(i)
                            continue
                        if on_done:
                            on_done(i, tasks[i], results[i])
            except BaseException:
                # A task failed (or Ctrl-C): start nothing new, let the running ones stop at
                # a checkpoint-safe point by finishing; the with-block waits for them.
                pool.shutdown(wait=True, cancel_futures=True)
                raise
        return sorted(broken)
