"""GradientMonitor's 0.1 exporters, kept as deprecated shims: the exporters of a monitor's
records live in :mod:`resgrad.integrations.loggers`, beside the loggers that write them."""

from __future__ import annotations

import os
import warnings
from typing import Any

__all__: list[str] = []

_WARNED: set[str] = set()


def _deprecated(name: str, instead: str) -> None:
    """One DeprecationWarning per process and method, naming the replacement."""
    if name not in _WARNED:
        _WARNED.add(name)
        warnings.warn(f"GradientMonitor.{name} is deprecated; use {instead}", DeprecationWarning, stacklevel=3)


class _DeprecatedExports:
    """Mixin of :class:`GradientMonitor`: ``to_jsonl``, ``to_pandas``, ``to_tensorboard``."""


    def to_jsonl(self, path: str | os.PathLike) -> str:
        """Deprecated: :func:`resgrad.integrations.loggers.records_to_jsonl` (the same file)."""
        from ..integrations import loggers

        _deprecated("to_jsonl", "resgrad.integrations.loggers.records_to_jsonl(monitor, path)")
        return loggers.records_to_jsonl(self, path)

    def to_pandas(self) -> Any:
        """Deprecated: :func:`resgrad.integrations.loggers.records_frame` (the same frame)."""
        from ..integrations import loggers

        _deprecated("to_pandas", "resgrad.integrations.loggers.records_frame(monitor)")
        return loggers.records_frame(self)

    def to_tensorboard(self, writer: Any, prefix: str = "resgrad") -> None:
        """Deprecated: ``TensorBoardLogger(log_dir or writer=...).write(monitor)`` (the same scalars)."""
        from ..integrations import loggers

        _deprecated("to_tensorboard", "resgrad.integrations.loggers.TensorBoardLogger(...).write(monitor)")
        loggers.records_to_tensorboard(self, writer, prefix)
