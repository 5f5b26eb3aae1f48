"""A run's monitor rows on disk as it trains: :class:`MonitorFile` writes ``monitor.jsonl``.

    mon = GradientMonitor(model, every=10, activations="blocks")
    alarms = GradientAlarms(mon)
    out = MonitorFile("runs/x/monitor.jsonl", mon, alarms=alarms)
    resgrad.fit(model, data, config, callbacks=[mon, out], out_dir="runs/x")   # monitor first

    # or a plain loop:  mon.step(step); out.write()   after each backward
    # then:             resgrad watch runs/x

One JSON object per line: the monitor's tidy rows (``step, name, kind, block, norm, rms,
numel, nonfinite, ratio``; NaN/Inf as null) and, when ``alarms`` is given, one line per
alarm (``{"step", "kind": "alarm", "alarm", "name", "since", "value", "message"}``). Each
measured step's lines go to the file in one ``write`` on an ``O_APPEND`` descriptor, so a
reader (``resgrad watch``) following the file sees whole steps and never half a line, and
rows leave the process at each log step (no buffering until the run ends). Only the rows of
measured steps are read, so between log steps nothing is read from the device.

Resume: the callback's state (saved in the run's checkpoint) is the next step; a resumed run
cuts the file back to the steps before it, as ``metrics.jsonl`` is cut back to the
checkpointed epochs, so no step appears twice. A fresh run starts the file empty. Under
torchrun only rank 0 writes (every rank still measures: the monitor's step is a collective).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from torch import nn
from torch.optim import Optimizer

from ..callbacks import Callback
from ..io import atomic_write
from ..probes.alarms import GradientAlarms, measures, new_rows
from ..probes.monitor import GradientMonitor
from ..verdicts.alarms import Alarm

__all__ = ["MonitorFile", "row_line", "alarm_row", "run_callbacks"]


def row_line(row: dict[str, Any]) -> str:
    """One JSON line; NaN/Inf become null (JSON has neither)."""
    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}
    return json.dumps(clean, separators=(",", ":")) + "\n"


def alarm_row(a: Alarm) -> dict[str, Any]:
    """An alarm as a line of the monitor file (``kind: "alarm"``, so row readers skip it)."""
    return {"step": a.step, "kind": "alarm", "alarm": a.kind, "name": a.name, "since": a.since,
            "value": a.value, "message": a.message}


def _rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


class MonitorFile(Callback):
    """Append ``monitor``'s rows (and ``alarms``' alarms) to ``path`` at every measured step."""

    def __init__(self, path: str | os.PathLike, monitor: GradientMonitor, *,
                 alarms: GradientAlarms | None = None) -> None:
        if not isinstance(monitor, GradientMonitor):
            raise TypeError(f"MonitorFile needs a GradientMonitor, received {type(monitor).__name__}")
        if alarms is not None and not isinstance(alarms, GradientAlarms):
            raise TypeError(f"alarms must be a GradientAlarms, received {type(alarms).__name__}")
        self.path = Path(path)
        self.monitor = monitor
        self.alarms = alarms
        self._fd: int | None = None
        self._seen = 0
        self._next = 0  # the step after the last one this run has passed
        self._resume_at: int | None = None  # set by load_state_dict: cut the file back to it

    # ---- writing ------------------------------------------------------------------

    def open(self) -> MonitorFile:
        """Open the file for appending: cut back to a resumed run's steps, or start it empty."""
        if self._fd is not None:
            return self
        if _rank() == 0:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._cut(self._resume_at or 0)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        return self

    def _cut(self, step: int) -> None:
        if not self.path.is_file():
            return
        if step <= 0:
            atomic_write(self.path, lambda f: None)
            return
        keep: list[str] = []
        for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True):
            if not line.endswith("\n"):
                break  # a torn last line (a kill mid-write)
            try:
                s = json.loads(line).get("step")
            except (ValueError, AttributeError):
                continue
            if isinstance(s, int) and s < step:
                keep.append(line)
        atomic_write(self.path, lambda f: f.write("".join(keep)))

    def write(self) -> int:
        """Append the rows measured since the last call (and the alarms they raise); returns rows written."""
        rows, self._seen = new_rows(self.monitor, self._seen)
        main = _rank() == 0  # under torchrun: one alarm line and one file, from rank 0
        fired = self.alarms.check(rows) if rows and main and self.alarms is not None else []
        if not main or not (rows or fired):
            return len(rows)
        if self._fd is None:
            self.open()
        assert self._fd is not None
        data = "".join([*map(row_line, rows), *(row_line(alarm_row(a)) for a in fired)]).encode()
        view = memoryview(data)
        while view:  # one write() nearly always; loop on a short write
            view = view[os.write(self._fd, view):]
        return len(rows)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> MonitorFile:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        try:
            self.write()
        finally:
            self.close()

    # ---- callback hooks ------------------------------------------------------------

    def on_train_start(self, model: nn.Module) -> None:
        self.open()

    def on_before_optimizer_step(self, model: nn.Module, optimizer: Optimizer, step: int) -> None:
        self._next = step + 1
        if measures(self.monitor, step):
            self.write()

    def on_train_end(self, model: nn.Module) -> None:
        try:
            self._seen = self._write_rest()
        finally:
            self.close()

    def on_exception(self, model: nn.Module, exception: BaseException) -> None:
        self.close()  # rows after the last checkpoint are cut when the run resumes

    def _write_rest(self) -> int:
        self.write()
        rest = self.monitor.records[self._seen:]  # a last step that awaited its update norms
        if rest and self._fd is not None:
            fired = self.alarms.check(rest) if self.alarms is not None else []
            os.write(self._fd, "".join([*map(row_line, rest), *(row_line(alarm_row(a)) for a in fired)]).encode())
        return len(self.monitor.records)

    def state_dict(self) -> dict[str, Any]:
        return {"step": self._next, **({"alarms": self.alarms.state_dict()} if self.alarms is not None else {})}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.alarms is not None and "alarms" in state:
            self.alarms.load_state_dict(state["alarms"])
        self._resume_at = int(state.get("step", 0))
        self._next = self._resume_at
        self._seen = len(new_rows(self.monitor, 0)[0])


def run_callbacks(model: nn.Module, path: str | os.PathLike, every: int, *,
                  log: Any = None) -> list[Callback]:
    """``resgrad train --monitor N``'s callbacks: a GradientMonitor measuring every ``every``
    steps (parameter gradients and, where the model has residual units, per unit the gradient
    at its input, its skip/branch split, ‖F(x)‖/‖x‖ and ‖x‖), its alarms, and the file they go to. ``log``: the alarms' line printer."""
    import warnings

    try:  # per unit: the gradient at its input, its skip/branch split, ‖F(x)‖/‖x‖, ‖x‖
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mon = GradientMonitor(model, every=every, activations="blocks", split=True)
    except (ValueError, TypeError):  # a model without residual units: its parameters' rows only
        mon = GradientMonitor(model, every=every)
    alarms = GradientAlarms(mon, **({"log": log} if log is not None else {}))
    return [mon, MonitorFile(path, mon, alarms=alarms)]
