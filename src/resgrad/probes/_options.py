"""Validation of GradientMonitor's options, shared with the framework callbacks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .._checks import is_int

__all__ = ["check_options"]


def check_options(known: Sequence[str], options: dict[str, Any]) -> None:
    """Raise a one-line TypeError/ValueError naming a bad option and what was received."""
    for k in options:
        if k not in known:
            raise TypeError(f"unknown GradientMonitor option {k!r}; valid options: {', '.join(known)}")
    every = options.get("every", 1)
    if not is_int(every) or every < 1:
        raise ValueError(f"every must be an integer >= 1, received {every!r}")
    schedule = options.get("schedule")
    if schedule is not None and not callable(schedule):
        raise TypeError(f"schedule must be a callable step -> bool, received {type(schedule).__name__}")
    activations = options.get("activations", False)
    if activations not in (False, True, "all", "leaves", "blocks") or activations.__class__ not in (bool, str):
        raise ValueError(
            f"activations must be False, True, 'all', 'leaves' or 'blocks', received {activations!r}"
        )
    scaler = options.get("scaler")
    if scaler is not None and not hasattr(scaler, "is_enabled"):
        raise TypeError(f"scaler must be a torch.amp.GradScaler, received {type(scaler).__name__}")
    for flag in ("params", "weights", "updates"):
        v = options.get(flag, False)
        if not isinstance(v, bool):
            raise TypeError(f"{flag} must be True or False, received {v!r}")
    sync = options.get("sync_dist")
    if sync is not None and not isinstance(sync, bool):
        raise TypeError(f"sync_dist must be None (auto), True or False, received {sync!r}")
