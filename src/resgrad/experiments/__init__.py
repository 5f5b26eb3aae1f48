"""Experiments: a config dataclass -> a JSON-able results dict (DESIGN.md)."""

from .flow import FlowConfig, run_flow

__all__ = ["FlowConfig", "run_flow"]
