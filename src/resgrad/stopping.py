"""Stopping on a signal: the signals, the one catcher, and the exceptions a stopped run raises.

Slurm sends SIGTERM before it preempts a job (SIGUSR1 with ``sbatch --signal=USR1@...``),
people press Ctrl-C (SIGINT): on any of :data:`STOP_SIGNALS` a training run finishes its
step, checkpoints and raises :class:`Preempted`; an executor's parent passes the signal on
to its workers and raises :class:`ExecutorPreempted` once they have checkpointed. Both
``resgrad.train`` and ``resgrad.executors`` use :class:`StopSignals`, so they catch the
same signals the same way. This module imports neither torch nor any other resgrad module.
"""

from __future__ import annotations

import functools
import signal
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["STOP_SIGNALS", "StopSignals", "Preempted", "ExecutorPreempted", "NonFiniteLoss", "stopped"]

# Slurm's SIGTERM (and SIGUSR1 with --signal), Ctrl-C; SIGUSR1 is missing on Windows.
STOP_SIGNALS: tuple[signal.Signals, ...] = tuple(
    s for s in (getattr(signal, n, None) for n in ("SIGTERM", "SIGINT", "SIGUSR1")) if s is not None)


class Preempted(RuntimeError):
    """fit stopped on a signal after a mid-epoch checkpoint; rerun the same command to resume."""

    def __init__(self, message: str, *, signum: int, epoch: int, step: int) -> None:
        super().__init__(message)
        self.signum = signum  # the signal that stopped it (exit code 128 + signum)
        self.epoch = epoch  # 1-based epoch in progress
        self.step = step  # global steps done

    def __reduce__(self) -> tuple:  # keyword-only fields: spelled out, so a pool worker can send it home
        return functools.partial(type(self), signum=self.signum, epoch=self.epoch, step=self.step), (str(self),)


class ExecutorPreempted(Preempted):
    """An executor stopped on a signal: every running run checkpointed, none new started.

    ``resgrad.executors.Preempted``. A subclass of :class:`Preempted` (so ``except Preempted``
    catches a single run's stop and a fan-out's alike; the CLI exits 128 + ``signum``);
    ``epoch`` and ``step`` are None, since each run stopped at its own step (its folder says where).
    """

    def __init__(self, message: str, *, signum: int) -> None:
        RuntimeError.__init__(self, message)
        self.signum = signum
        self.epoch = None  # type: ignore[assignment]
        self.step = None  # type: ignore[assignment]

    def __reduce__(self) -> tuple:
        return functools.partial(type(self), signum=self.signum), (str(self),)


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite; the run folder keeps its last good checkpoint."""

    def __init__(self, message: str, *, epoch: int, step: int) -> None:
        super().__init__(message)
        self.epoch = epoch  # 1-based epoch in which it happened
        self.step = step  # 0-based global step index

    def __reduce__(self) -> tuple:  # keyword-only fields: spelled out, so a pool worker can send it home
        return functools.partial(type(self), epoch=self.epoch, step=self.step), (str(self),)


def stopped(signum: int, finished: int = 0, total: int = 0) -> ExecutorPreempted:
    """The one line a fan-out prints when it stopped on ``signum`` (``finished`` of ``total`` runs done)."""
    name = signal.Signals(signum).name
    what = f" after {finished} of {total} runs finished (the running ones checkpointed)" if total else ""
    return ExecutorPreempted(f"stopped on {name}{what}; rerun the same command to resume", signum=signum)


class StopSignals:
    """Catch :data:`STOP_SIGNALS` for a block (main thread only; a no-op elsewhere).

    The first signal is kept in ``signum``. ``forward=True``: record it, call
    ``on_signal(signum)`` when given, and go on — the training loop reads ``signum`` after
    each step (and stops at a checkpoint), a fan-out's parent passes the signal to its
    workers and waits for their checkpoints. ``forward=False`` (nothing runs elsewhere):
    raise :func:`stopped` at once. A second signal changes nothing (a checkpoint write is
    atomic; the loop stops right after it). Handlers are restored on exit.
    """

    def __init__(self, *, forward: bool = False, on_signal: Callable[[int], None] | None = None) -> None:
        self.forward = forward
        self.on_signal = on_signal
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is None:
            self.signum = signum
        if not self.forward:
            raise stopped(signum)
        if self.on_signal is not None:
            self.on_signal(signum)

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()
