"""The unit of work and the interface every executor implements.

A :class:`Task` is plain data: the import path of a function, its config as JSON-able
data and its run folder. Any process that can import resgrad (a pool worker, a Ray
worker, a Slurm job) runs it with :func:`run_task`; what it produced is in its run folder,
which the parent reads back — the return value is only a convenience for logs.
"""

from __future__ import annotations

import functools
import importlib
import os
import pickle
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

# The one signal catcher and its exceptions, shared with train (a torch-free lower module).
from ..stopping import STOP_SIGNALS, StopSignals, stopped  # noqa: F401 - local, ray and slurm import stopped here
from ..stopping import ExecutorPreempted as Preempted

__all__ = ["Task", "TaskFailed", "Preempted", "NotStarted", "StopSignals", "Executor", "OnEvent", "run_task",
           "cores", "portable", "torch_threads", "probe", "STOP_SIGNALS"]

# on_start / on_done hooks: (index in the task list, task, return value or None)
OnEvent = Callable[[int, "Task", Any], None]


@dataclass(frozen=True)
class Task:
    """One independent run, picklable and JSON-able."""

    fn: str  # "package.module:function", importable wherever the task runs; called fn(config, run_dir)
    config: dict[str, Any] = field(default_factory=dict)  # plain data: everything the run's numbers depend on
    run_dir: str = ""  # the run's folder, on storage every worker sees
    label: str = ""  # how logs name the run ("resnet20-s0")

    def __post_init__(self) -> None:
        mod, sep, name = self.fn.partition(":")
        if not (mod and sep and name):
            raise ValueError(f"Task.fn must be 'package.module:function', received {self.fn!r}")


class TaskFailed(RuntimeError):
    """A task raised an exception that cannot travel between processes; its type and message."""


class NotStarted(BaseException):
    """A worker refused a task, or stopped it before it trained, because it was told to stop.

    A BaseException, like KeyboardInterrupt, so that no ``except Exception`` in a run swallows it.
    """

    def __init__(self, message: str, *, signum: int) -> None:
        super().__init__(message)
        self.signum = signum

    def __reduce__(self) -> tuple:
        return functools.partial(type(self), signum=self.signum), (str(self),)


def run_task(task: Task) -> Any:
    """Import ``task.fn`` and call it on the task's config and run folder."""
    mod, _, name = task.fn.partition(":")
    fn = importlib.import_module(mod)
    for part in name.split("."):
        fn = getattr(fn, part)
    return fn(task.config, task.run_dir)


def probe(config: dict[str, Any], run_dir: str) -> dict[str, Any]:
    """A task that trains nothing: where it ran (pid, host, torch threads, visible GPUs).

    ``Task("resgrad.executors:probe")`` checks a cluster before a sweep. ``config["sleep"]``
    seconds of waiting and ``config["fail"]`` (a message to raise as ValueError) let tests
    exercise an executor without training.
    """
    import socket
    import time

    import torch

    if config.get("sleep"):
        time.sleep(float(config["sleep"]))
    if config.get("fail"):
        raise ValueError(str(config["fail"]))
    return {"pid": os.getpid(), "host": socket.gethostname(), "threads": torch.get_num_threads(),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"), "run_dir": run_dir,
            "config": config}


def portable(exc: BaseException, label: str = "") -> BaseException:
    """``exc`` if it survives a pickle round trip (so a worker can send it home), else a
    TaskFailed with its type and first line (a third-party exception with a keyword-only
    constructor and no ``__reduce__``; resgrad's own define one)."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        where = f"{label}: " if label else ""
        return TaskFailed(f"{where}{type(exc).__name__}: {msg}")


def cores() -> int:
    """CPU cores this process may use (the affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


@contextmanager
def torch_threads(n: int | None):
    """Run the block with ``n`` intra-op threads (None: leave them), restoring them after."""
    if n is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class Executor(ABC):
    """Runs independent tasks; ``map`` returns their return values in task order.

    Completion order never matters: every task seeds itself from its config and writes
    its own run folder. Use an executor as a context manager (or call ``close``) so the
    processes or clusters it started are stopped, exceptions included.
    """

    kind: ClassVar[str] = ""
    in_process: bool = False  # True: tasks run in this process (progress bars may be shown)

    @abstractmethod
    def map(self, tasks: Sequence[Task], *, on_start: OnEvent | None = None,
            on_done: OnEvent | None = None) -> list[Any]:
        """Run every task; ``on_start``/``on_done`` are called in this process as they go."""

    def describe(self) -> str:
        """One line for logs ("local, 2 workers x 1 thread")."""
        return self.kind

    def start(self) -> None:
        """Start or join what the executor needs, so a bad address fails before any work (``map`` calls it)."""
        return None  # a pool starts with its first map

    def close(self) -> None:
        """Stop what this executor started (idempotent)."""
        return None  # pools stop at the end of each map

    def __enter__(self) -> Executor:
        # A signal outside map (loading data, reading results): stop with the one line, not a
        # silent exit 143; map and fit install their own handlers while they run.
        self._signals = StopSignals().__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.close()
        finally:
            signals = getattr(self, "_signals", None)
            if signals is not None:
                signals.__exit__()
                self._signals = None
