"""GradientMonitor where people train: Lightning and Hugging Face callbacks, loggers.

Each framework is imported only when its module is: ``resgrad.integrations.lightning``
needs ``pip install 'resgrad[lightning]'``, ``resgrad.integrations.hf`` needs
``pip install 'resgrad[hf]'``. The loggers (:mod:`resgrad.integrations.loggers`) need
nothing beyond resgrad for JSONL/CSV; TensorBoard, W&B and MLflow are optional.
"""

from __future__ import annotations

from typing import Any

from ._common import metric_dict, metric_name

__all__ = ["metric_dict", "metric_name", "LightningGradientMonitor", "HFGradientMonitor"]


def __getattr__(name: str) -> Any:
    # Lazy: importing resgrad.integrations must not import lightning or transformers.
    if name == "LightningGradientMonitor":
        from .lightning import GradientMonitorCallback

        return GradientMonitorCallback
    if name == "HFGradientMonitor":
        from .hf import GradientMonitorCallback

        return GradientMonitorCallback
    raise AttributeError(f"module 'resgrad.integrations' has no attribute {name!r}")
