"""One run folder: its layout, its config, its metrics, its checkpoint and its results.

Every training run, experiment and command writes through a :class:`RunDir`; nothing
else spells these names::

    config.json          {"kind": "resgrad.train" | "resgrad.flow" | ..., "config": {...}, ...}
    metrics.jsonl        one JSON line per finished epoch (training runs)
    checkpoints/last.pt  the last checkpoint (training runs), written atomically
    results.json         the run's typed Result (experiments), written atomically
    report.html          rendered from results.json (studies)

"Does this config match?" is one check for all of them: :meth:`RunDir.claim` writes
``config.json`` into a fresh folder and, in a used one, compares what ``compare``
extracts from the old and new records, naming the fields that differ.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, TypeVar

from .io import atomic_write, jsonable, write_json
from .results import Result, ResultError, read_file

__all__ = ["RunDir", "config_diff", "flatten"]

R = TypeVar("R", bound=Result)


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
    CHECKPOINT = "checkpoints/last.pt"
    RESULTS = "results.json"
    REPORT = "report.html"

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

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
    def checkpoint_path(self) -> Path:
        return self.path / self.CHECKPOINT

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
        fresh: bool = False,
    ) -> dict[str, Any] | None:
        """Make this folder hold ``record``'s run; return the old record when it already did.

        A folder without ``config.json`` (or ``fresh=True``) gets ``record`` written. A
        folder with one must be the same kind and, through ``compare`` (default: the
        record's ``"config"``), the same config; otherwise a ValueError names the fields
        that differ and what to do.
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
        diff = config_diff(pick(old), pick(record))
        if diff:
            raise ValueError(f"{self.path} holds a run with a different config ({'; '.join(diff)}); use a new "
                             f"--out folder, or remove {self.path} to start over")
        return old

    # ---- metrics (one JSON line per finished epoch) ---------------------------------

    def read_metrics(self) -> list[dict[str, Any]]:
        """Rows of ``metrics.jsonl`` up to the first torn line (a kill mid-write)."""
        rows: list[dict[str, Any]] = []
        if not self.metrics_path.is_file():
            return rows
        for raw in self.metrics_path.read_text(errors="replace").splitlines():
            try:
                row = json.loads(raw)
            except json.JSONDecodeError:
                break  # a line torn by a kill; everything after it is newer still
            if isinstance(row, dict) and isinstance(row.get("epoch"), int):
                rows.append(row)
        return rows

    def rewrite_metrics(self, rows: list[dict[str, Any]]) -> None:
        atomic_write(self.metrics_path, lambda f: f.writelines(json.dumps(r) + "\n" for r in rows))

    def keep_metrics(self, epochs_done: int) -> list[dict[str, Any]]:
        """Keep each epoch up to ``epochs_done`` once (lines after a checkpoint are redone)."""
        by_epoch = {r["epoch"]: r for r in self.read_metrics() if r["epoch"] <= epochs_done}
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

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        """``torch.save`` into a temp file + ``os.replace``: a kill leaves the old checkpoint or the new."""
        import torch

        atomic_write(self.checkpoint_path, lambda f: torch.save(state, f), mode="wb")

    def load_checkpoint(self) -> dict[str, Any]:
        """The checkpoint's state (tensors on the CPU, ``weights_only``); one line when unreadable."""
        import pickle

        import torch

        try:
            state = torch.load(self.checkpoint_path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ValueError(f"cannot read checkpoint {self.checkpoint_path} ({first[:200]}); remove the run "
                             "folder to start over") from None
        if not isinstance(state, dict):
            raise ValueError(f"{self.checkpoint_path} is not a resgrad checkpoint; use a new --out folder")
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


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
