"""What both framework callbacks offer for reading: their monitor's rows and last values."""

from __future__ import annotations

from typing import Any

from ..probes.monitor import COLUMNS, GradientMonitor
from ._clip import PostClip

__all__ = ["MonitorReadout"]


class MonitorReadout:
    """Mixin of the framework callbacks: ``records``, ``last_metrics``, ``to_pandas()``."""

    monitor: GradientMonitor | None
    _post: PostClip | None = None  # post-clip rows (clip="post"/"both")
    _last: dict[str, float]
    _during = "training"  # the framework's call that measures, for the error message

    @property
    def records(self) -> list[dict[str, Any]]:
        """The monitor's tidy rows (``resgrad.probes.COLUMNS``), with the post-clip rows
        (kind ``param_post_clip``) after the same step's others."""
        if self.monitor is None:
            return []
        rows = self.monitor.records
        if self._post is None or not self._post.rows:
            return rows
        return sorted([*rows, *self._post.rows], key=lambda r: r["step"])  # stable: pre before post

    @property
    def last_metrics(self) -> dict[str, float]:
        """What was logged at the last measured step."""
        return dict(self._last)

    def to_pandas(self) -> Any:
        """The records as a pandas DataFrame (needs pandas)."""
        if self.monitor is None:
            raise ValueError(f"no measurements yet: the callback measures during {self._during}")
        try:
            import pandas as pd
        except ImportError as e:
            raise ImportError("to_pandas needs pandas: pip install pandas") from e
        return pd.DataFrame(self.records, columns=list(COLUMNS))
