"""``local``: a process pool over this machine's cores (``concurrent.futures``, spawn context).

``workers=1`` runs the tasks in this process, one after another. More workers each get
``cores // workers`` intra-op threads. On a machine with several GPUs the workers are
spread over them, worker ``i`` seeing only GPU ``i mod n`` (``CUDA_VISIBLE_DEVICES``, the
way Ray and Slurm hand out GPUs), so a run's ``cuda`` device is its worker's GPU.

A worker that dies (kill -9, out of memory) breaks the pool; the tasks that had not
finished are submitted again to a fresh pool, up to ``max_retries`` times, and resume
from their run folders' checkpoints.

SIGTERM, SIGINT or SIGUSR1 to the parent (or to any worker) stops the whole map the way
one ``train`` stops: the signal is passed to every worker, each running ``fit``
checkpoints mid-epoch and stops, workers refuse the tasks still queued, and once all
have stopped :class:`~resgrad.executors.Preempted` is raised ("stopped on SIGTERM ...;
rerun the same command to resume"; the CLI exits 128 + signal).
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
from contextlib import contextmanager, suppress
from multiprocessing import resource_tracker
from typing import Any

from .._checks import is_int
from ..stopping import Preempted as _RunPreempted
from ._base import (
    STOP_SIGNALS,
    Executor,
    NotStarted,
    OnEvent,
    StopSignals,
    Task,
    cores,
    portable,
    run_task,
    stopped,
    torch_threads,
)

__all__ = ["LocalExecutor", "check_gpus", "visible_gpus"]


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


# A worker's stop state: the first stop signal it saw, and whether a task is running.
_STOP: dict[str, Any] = {"signum": None, "busy": False}


def _exit_soon() -> None:
    """Leave this worker a moment after its last task: a stopped worker only refuses tasks,
    and a pool that broke (a sibling was killed) waits for its workers to exit, while one
    that caught the pool's SIGTERM would otherwise wait for a next task forever. The delay
    lets the last result reach the parent first."""
    def leave() -> None:
        time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=leave, name="resgrad-stopped", daemon=True).start()


def _worker_signal(signum: int, frame: Any) -> None:
    # Outside fit (fit installs its own handler, which checkpoints). Inside a task (loading
    # data): stop it now; nothing has trained yet, so there is nothing to checkpoint.
    # Between tasks: leave; queued tasks are refused until then.
    first = _STOP["signum"] is None
    if first:
        _STOP["signum"] = signum
    if _STOP["busy"]:
        raise NotStarted(f"stopped on {signal.Signals(signum).name} before training", signum=signum)
    if first:
        _exit_soon()


def visible_gpus() -> list[str]:
    """The GPUs this process may use, named as ``CUDA_VISIBLE_DEVICES`` names them; [] without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return []
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is None:
        return [str(i) for i in range(torch.cuda.device_count())]
    names = []
    for s in (s.strip() for s in env.split(",")):
        if not s or s.startswith("-"):  # CUDA ignores the list from its first invalid entry on
            break
        names.append(s)
    return names


def check_gpus(gpus: Any) -> tuple[str, ...]:
    """GPU names as ``CUDA_VISIBLE_DEVICES`` takes them: indices or UUIDs; ValueError otherwise."""
    if isinstance(gpus, (str, int)) or not all(isinstance(g, (str, int)) and not isinstance(g, bool) for g in gpus):
        raise ValueError(f"gpus must be a list of GPU indices or UUIDs such as [0, 1], received {gpus!r}")
    names = tuple(str(g).strip() for g in gpus)
    bad = [n for n in names if not (n.isdigit() or n.startswith(("GPU-", "MIG-")))]
    if bad:
        raise ValueError(f"gpus must be GPU indices (0, 1, ...) or UUIDs (GPU-..., MIG-...), received {bad[0]!r}")
    return names


def _pin_gpu(gpus: tuple[str, ...], slot: Any) -> None:
    """Give this worker one GPU of ``gpus``, round robin in start order (before CUDA starts here)."""
    if not gpus:
        return
    with slot.get_lock():
        i = slot.value
        slot.value += 1
    os.environ["CUDA_VISIBLE_DEVICES"] = gpus[i % len(gpus)]


def _init_worker(threads: int, parent: int, gpus: tuple[str, ...] = (), slot: Any = None) -> None:
    _die_with_parent(parent)
    _pin_gpu(gpus, slot)
    for sig in STOP_SIGNALS:
        signal.signal(sig, _worker_signal)
    # The parent spawned us with the stop signals blocked (so one sent while this interpreter
    # started is not fatal); now that the handler is in place, take delivery.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    import torch

    torch.set_num_threads(threads)


def _call(task: Task) -> Any:
    if _STOP["signum"] is not None:
        raise NotStarted(f"{task.label}: not started, this worker was told to stop", signum=_STOP["signum"])
    _STOP["busy"] = True
    try:
        return run_task(task)
    except _RunPreempted as e:  # fit checkpointed and stopped: refuse what is queued behind it
        _STOP["signum"] = _STOP["signum"] or e.signum
        raise portable(e, task.label) from None
    except NotStarted:
        raise
    except Exception as e:  # pickled back to the parent: it must survive the trip
        raise portable(e, task.label) from None
    finally:
        _STOP["busy"] = False
        if _STOP["signum"] is not None:
            _exit_soon()


@contextmanager
def _signals_blocked():
    """Block the stop signals in this thread for the block: the worker processes spawned in
    it inherit the mask (across exec) until their initializer installs the handler."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _forward(pool: ProcessPoolExecutor, signum: int, told: set[int]) -> None:
    """Send ``signum`` to every worker of ``pool`` not yet told (workers may still be starting)."""
    for pid in list(getattr(pool, "_processes", None) or {}):
        if pid not in told:
            with suppress(ProcessLookupError):
                os.kill(pid, signum)
            told.add(pid)


class LocalExecutor(Executor):
    """A process pool on this machine; ``workers=1``: in this process.

    ``gpus``: the GPUs to spread the workers over (indices or UUIDs); None: every visible
    GPU when there are two or more (one GPU or none: workers are left as they are); ``()``:
    never pin.
    """

    kind = "local"

    def __init__(self, workers: int | None = None, *, threads: int | None = None, max_retries: int = 2,
                 context: str = "spawn", gpus: Sequence[int | str] | None = None) -> None:
        n = cores()
        if workers is not None and (not is_int(workers) or workers < 1):
            raise ValueError(f"workers must be an integer >= 1 (processes; default: one per core, {n} here), "
                             f"received {workers!r}")
        if threads is not None and (not is_int(threads) or threads < 1):
            raise ValueError(f"threads must be an integer >= 1 (intra-op threads per worker), received {threads!r}")
        if context not in ("spawn", "forkserver"):
            # fork would copy torch's thread pools and any CUDA state into the child: unsafe
            raise ValueError(f"context must be 'spawn' or 'forkserver', received {context!r}")
        self.workers = workers if workers is not None else n
        self.threads = threads if threads is not None else max(1, n // self.workers)
        self.max_retries = max_retries
        self.context = context
        self.in_process = self.workers == 1
        if gpus is None:
            auto = visible_gpus() if not self.in_process else []
            self.gpus = tuple(auto) if len(auto) > 1 else ()
        else:
            self.gpus = check_gpus(gpus)
            if self.gpus and self.in_process:
                raise ValueError(f"gpus={list(self.gpus)} spreads worker processes, and workers=1 runs in this "
                                 f"process: give the run its GPU as its device (cuda:{self.gpus[0]}) instead")
        self.restarts = 0  # pools replaced after a worker died, over this executor's life

    def describe(self) -> str:
        if self.in_process:
            return f"local, in this process, {self.threads} thread{'s' * (self.threads > 1)}"
        where = f", over GPUs {','.join(self.gpus)}" if self.gpus else ""
        return f"local, {self.workers} worker processes x {self.threads} thread{'s' * (self.threads > 1)}{where}"

    def map(self, tasks: Sequence[Task], *, on_start: OnEvent | None = None,
            on_done: OnEvent | None = None) -> list[Any]:
        tasks = list(tasks)
        results: list[Any] = [None] * len(tasks)
        if self.in_process:
            # fit stops itself at a checkpoint; between runs (or before fit starts) the signal
            # stops the map at once, before the next run.
            with StopSignals(), torch_threads(self.threads):
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
        self._finished = 0
        stop = StopSignals(forward=True)
        with stop:
            while pending:
                pending = self._round(tasks, pending, results, on_done, stop)
                if stop.signum is not None:
                    raise stopped(stop.signum, self._finished, len(tasks))
                if pending:
                    deaths += 1
                    self.restarts += 1
                    if deaths > self.max_retries:
                        names = ", ".join(tasks[i].label or tasks[i].run_dir for i in pending)
                        raise RuntimeError(f"a worker process died {deaths} times (killed, out of memory, or a "
                                           "script without `if __name__ == '__main__':` that spawned workers "
                                           f"re-run); unfinished: {names}; rerun the command to resume them, "
                                           "with fewer --workers if memory is short")
        return results

    def _round(self, tasks: list[Task], todo: list[int], results: list[Any], on_done: OnEvent | None,
               stop: StopSignals) -> list[int]:
        """Run ``todo`` on a fresh pool; return the indices left unfinished by a dead worker
        (or, after a stop signal, by the stop)."""
        ctx = mp.get_context(self.context)
        broken: list[int] = []
        told: set[int] = set()  # workers the stop signal was passed to
        with _signals_blocked():
            # multiprocessing's resource tracker (started by the first shared value) ignores
            # SIGINT/SIGTERM but not SIGUSR1: a signal to the whole process group (Slurm's
            # --signal=USR1) killed it, and its restart printed a KeyError traceback. Started
            # with every stop signal blocked, it keeps them blocked (it unblocks only those two).
            resource_tracker.ensure_running()
            slot = ctx.Value("i", 0)
        with ProcessPoolExecutor(max_workers=min(self.workers, len(todo)), mp_context=ctx,
                                 initializer=_init_worker,
                                 initargs=(self.threads, os.getpid(), self.gpus, slot)) as pool:
            with _signals_blocked():  # workers are spawned by submit, in this thread
                futs: dict[Future, int] = {pool.submit(_call, tasks[i]): i for i in todo}
            waiting = set(futs)
            try:
                while waiting:
                    # A timeout, so a signal that arrives while we wait is acted on within 0.2 s.
                    done, waiting = wait(waiting, timeout=0.2, return_when=FIRST_COMPLETED)
                    for f in sorted(done, key=futs.__getitem__):  # deterministic order for logs
                        i = futs[f]
                        try:
                            results[i] = f.result()
                        except BrokenProcessPool:
                            broken.append(i)
                            continue
                        except (_RunPreempted, NotStarted) as e:  # a worker got the signal itself (Slurm
                            stop.signum = stop.signum or e.signum  # signals every process): stop them all
                            continue
                        self._finished += 1
                        if on_done:
                            on_done(i, tasks[i], results[i])
                    if stop.signum is not None:
                        for f in waiting:  # still queued here: never starts (running ones report back)
                            f.cancel()
                        waiting = {f for f in waiting if not f.cancelled()}
                        _forward(pool, stop.signum, told)  # again each turn: a worker may have just started
            except BaseException:
                # A task failed (or Ctrl-C): start nothing new, let the running ones stop at
                # a checkpoint-safe point by finishing; the with-block waits for them.
                pool.shutdown(wait=True, cancel_futures=True)
                raise
        return sorted(broken)
