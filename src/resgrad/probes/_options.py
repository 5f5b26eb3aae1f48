"""Validation of GradientMonitor's options, shared with the framework callbacks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .._checks import is_int
from ._select import check_select

__all__ = ["check_options", "QUANTITY_OPTIONS"]

# The options that turn a quantity on: the keys ``schedules=`` accepts.
QUANTITY_OPTIONS = ("params", "activations", "weights", "updates", "split", "act_norms")


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
    for flag in ("params", "weights", "updates", "split", "act_norms"):
        v = options.get(flag, False)
        if not isinstance(v, bool):
            raise TypeError(f"{flag} must be True or False, received {v!r}")
    sync = options.get("sync_dist")
    if sync is not None and not isinstance(sync, bool):
        raise TypeError(f"sync_dist must be None (auto), True or False, received {sync!r}")
    per = options.get("per", "auto")
    if per not in ("auto", "param", "unit") or not isinstance(per, str):
        raise ValueError(f"per must be 'auto', 'param' or 'unit', received {per!r}")
    check_select(options.get("select"))
    schedules = options.get("schedules")
    if schedules is None:
        return
    if not isinstance(schedules, dict):
        raise TypeError(f"schedules must be a dict {{quantity option: every k steps or step -> bool}}, "
                        f"received {type(schedules).__name__}")
    for key, v in schedules.items():
        if key not in QUANTITY_OPTIONS:
            raise ValueError(f"schedules: unknown quantity {key!r}; valid: {', '.join(QUANTITY_OPTIONS)}")
        on = options.get(key, key == "params")
        if not on:
            raise ValueError(f"schedules names {key!r}, which is off; turn it on ({key}=True) or drop its schedule")
        if is_int(v):
            if v < 1:
                raise ValueError(f"schedules[{key!r}] must be every k >= 1 steps, received {v!r} "
                                 "(a schedule of 0 steps never measures; turn the quantity off instead)")
        elif not callable(v):
            raise TypeError(f"schedules[{key!r}] must be an integer k >= 1 or a callable step -> bool, "
                            f"received {type(v).__name__}")
