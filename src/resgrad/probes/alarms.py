"""Alarms while a model trains: :class:`GradientAlarms`, a callback beside a GradientMonitor.

    mon = GradientMonitor(model, every=10, activations="blocks")
    alarms = GradientAlarms(mon, window=200, loggers=[logger])
    resgrad.fit(model, data, config, callbacks=[mon, alarms])     # the monitor first

or, in a plain loop, ``alarms.check()`` after ``mon.step(step)``. Each alarm of
:mod:`resgrad.verdicts.alarms` (vanishing, exploding, growing, dead, non-finite) is said
once: one log line (``logging`` logger ``resgrad.alarms``, level WARNING, which Python prints
to stderr when nothing else is configured; or ``log=print``), one event per logger
(``log_metrics({"resgrad/alarm/<kind>": value}, step)``: TensorBoard, W&B, MLflow, JSONL, CSV)
and one call per ``sinks`` entry with the :class:`~resgrad.verdicts.alarms.Alarm`.

It reads the monitor's rows only at the steps the monitor measures, so between log steps it
adds no host read to the step.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from torch import nn
from torch.optim import Optimizer

from ..callbacks import Callback
from ..verdicts.alarms import Alarm, AlarmThresholds, AlarmWatch
from .monitor import GradientMonitor

__all__ = ["GradientAlarms", "LOGGER_NAME", "measures", "new_rows"]

LOGGER_NAME = "resgrad.alarms"


def _warn(line: str) -> None:
    logging.getLogger(LOGGER_NAME).warning("resgrad alarm: %s", line)


class GradientAlarms(Callback):
    """Judge ``monitor``'s rows as it measures them; each alarm kind fires once.

    ``thresholds``/``overrides``: :class:`~resgrad.verdicts.alarms.AlarmThresholds` and its
    fields (``window``, ``vanishing_decades``, ``exploding_decades``, ``growing_decades``,
    ``dead_norm``). ``log``: a callable taking the alarm's line (None: silent).
    ``loggers``: :class:`resgrad.integrations.loggers.MetricLogger` objects (anything with
    ``log_metrics(dict, step)``). ``sinks``: callables taking the Alarm.
    """

    def __init__(self, monitor: GradientMonitor | None = None, *, thresholds: AlarmThresholds | None = None,
                 log: Callable[[str], None] | None = _warn, loggers: Iterable[Any] = (),
                 sinks: Iterable[Callable[[Alarm], None]] = (), prefix: str = "resgrad",
                 **overrides: Any) -> None:
        if monitor is not None and not isinstance(monitor, GradientMonitor):
            raise TypeError(f"GradientAlarms needs a GradientMonitor, received {type(monitor).__name__}")
        self.watch = AlarmWatch(thresholds, **overrides)
        self.monitor = monitor
        self.log = log
        self.loggers = list(loggers)
        for lg in self.loggers:
            if not callable(getattr(lg, "log_metrics", None)):
                raise TypeError(f"loggers must have log_metrics(metrics, step), received {type(lg).__name__}")
        self.sinks = list(sinks)
        self.prefix = prefix
        self._seen = 0  # monitor rows already judged

    @property
    def thresholds(self) -> AlarmThresholds:
        return self.watch.thresholds

    @property
    def fired(self) -> list[Alarm]:
        """Every alarm said so far, in order."""
        return self.watch.fired

    def check(self, rows: Iterable[dict[str, Any]] | None = None) -> list[Alarm]:
        """Judge ``rows`` (default: the monitor's rows not judged yet, which reads the device)
        as one or more complete steps; say and return the alarms that fire."""
        if rows is None:
            if self.monitor is None:
                raise ValueError("check() needs rows, or a monitor given to GradientAlarms(monitor)")
            rows, self._seen = new_rows(self.monitor, self._seen)
        new = self.watch.feed(rows) + self.watch.flush()
        for a in new:
            self.say(a)
        return new

    def say(self, alarm: Alarm) -> None:
        """One log line, one logger event per logger, one call per sink."""
        if self.log is not None:
            self.log(alarm.message)
        for lg in self.loggers:
            lg.log_metrics({f"{self.prefix}/alarm/{alarm.kind}": float(alarm.value or 0.0)}, alarm.step)
        for sink in self.sinks:
            sink(alarm)

    # ---- callback hooks --------------------------------------------------------------

    def on_before_optimizer_step(self, model: nn.Module, optimizer: Optimizer, step: int) -> None:
        if self.monitor is not None and measures(self.monitor, step):
            self.check()

    def state_dict(self) -> dict[str, Any]:
        return {"alarms": self.watch.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "alarms" in state:
            self.watch.load_state_dict(state["alarms"])
        self._seen = 0
        if self.monitor is not None:
            self._seen = len(new_rows(self.monitor, 0)[0])  # rows before the resume were judged already


def measures(monitor: GradientMonitor, step: int) -> bool:
    """Does ``monitor`` measure ``step``? (Its own schedule, so a reader of its rows reads
    them only then: between log steps no host read is added.)"""
    options = getattr(monitor, "_due_options", None)  # per-quantity schedules: any of them
    if callable(options):
        return any(options(step).values())
    due = getattr(monitor, "_due", None)
    if callable(due):
        return bool(due(step))
    if monitor.schedule is not None:
        return bool(monitor.schedule(step))
    return step % monitor.every == 0


def new_rows(monitor: GradientMonitor, seen: int) -> tuple[list[dict[str, Any]], int]:
    """The monitor's rows after the first ``seen`` that are complete, and the new count.

    A step whose update norms (``updates=True``) wait for the optimizer step is left for
    the next call, so reading here never cuts a step's ``update`` rows off.
    """
    flush = getattr(monitor, "_flush", None)
    rows = getattr(monitor, "_rows", None)
    if callable(flush) and isinstance(rows, list):
        flush()  # materialises the measured steps, except one awaiting its update norms
    else:
        rows = monitor.records
    return rows[seen:], len(rows)
