"""Follow a run's JSONL files as they grow: :class:`Follower` (one file), :class:`RunFiles` (a run).

Torch-free. A follower reads the bytes appended since its last read, up to the last whole
line (a writer's half-written line waits for the next read), and starts over when the file
was replaced or cut back (a resumed run rewrites ``monitor.jsonl`` atomically: a new inode).

Two line formats are understood, so a user's own training can be watched as well:

- tidy GradientMonitor rows, ``{"step", "name", "kind", "block", "norm", ...}``, as
  ``resgrad train --monitor N`` and :class:`resgrad.integrations.monitor_file.MonitorFile` write
  them (and ``records_to_jsonl``), with alarm lines ``{"kind": "alarm", ...}``;
- metric lines ``{"step": s, "resgrad/grad_norm/<param>": v, ...}``, as
  :class:`resgrad.integrations.loggers.JSONLLogger` writes them (any prefix), turned back
  into rows by :func:`rows_of`.
"""

from __future__ import annotations

import json
import math
import os
import threading
from bisect import bisect_right
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..verdicts.alarms import AlarmWatch

__all__ = ["Follower", "RunFiles", "rows_of", "FAMILY_KIND", "RATIO_KINDS", "MONITOR_FILE", "METRICS_FILE"]

MONITOR_FILE = "monitor.jsonl"  # RunDir.MONITOR (the run folder's names; rundir imports the results layer)
METRICS_FILE = "metrics.jsonl"  # RunDir.METRICS
# Metric family (resgrad/<family>/<name>, probes/names.py) -> row kind.
FAMILY_KIND = {"grad_norm": "param", "act_grad_norm": "activation", "block_grad": "input",
               "weight_norm": "weight", "update_ratio": "update", "skip_grad": "skip", "branch_grad": "branch",
               "forward_ratio": "forward", "stream_norm": "stream", "act_norm": "act_norm"}
# Keys of a line beside the rows that hold a loss (drawn per step when there is no metrics.jsonl).
LOSS_KEYS = ("loss", "train_loss", "eval_loss", "val_loss", "test_loss")
# Kinds whose value is the row's ``ratio`` (‖Δw‖/‖w‖, ‖F(x)‖/‖x‖), not its ``norm``.
RATIO_KINDS = ("update", "forward")


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def rows_of(obj: Any) -> list[dict[str, Any]]:
    """The monitor rows one JSON line holds (a tidy row, an alarm, or a metric line); [] otherwise."""
    if not isinstance(obj, dict) or not isinstance(obj.get("step"), int) or isinstance(obj.get("step"), bool):
        return []
    if "kind" in obj and "name" in obj:
        return [obj]
    step = obj["step"]
    out: list[dict[str, Any]] = []
    for key, v in obj.items():
        parts = key.split("/", 2) if isinstance(key, str) else []
        if len(parts) != 3:
            continue
        _, family, name = parts
        kind = FAMILY_KIND.get(family)
        if kind == "input":
            block = int(name) if name.isdigit() else None
            out.append({"step": step, "name": f"unit {name}", "kind": "input", "block": block, "norm": _num(v),
                        "nonfinite": 0})
        elif kind in RATIO_KINDS:
            out.append({"step": step, "name": name, "kind": kind, "block": None, "norm": None,
                        "ratio": _num(v), "nonfinite": 0})
        elif kind is not None:
            bad = obj.get(f"{parts[0]}/nonfinite/{name}")
            out.append({"step": step, "name": name, "kind": kind, "block": None, "norm": _num(v),
                        "nonfinite": int(bad) if isinstance(bad, (int, float)) else 0})
        elif family == "nonfinite_origin":
            out.append({"step": step, "name": name, "kind": "nonfinite_origin", "block": None, "norm": None,
                        "nonfinite": int(v) if isinstance(v, (int, float)) else 0})
        elif family == "alarm":
            out.append({"step": step, "kind": "alarm", "alarm": name, "name": name, "since": step,
                        "value": _num(v), "message": f"step {step}: {name} (logged by the run)"})
    return out


class Follower:
    """One JSONL file read incrementally; ``entries`` are ``(end byte offset, parsed object)``."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.generation = 0  # bumped when the file is replaced or cut back: readers start over
        self.offset = 0  # bytes consumed (whole lines)
        self.entries: list[tuple[int, Any]] = []
        self._ends: list[int] = []  # entries' end offsets (for bisect)
        self.mtime: float | None = None
        self._ino: int | None = None

    def poll(self) -> bool:
        """Read what was appended; True when the file was replaced (everything read again)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            if self._ino is None:
                return False
            self._restart(None)
            return True
        replaced = self._ino is not None and (st.st_ino != self._ino or st.st_size < self.offset)
        if replaced:
            self._restart(st.st_ino)
        self._ino = st.st_ino
        self.mtime = st.st_mtime
        if st.st_size > self.offset:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                chunk = f.read(st.st_size - self.offset)
            end = chunk.rfind(b"\n")
            if end >= 0:
                pos = self.offset
                for line in chunk[: end + 1].splitlines(keepends=True):
                    pos += len(line)
                    try:
                        obj = json.loads(line)
                    except ValueError:
                        continue  # not JSON (a torn line cut back by a resume): skipped
                    self.entries.append((pos, obj))
                    self._ends.append(pos)
                self.offset += end + 1
        return replaced

    def _restart(self, ino: int | None) -> None:
        self.generation += 1
        self.offset = 0
        self.entries = []
        self._ends = []
        self._ino = ino

    def after(self, offset: int) -> int:
        """Index of the first entry that ends beyond byte ``offset``."""
        return bisect_right(self._ends, offset)


class RunFiles:
    """A run being watched: its monitor file, its metrics file, and the alarms on its rows.

    ``source``: a run folder (``monitor.jsonl`` and ``metrics.jsonl`` in it) or one JSONL
    file (its folder's ``metrics.jsonl`` is read beside it). Thread-safe: the server's
    handler threads call :meth:`data`.
    """

    MAX_ROWS = 50_000  # rows per answer: a long run's first load comes in several polls

    def __init__(self, source: str | os.PathLike, **alarm_overrides: Any) -> None:
        src = Path(source)
        if src.is_dir() or not src.suffix:
            self.folder, self.monitor_path = src, src / MONITOR_FILE
        else:
            self.folder, self.monitor_path = src.parent, src
        self.monitor = Follower(self.monitor_path)
        self.metrics = Follower(self.folder / METRICS_FILE)
        self._overrides = alarm_overrides
        self._alarms = AlarmWatch(**alarm_overrides)
        self._judged = 0  # monitor entries fed to the alarm watch
        self._logged: list[dict[str, Any]] = []  # alarm lines the run wrote
        self._losses: list[list[Any]] = []  # [step, key, loss] of lines beside the rows
        self._lock = threading.Lock()

    def _refresh(self) -> None:
        if self.monitor.poll():
            self._alarms = AlarmWatch(**self._overrides)
            self._judged = 0
            self._logged, self._losses = [], []
        self.metrics.poll()
        entries = self.monitor.entries
        new = entries[self._judged:]
        self._judged = len(entries)
        rows = [r for _, obj in new for r in rows_of(obj)]
        self._logged += [self._alarm_dict(r) for r in rows if r.get("kind") == "alarm"]
        # Losses logged beside the rows (an HF Trainer's on_log line: {"step", "loss", ...}), per step.
        # (Not the HF Trainer's end-of-training summary, whose train_loss is the mean over the run.)
        self._losses += [[obj["step"], k, obj[k]] for _, obj in new if isinstance(obj, dict)
                         and isinstance(obj.get("step"), int) and "train_runtime" not in obj
                         for k in LOSS_KEYS if _num(obj.get(k)) is not None]
        self._alarms.feed(r for r in rows if r.get("kind") != "alarm")
        if not new and entries:
            self._alarms.flush()  # nothing arrived since the last poll: the last step is whole

    def data(self, offset: int = 0, generation: int | None = None, limit: int | None = None) -> dict[str, Any]:
        """What the page needs after byte ``offset`` of the monitor file (of ``generation``;
        another one: from the start, ``reset`` true): rows as ``[step, kind, name, value,
        nonfinite, block]``, the new offset, every epoch of metrics, and the alarms so far."""
        limit = self.MAX_ROWS if limit is None else limit
        with self._lock:
            self._refresh()
            fol = self.monitor
            reset = generation is not None and generation != fol.generation
            start = 0 if reset else fol.after(offset)
            rows: list[list[Any]] = []
            i = start
            end = 0 if reset else min(offset, fol.offset)
            while i < len(fol.entries) and len(rows) < limit:
                pos, obj = fol.entries[i]
                for r in rows_of(obj):
                    if r.get("kind") == "alarm":
                        continue
                    value = r.get("ratio") if r.get("kind") in RATIO_KINDS else r.get("norm")
                    rows.append([r["step"], r.get("kind"), r.get("name"), _num(value), r.get("nonfinite") or 0,
                                 r.get("block")])
                end = pos
                i += 1
            logged = list(self._logged)
            kinds = {a["kind"] for a in logged}
            alarms = logged + [{**a.to_dict(), "source": "watch"} for a in self._alarms.fired if a.kind not in kinds]
            epochs = [obj for _, obj in self.metrics.entries if isinstance(obj, dict) and "epoch" in obj]
            return {"generation": fol.generation, "offset": end, "reset": reset, "more": i < len(fol.entries),
                    "rows": rows, "metrics": epochs, "losses": list(self._losses), "alarms": alarms,
                    "source": str(self.monitor_path), "found": self.monitor_path.is_file(),
                    "modified": fol.mtime, "thresholds": asdict(self._alarms.thresholds)}

    @staticmethod
    def _alarm_dict(r: dict[str, Any]) -> dict[str, Any]:
        return {"kind": r.get("alarm"), "step": r.get("step"), "name": r.get("name"), "since": r.get("since"),
                "value": r.get("value"), "message": r.get("message"), "source": "run"}
