"""One run folder: its layout, its config, its metrics, its checkpoint and its results.

(Over 500 lines on purpose: this is the one module that spells a run folder's files and their
checks, lock, config, metrics and their digests, checkpoint and results, so no other does.)

Every training run, experiment and command writes through a :class:`RunDir`; nothing
else spells these names::

    config.json          {"kind": "resgrad.train" | "resgrad.flow" | ..., "config": {...}, "config_version": 1,
                          "environment": {...}, "created": "..."}  (experiments: written by their driver)
    metrics.jsonl        one JSON line per finished epoch (training runs)
    monitor.jsonl        GradientMonitor rows and alarms as a run trains (resgrad train --monitor N)
    checkpoints/last.pt  the last checkpoint (training runs), written atomically
    checkpoints/last.pt.sha256   its checksum (and the previous one's, for a kill between the two renames),
                         and the digest of every metrics line up to the checkpoint's epoch
    results.json         the run's typed Result (experiments), written atomically
    report.html          rendered from results.json (studies)
    .lock                the writer's lock (fcntl.flock) and who holds it: pid, host, since, command

"Does this config match?" is one check for all of them: :meth:`RunDir.claim` writes
``config.json`` into a fresh folder and, in a used one, compares what ``compare``
extracts from the old and new records, naming the fields that differ.

One writer per folder: :meth:`RunDir.locked` takes an exclusive ``flock`` on ``.lock``
(released by the kernel when its holder dies, so a kill -9 never leaves a folder locked),
a second writer gets :class:`RunLocked` naming the holder, and the taker removes the
temp files a killed writer left. Readers take no lock: every file is replaced atomically.
A lock held by a process on another host (shared storage) cannot be checked from here: the
refusal names the ``.lock`` file to remove once that host is known to be gone.

Provenance of ``metrics.jsonl``: with each checkpoint the run records, in the checkpoint's
checksum file, the :func:`row_digest` of every metrics line it computed up to that epoch
(from memory, not from the file). :meth:`RunDir.read_metrics` checks every line against it, so
a finished run's shown and reported numbers are the ones it computed; a line changed since
(a plausible edit, a bad sector that still parses) is one line naming the file and the epoch.
Why there and not a digest inside each line: the lines stay as every reader knows them, the
checksum file is written atomically with the checkpoint it describes, and one digest per
epoch names the epoch that changed. A folder written before the digests (no ``metrics`` in
its checksum file, or no checksum file) is read as before, unchecked.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, TypeVar

from .io import TEMP_PATTERN, atomic_write, jsonable, write_json
from .results import Record, Result, ResultError, read_file
from .results.metrics import MetricsRow
from .stopping import Preempted

__all__ = ["RunDir", "RunLocked", "DamagedRun", "config_diff", "flatten", "row_digest"]


class RunLocked(ValueError):
    """Another process is writing this run folder (exit 2 from the CLI: use another --out)."""


class DamagedRun(ValueError):
    """A file of the run does not hold what it should (a cut metrics file, a checkpoint that
    fails its checksum); the message names the file and the way forward."""


# Locks this process holds: resolved folder -> [fd, depth] (a study's stage, fit called twice).
_HELD: dict[str, list[int]] = {}
_HELD_GUARD = threading.Lock()

R = TypeVar("R", bound=Result)


def row_digest(row: dict[str, Any]) -> str:
    """sha256 of one metrics row's canonical JSON (sorted keys): what the checkpoint records per epoch."""
    text = json.dumps(jsonable(row), sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists stay whole), JSON-normalised."""
    out: dict[str, Any] = {}
    for k, v in jsonable(d).items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def config_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``field: old -> new`` for every flattened field that differs."""
    a, b = flatten(old), flatten(new)
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


class RunDir:
    """The folder of one run (``RunDir("runs/resnet20-mnist1d-s0")``)."""

    CONFIG = "config.json"
    METRICS = "metrics.jsonl"
    MONITOR = "monitor.jsonl"
    CHECKPOINT = "checkpoints/last.pt"
    CHECKSUM = "checkpoints/last.pt.sha256"
    RESULTS = "results.json"
    REPORT = "report.html"
    LOCK = ".lock"

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.read_only = False  # set by locked(read_only_ok=True) on storage that cannot be written

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __fspath__(self) -> str:
        return str(self.path)

    # ---- layout -------------------------------------------------------------------

    @property
    def config_path(self) -> Path:
        return self.path / self.CONFIG

    @property
    def metrics_path(self) -> Path:
        return self.path / self.METRICS

    @property
    def monitor_path(self) -> Path:
        return self.path / self.MONITOR

    @property
    def checkpoint_path(self) -> Path:
        return self.path / self.CHECKPOINT

    @property
    def checksum_path(self) -> Path:
        return self.path / self.CHECKSUM

    @property
    def lock_path(self) -> Path:
        return self.path / self.LOCK

    @property
    def results_path(self) -> Path:
        return self.path / self.RESULTS

    @property
    def report_path(self) -> Path:
        return self.path / self.REPORT

    def file(self, name: str) -> Path:
        """Another file of the run (a figure, say)."""
        return self.path / name

    def sub(self, name: str) -> RunDir:
        """A run folder inside this one (a study's stages, an experiment's training runs)."""
        return RunDir(self.path / name)

    # ---- one writer -----------------------------------------------------------------

    @contextmanager
    def locked(self, *, read_only_ok: bool = False) -> Iterator[RunDir]:
        """Hold this folder's writer lock for the block (re-entrant within a process).

        A second process gets :class:`RunLocked` naming the holder (pid, host, since,
        command). ``read_only_ok``: on storage that cannot be written, go on without the lock
        (a finished run can still be read); a write then fails naming the file.
        """
        key = str(self.path.resolve())
        with _HELD_GUARD:
            held = _HELD.get(key)
            if held is not None:
                held[1] += 1
        if held is not None:
            try:
                yield self
            finally:
                with _HELD_GUARD:
                    held[1] -= 1
            return
        fd = self._acquire(read_only_ok)
        if fd is None:
            self.read_only = True
            try:
                yield self
            finally:
                self.read_only = False
            return
        with _HELD_GUARD:
            _HELD[key] = [fd, 1]
        try:
            self._remove_stale_temp()
            yield self
        finally:
            with _HELD_GUARD:
                _HELD.pop(key, None)
            os.close(fd)  # releases the flock; the file stays (removing it would race a new taker)

    def need_write(self) -> None:
        """One line instead of a write that read-only storage would refuse half-way."""
        if self.read_only:
            raise OSError(errno.EROFS, f"cannot write the run folder {self.path}: it is on read-only storage; pass "
                                       "an --out folder you can write to")

    def _acquire(self, read_only_ok: bool) -> int | None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            if read_only_ok and e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
                return None
            raise OSError(e.errno, f"cannot write the run folder {self.path}: {e.strerror}; pass an --out "
                                   "folder you can write to") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder, host = _describe_holder(fd)
            os.close(fd)
            if host is not None and host != socket.gethostname():
                # flock cannot see whether a process on another host still lives (shared storage).
                raise RunLocked(f"{self.path} is being written by {holder}; wait for it to finish, or use another "
                                f"--out folder; if {host} is gone (the job no longer runs), remove "
                                f"{self.lock_path} and rerun") from None
            raise RunLocked(f"{self.path} is being written by {holder}; wait for it to finish, or use another "
                            "--out folder") from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": _now(),
                "command": " ".join([os.path.basename(sys.argv[0] or "python"), *sys.argv[1:]])[:300]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        return fd

    def _remove_stale_temp(self) -> None:
        """Temp files of a writer that was killed mid-write (we hold the lock: nobody else writes)."""
        for folder in (self.path, self.checkpoint_path.parent):
            for tmp in folder.glob(TEMP_PATTERN):
                tmp.unlink(missing_ok=True)

    # ---- config -------------------------------------------------------------------

    def has_config(self) -> bool:
        return self.config_path.is_file()

    def read_config(self, kind: str | None = None) -> dict[str, Any]:
        """``config.json`` as a dict; with ``kind``, it must be that kind of run."""
        if not self.has_config():
            raise FileNotFoundError(f"{self.path} is not a resgrad run folder (no {self.CONFIG}); pass a folder "
                                    "written by resgrad, e.g. runs/resnet20-mnist1d-s0")
        try:
            record = read_file(self.config_path)
        except ResultError as e:
            raise ValueError(f"{e}; or use a new --out folder") from None
        if not isinstance(record, dict):
            raise ValueError(f"{self.config_path} holds {type(record).__name__}, not a resgrad config; "
                             "use a new --out folder")
        if kind is not None and record.get("kind") != kind:
            got = record.get("kind") or "no kind"
            raise ValueError(f"{self.config_path} is a {got} folder, not a {kind} one; use a new --out folder")
        return record

    def write_config(self, record: dict[str, Any]) -> Path:
        return write_json(self.config_path, record)

    def claim(
        self, record: dict[str, Any], *, compare: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        fresh: bool = False, additions_ok: bool = False,
    ) -> dict[str, Any] | None:
        """Make this folder hold ``record``'s run; return the old record when it already did.

        A folder without ``config.json`` (or ``fresh=True``) gets ``record`` written. A
        folder with one must be the same kind and, through ``compare`` (default: the
        record's ``"config"``), the same config; otherwise a ValueError names the fields
        that differ and what to do. ``additions_ok``: fields only the new record has (a
        stage or option added by a newer resgrad) are not differences; config.json is
        rewritten with them.
        """
        kind = record.get("kind")
        if not isinstance(kind, str):
            raise ValueError(f"a run record needs a 'kind', received {sorted(record)}")
        record = {**record, "created": record.get("created") or _now()}
        if fresh or not self.has_config():
            self.write_config(record)
            return None
        old = self.read_config(kind)
        pick = compare or (lambda r: r.get("config") or {})
        a, b = flatten(pick(old)), flatten(pick(record))
        added = additions_ok and bool(set(b) - set(a))
        keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k) and not (additions_ok and k not in a))
        diff = [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in keys]
        if diff:
            raise ValueError(f"{self.path} holds a run with a different config ({'; '.join(diff)}); use a new "
                             f"--out folder, or remove {self.path} to start over")
        if added:
            self.write_config({**record, "created": old.get("created", record["created"])})
        return old

    # ---- metrics (one JSON line per finished epoch) ---------------------------------

    def read_metrics(self) -> list[dict[str, Any]]:
        """Rows of ``metrics.jsonl``, each typed (:class:`MetricsRow`) and checked against the digests
        the run recorded with its checkpoint; a torn last line (a kill mid-write) is left out.

        A bad line with good lines after it is not a kill's trace but damage: DamagedRun, as is
        a field of the wrong type (naming the line and the field) and a line that differs from
        what the run computed (naming the epoch).
        """
        rows: list[dict[str, Any]] = []
        if not self.metrics_path.is_file():
            return rows
        lines = self.metrics_path.read_bytes().decode("utf-8", errors="replace").splitlines()
        numbers: list[int] = []
        for i, raw in enumerate(lines):
            try:
                row = json.loads(raw)
                ok = isinstance(row, dict) and isinstance(row.get("epoch"), int) and not isinstance(row["epoch"], bool)
            except json.JSONDecodeError:
                ok = False
            if not ok:
                if i == len(lines) - 1:
                    break  # the line a kill tore: that epoch is redone from the checkpoint
                raise DamagedRun(f"{self.metrics_path} line {i + 1} is not a metrics row (the file is damaged); "
                                 "start over with --no-resume, or restore the file")
            try:  # typed, but kept as parsed: its digest is of what the run wrote
                MetricsRow.check(row, source=f"{self.metrics_path} line {i + 1}")
            except ResultError as e:
                raise DamagedRun(str(e).split("; ")[0] + "; the file is damaged: restore it, or start over with "
                                 "--no-resume") from None
            rows.append(row)
            numbers.append(i + 1)
        recorded = self.metrics_digests()
        if recorded is not None:
            for n, row in zip(numbers, rows, strict=True):
                e = row["epoch"]
                if 1 <= e <= len(recorded) and row_digest(row) != recorded[e - 1]:
                    raise DamagedRun(f"{self.metrics_path} line {n} (epoch {e}) is not what the run computed "
                                     f"(its digest differs from the one recorded in {self.checksum_path}): the file "
                                     "was changed after it was written; restore it, or start over with --no-resume")
        return rows

    def metrics_digests(self) -> list[str] | None:
        """The digest of each epoch's metrics row (epoch 1 first) recorded with the checkpoint, or None
        for a folder written before them."""
        seal = self._seal()
        return None if seal is None else seal.metrics

    def _seal(self) -> _Seal | None:
        """The checksum file, typed (None: none written, resgrad 0.1); damaged: DamagedRun naming the field."""
        if not self.checksum_path.is_file():
            return None
        try:
            return _Seal.from_json(read_file(self.checksum_path), source=str(self.checksum_path))
        except ResultError as e:
            raise DamagedRun(f"{str(e).split('; ')[0][:200]} (the file is damaged); start over with --no-resume, "
                             "or restore the file") from None

    def rewrite_metrics(self, rows: list[dict[str, Any]]) -> None:
        text = "".join(json.dumps(r) + "\n" for r in rows)
        if self.metrics_path.is_file() and self.metrics_path.read_bytes() == text.encode():
            return  # unchanged: a finished run is read without writing (read-only storage)
        atomic_write(self.metrics_path, lambda f: f.write(text))

    def keep_metrics(self, epochs_done: int) -> list[dict[str, Any]]:
        """Keep each epoch up to ``epochs_done`` once (lines after a checkpoint are redone).

        Every epoch up to ``epochs_done`` must be there: a metrics file shorter than the
        checkpoint is damage (DamagedRun naming both), never a result.
        """
        by_epoch = {r["epoch"]: r for r in self.read_metrics() if r["epoch"] <= epochs_done}
        missing = [e for e in range(1, epochs_done + 1) if e not in by_epoch]
        if missing:
            have = f"epochs {min(by_epoch)}-{max(by_epoch)}" if by_epoch else "no epoch"
            raise DamagedRun(f"{self.metrics_path} holds {have} but the checkpoint {self.checkpoint_path} is at "
                             f"epoch {epochs_done} (epoch {missing[0]} is missing): the metrics file is damaged; "
                             "start over with --no-resume, or restore the file")
        rows = [by_epoch[e] for e in sorted(by_epoch)]
        self.rewrite_metrics(rows)
        return rows

    def open_metrics(self) -> IO[str]:
        """``metrics.jsonl`` for appending (close it when done)."""
        return open(self.metrics_path, "a")  # noqa: SIM115 - the caller closes it

    @staticmethod
    def append_metrics(f: IO[str], row: dict[str, Any]) -> None:
        f.write(json.dumps(row, allow_nan=False) + "\n")
        f.flush()
        os.fsync(f.fileno())  # a kill -9 right after the epoch still finds the line on disk

    # ---- checkpoint -----------------------------------------------------------------

    def has_checkpoint(self) -> bool:
        return self.checkpoint_path.is_file()

    def remove_checkpoint(self) -> None:
        self.checkpoint_path.unlink(missing_ok=True)
        self.checksum_path.unlink(missing_ok=True)

    def save_checkpoint(self, state: dict[str, Any], metrics: list[dict[str, Any]] | None = None) -> None:
        """``torch.save`` into a temp file, record its checksum, ``os.replace``.

        A kill leaves the old checkpoint or the new one. The checksum file is written first
        and accepts both the new digest and the current file's, so a kill between the two
        renames still leaves a checkpoint that verifies. ``metrics``: the rows the run computed
        up to this checkpoint (epoch 1 first); their :func:`row_digest` are recorded beside the
        checksum (a prefix of them also describes the previous checkpoint: rows are appended).
        """
        import torch

        digests = None if metrics is None else [row_digest(r) for r in metrics]

        def seal(tmp: Path) -> None:
            current = [self._digest(self.checkpoint_path)] if self.has_checkpoint() else []
            record: dict[str, Any] = {"sha256": _sha256(tmp), "accept": [_sha256(tmp), *current],
                                      "bytes": tmp.stat().st_size}
            if digests is not None:
                record["metrics"] = digests
            write_json(self.checksum_path, record)

        atomic_write(self.checkpoint_path, lambda f: torch.save(state, f), mode="wb", before_replace=seal)

    def _digest(self, path: Path) -> str:
        return _sha256(path)

    def verify_checkpoint(self) -> None:
        """DamagedRun when the checkpoint fails its recorded checksum (none recorded: resgrad 0.1, accepted)."""
        seal = self._seal()
        if seal is None:
            return
        if _sha256(self.checkpoint_path) not in seal.accept:
            raise DamagedRun(f"{self.checkpoint_path} fails its checksum ({self.checksum_path}): the file is damaged; "
                             "start over with --no-resume (or restore the file from a copy)")

    def load_checkpoint(self) -> dict[str, Any]:
        """The checkpoint's state (tensors on the CPU, ``weights_only``), checksum verified; one line when not."""
        import pickle

        import torch

        self.verify_checkpoint()
        try:
            state = torch.load(self.checkpoint_path, map_location="cpu", weights_only=True)
        except Preempted:
            # A stop signal while reading (its handler raises here, and Preempted is a RuntimeError):
            # the one stop line, never "cannot read checkpoint ...; start over".
            raise
        except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as e:
            # Never pass on torch's "weights_only=False will likely succeed": that runs arbitrary code.
            first = (str(e).strip().splitlines() or [type(e).__name__])[0].split(" (1)")[0]
            raise DamagedRun(f"cannot read checkpoint {self.checkpoint_path} ({first[:160]}); start over with "
                             "--no-resume") from None
        if not isinstance(state, dict):
            raise DamagedRun(f"{self.checkpoint_path} is not a resgrad checkpoint; start over with --no-resume")
        return state

    # ---- results --------------------------------------------------------------------

    def has_results(self) -> bool:
        return self.results_path.is_file()

    def write_results(self, result: Result) -> Path:
        return result.save(self.results_path)

    def read_results(self, cls: type[R]) -> R:
        """``results.json`` validated as ``cls`` (one-line ResultError naming the file otherwise)."""
        if not self.has_results():
            raise FileNotFoundError(f"{self.path} has no {self.RESULTS}: the run has not finished; rerun the "
                                    "command that writes it")
        return cls.from_json(read_file(self.results_path), source=str(self.results_path))

    def finished(self, cls: type[R], config: dict[str, Any] | None = None) -> R | None:
        """The run's result when it finished (for ``config``, when given), else None.

        A results file that does not validate, or holds another config, is not a finished run
        of this one: it is recomputed (and overwritten) by the caller.
        """
        if not self.has_results():
            return None
        try:
            res = self.read_results(cls)
        except ResultError:
            return None
        if config is not None and jsonable(getattr(res, "config", None)) != jsonable(config):
            return None
        return res


@dataclass
class _Seal(Record):
    """``checkpoints/last.pt.sha256``: the checkpoint's checksum and the metrics rows' digests."""

    sha256: str  # of the checkpoint just written
    accept: list[str]  # that one and the one it replaces (a kill between the two renames)
    bytes: int
    metrics: list[str] | None = None  # row_digest of each epoch's metrics row, epoch 1 first (None: older folders)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _describe_holder(fd: int) -> tuple[str, str | None]:
    """Who holds the lock, in words, and the host it recorded (None: unknown)."""
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        info = {}
    if not isinstance(info, dict) or "pid" not in info:
        return "another process", None
    host = info.get("host") if isinstance(info.get("host"), str) else None
    return (f"pid {info['pid']} on {info.get('host', '?')} since {info.get('since', '?')}"
            + (f" ({info['command']})" if info.get("command") else "")), host


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
