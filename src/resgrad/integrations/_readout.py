"""What both framework callbacks offer for reading: their monitor's rows and last values."""

from __future__ import annotations

from typing import Any

from ..probes.monitor import GradientMonitor
from .loggers import records_frame

__all__ = ["MonitorReadout"]


class MonitorReadout:
    """Mixin of the framework callbacks: ``records``, ``last_metrics``, ``to_pandas()``."""

    monitor: GradientMonitor | None
    _last: dict[str, float]
    _during = "training"  # the framework's call that measures, for the error message

    @property
    def records(self) -> list[dict[str, Any]]:
        """The monitor's tidy rows (``resgrad.probes.COLUMNS``)."""
        return self.monitor.records if self.monitor is not None else []

    @property
    def last_metrics(self) -> dict[str, float]:
        """What was logged at the last measured step."""
        return dict(self._last)

    def to_pandas(self) -> Any:
        """The records as a pandas DataFrame (needs pandas)."""
        if self.monitor is None:
            raise ValueError(f"no measurements yet: the callback measures during {self._during}")
        return records_frame(self.monitor)
