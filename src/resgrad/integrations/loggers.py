"""Loggers for plain PyTorch loops: where GradientMonitor's rows go, under the metric
names of the framework callbacks (``resgrad/grad_norm/<param>``, ...).

    logger = make_logger("tensorboard", log_dir="runs/x")     # or "wandb", "mlflow", "jsonl", "csv"
    with GradientMonitor(model, activations=True) as mon:
        for step, (x, y) in enumerate(loader):
            loss_fn(model(x), y).backward()
            mon.step(step)
            logger.write(mon)                  # the steps measured since the last write
            logger.write_histograms(model, step)   # optional: gradient histograms
            opt.step(); opt.zero_grad()
    logger.close()

JSONL and CSV need nothing; TensorBoard needs ``tensorboard``, W&B ``wandb`` and MLflow
``mlflow`` (``pip install 'resgrad[wandb]'`` / ``'resgrad[mlflow]'``): a missing one is a
one-line ImportError when the logger is made, not at the first write. Histograms
skip NaN/Inf (``wandb.watch`` drops them silently; TensorBoard's histogram cannot bin
them) and log their count as ``<name>/nonfinite`` instead.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..probes.monitor import GradientMonitor
from ..probes.quantities import COLUMNS
from ._common import PREFIX, metric_dict, require

__all__ = ["MetricLogger", "JSONLLogger", "CSVLogger", "TensorBoardLogger", "WandbLogger", "MLflowLogger",
           "make_logger", "finite_values", "LOGGERS", "records_to_jsonl", "records_frame",
           "records_to_tensorboard"]


def _json_line(obj: dict[str, Any]) -> str:
    """One JSON line; NaN/Inf become null (JSON has neither)."""
    clean = {k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in obj.items()}
    return json.dumps(clean) + "\n"


def records_to_jsonl(monitor: GradientMonitor, path: str | os.PathLike) -> str:
    """Write the monitor's tidy rows (``COLUMNS``), one JSON object per line (atomic:
    temp file + rename); returns the path."""
    from ..io import atomic_write

    rows = monitor.records

    def write(f: Any) -> None:
        for r in rows:
            f.write(_json_line(r))

    return str(atomic_write(path, write))


def records_frame(monitor: GradientMonitor) -> Any:
    """The monitor's tidy rows as a pandas DataFrame with columns ``COLUMNS`` (needs pandas)."""
    try:
        import pandas as pd
    except ImportError as e:
        raise ImportError("records_frame needs pandas: pip install pandas") from e
    return pd.DataFrame(monitor.records, columns=list(COLUMNS))


def records_to_tensorboard(monitor: GradientMonitor, writer: Any, prefix: str = PREFIX) -> None:
    """Every record as a TensorBoard scalar (``writer``: a SummaryWriter or a log dir),
    under the framework callbacks' names; :class:`TensorBoardLogger` does the writing."""
    if isinstance(writer, (str, os.PathLike)):
        with TensorBoardLogger(writer, prefix=prefix) as logger:
            logger.write(monitor)
        return
    TensorBoardLogger(writer=writer, prefix=prefix).write(monitor)


def finite_values(t: Tensor) -> tuple[Tensor, int]:
    """(the finite entries of ``t`` as a flat float32 CPU tensor, how many were NaN/Inf)."""
    flat = t.detach().flatten()
    ok = torch.isfinite(flat)
    bad = int(flat.numel() - int(ok.sum()))
    return (flat[ok] if bad else flat).float().cpu(), bad


class MetricLogger:
    """Base: ``log_metrics`` and ``log_histogram`` per backend; ``write`` and
    ``write_histograms`` feed them from a monitor and a model."""

    def __init__(self, prefix: str = PREFIX) -> None:
        self.prefix = prefix
        self._written: dict[int, int] = {}  # id(monitor) -> rows already written

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        raise NotImplementedError

    def log_histogram(self, name: str, values: Tensor, step: int) -> None:
        """``values`` are finite; backends without histograms keep only the count."""

    def close(self) -> None: ...

    def __enter__(self) -> MetricLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def write(self, monitor: GradientMonitor) -> int:
        """Log the monitor's rows not written yet, one ``log_metrics`` per step; returns steps written."""
        if not isinstance(monitor, GradientMonitor):
            raise TypeError(f"write needs a GradientMonitor, received {type(monitor).__name__}")
        rows = monitor.records
        start = self._written.get(id(monitor), 0)
        self._written[id(monitor)] = len(rows)
        by_step: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for r in rows[start:]:
            by_step[r["step"]].append(r)
        for step in sorted(by_step):
            self.log_metrics(metric_dict(by_step[step], self.prefix), step)
        return len(by_step)

    def write_histograms(self, model: nn.Module, step: int, *, bins: int = 64) -> dict[str, int]:
        """Histogram of every parameter gradient (finite values only); returns NaN/Inf counts."""
        counts: dict[str, int] = {}
        for name, p in model.named_parameters():
            if p.grad is None:
                continue
            vals, bad = finite_values(p.grad)
            tag = f"{self.prefix}/grad_hist/{name}"
            counts[name] = bad
            if vals.numel():
                self.log_histogram(tag, vals, step)
        self.log_metrics({f"{self.prefix}/grad_hist/{n}/nonfinite": float(c) for n, c in counts.items()}, step)
        return counts


class JSONLLogger(MetricLogger):
    """One JSON object per line: ``{"step": s, "<metric>": value, ...}``; histograms as
    ``{"step", "histogram", "edges", "counts"}``. Appends; flushed after every write."""

    def __init__(self, path: str | os.PathLike, prefix: str = PREFIX, bins: int = 64) -> None:
        super().__init__(prefix)
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.bins = bins
        self._f = open(self.path, "a")  # noqa: SIM115 - held open across writes, closed by close()

    def _line(self, obj: dict[str, Any]) -> None:
        self._f.write(_json_line(obj))
        self._f.flush()

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self._line({"step": step, **metrics})

    def log_histogram(self, name: str, values: Tensor, step: int) -> None:
        lo, hi = float(values.min()), float(values.max())
        counts = torch.histc(values, bins=self.bins, min=lo, max=hi if hi > lo else lo + 1.0)
        edges = torch.linspace(lo, hi if hi > lo else lo + 1.0, self.bins + 1)
        self._line({"step": step, "histogram": name, "edges": edges.tolist(), "counts": counts.tolist()})

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()


class CSVLogger(MetricLogger):
    """Long format ``step,name,value`` (the set of names may change between steps)."""

    def __init__(self, path: str | os.PathLike, prefix: str = PREFIX) -> None:
        super().__init__(prefix)
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists() or self.path.stat().st_size == 0
        self._f = open(self.path, "a", newline="")  # noqa: SIM115 - closed by close()
        self._w = csv.writer(self._f)
        if new:
            self._w.writerow(["step", "name", "value"])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        for k, v in metrics.items():
            self._w.writerow([step, k, v if math.isfinite(v) else ""])
        self._f.flush()

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()


class TensorBoardLogger(MetricLogger):
    """``add_scalar`` per metric and ``add_histogram`` of finite gradient values."""

    def __init__(self, log_dir: str | os.PathLike | None = None, *, writer: Any = None, prefix: str = PREFIX) -> None:
        super().__init__(prefix)
        if writer is None:
            require("tensorboard", "tensorboard", "TensorBoardLogger")
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(None if log_dir is None else str(log_dir))
            self._own = True
        else:
            self._own = False
        self.writer = writer

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        for k, v in metrics.items():
            self.writer.add_scalar(k, v, step)

    def log_histogram(self, name: str, values: Tensor, step: int) -> None:
        self.writer.add_histogram(name, values, step)

    def close(self) -> None:
        self.writer.flush()
        if self._own:
            self.writer.close()


class WandbLogger(MetricLogger):
    """``run.log(metrics, step=step)``; ``run`` defaults to ``wandb.run`` or ``wandb.init(**init)``."""

    def __init__(self, run: Any = None, prefix: str = PREFIX, **init: Any) -> None:
        super().__init__(prefix)
        if run is None:
            wandb = require("wandb", "wandb", "WandbLogger")
            run = wandb.run if wandb.run is not None and not init else wandb.init(**init)
        if not callable(getattr(run, "log", None)):
            raise TypeError(f"run must be a wandb Run (with .log), received {type(run).__name__}")
        self.run = run

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def log_histogram(self, name: str, values: Tensor, step: int) -> None:
        wandb = require("wandb", "wandb", "WandbLogger.log_histogram")
        self.run.log({name: wandb.Histogram(values.numpy())}, step=step)


# MLflow metric keys: alphanumerics, _ - . space : / only (mlflow/utils/validation.py).
_MLFLOW_BAD = re.compile(r"[^A-Za-z0-9_\-. :/]")


class MLflowLogger(MetricLogger):
    """``MlflowClient.log_batch`` once per step; MLflow has no histograms, so only
    their non-finite counts are logged. Keys outside MLflow's alphabet become ``_``
    (``relu#1`` -> ``relu_1``)."""

    def __init__(self, run_id: str | None = None, *, tracking_uri: str | None = None, prefix: str = PREFIX) -> None:
        super().__init__(prefix)
        mlflow = require("mlflow", "mlflow", "MLflowLogger")
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=tracking_uri)
        if run_id is None:
            active = mlflow.active_run()
            if active is None:
                raise ValueError("MLflowLogger needs run_id= or an active run (mlflow.start_run())")
            run_id = active.info.run_id
        self.run_id = run_id

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        import time

        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        batch = [Metric(_MLFLOW_BAD.sub("_", k), float(v), ts, step) for k, v in metrics.items()]
        for i in range(0, len(batch), 1000):  # log_batch takes at most 1000 metrics
            self.client.log_batch(self.run_id, metrics=batch[i:i + 1000])


LOGGERS = {"jsonl": JSONLLogger, "csv": CSVLogger, "tensorboard": TensorBoardLogger,
           "wandb": WandbLogger, "mlflow": MLflowLogger}


def make_logger(kind: str, **options: Any) -> MetricLogger:
    """A logger by name (``jsonl``, ``csv``, ``tensorboard``, ``wandb``, ``mlflow``)."""
    cls = LOGGERS.get(kind)
    if cls is None:
        raise ValueError(f"unknown logger {kind!r}; choose one of {', '.join(LOGGERS)}")
    return cls(**options)
