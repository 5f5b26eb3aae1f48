"""What every quantity of :class:`resgrad.GradientMonitor` shares: the row format, the
per-step record, and the two-phase :class:`Quantity` contract.

A quantity *collects* at a measured step, leaving tensors on the device in the step's
:class:`StepData` (no host read, so an accelerator is not stalled), and turns them into
tidy rows when the records are read (*rows*). The monitor runs its quantities in one
fixed order, which is the order of their rows in ``records``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from torch import Tensor

if TYPE_CHECKING:
    from ..monitor import GradientMonitor

__all__ = ["COLUMNS", "ORIGIN_KIND", "KINDS", "UNIT_KINDS", "per_unit", "Quantity", "StepData", "Slot", "TapSlot", "make_row"]

# Columns of every row in GradientMonitor.records (tidy: one measurement per row).
COLUMNS = ("step", "name", "kind", "block", "norm", "rms", "numel", "nonfinite", "ratio")
# Row kind naming where a step's first non-finite gradient appeared (quantities/origin.py).
ORIGIN_KIND = "nonfinite_origin"
# Every row kind and what its ``norm`` and ``ratio`` columns hold (the same COLUMNS for all):
KINDS = {
    "param": ("‖∂L/∂w‖ of a parameter (or of a unit's parameters, per='unit')", None),
    "activation": ("‖∂L/∂y‖ of a module's output y", None),
    "input": ("‖∂L/∂x_l‖ at unit l's input", None),
    "weight": ("‖w‖ before the step's update", None),
    "update": ("‖Δw‖ of the step's update", "‖Δw‖/‖w‖"),
    # split=True, one row each per residual unit y = post(s(x) + F(x)):
    "skip": ("‖skip part of ∂L/∂x‖: the gradient reaching x through the shortcut s",
             "skip share: ‖skip‖/(‖skip‖ + ‖branch‖)"),
    "branch": ("‖J_F^T g‖: the part of ∂L/∂x that comes through the branch F",
               "branch share: ‖branch‖/(‖skip‖ + ‖branch‖)"),
    "forward": ("‖F(x)‖, the branch's output", "‖F(x)‖/‖x‖"),
    "stream": ("‖x‖, the residual stream entering the unit", None),
    # act_norms=True: the forward value at each unit's output.
    "act_norm": ("‖y‖ of a unit's output", None),
    ORIGIN_KIND: ("None (numel and nonfinite of the first non-finite gradient)", None),
}
# Row kinds that belong to a unit (their ``block`` is the unit's index, ``name`` its name).
UNIT_KINDS = ("input", "skip", "branch", "forward", "stream", "act_norm")


def per_unit(mon: GradientMonitor, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` (one per parameter, ``norm``s to combine as a root sum of squares) as one row
    per unit, named by the unit; parameters outside every unit keep their own row."""
    out: list[dict[str, Any]] = []
    units: dict[int, list[dict[str, Any]]] = {}
    for r in rows:
        if r["block"] is None:
            out.append(r)
        elif r["block"] not in units:
            units[r["block"]] = [r]
            out.append({"unit": r["block"]})  # placeholder: keeps the unit's place in the order
        else:
            units[r["block"]].append(r)
    for i, r in enumerate(out):
        if "unit" not in r:
            continue
        group = units[r["unit"]]
        got = [g["norm"] for g in group if g["norm"] is not None]
        bad = [g["nonfinite"] for g in group if g["nonfinite"] is not None]
        norm = math.sqrt(sum(n * n for n in got)) if got else None
        out[i] = make_row(group[0]["step"], mon._unit_names[r["unit"]], group[0]["kind"], r["unit"], norm,
                          sum(g["numel"] for g in group), sum(bad) if bad else None)
    return out


def make_row(step: int, name: str, kind: str, block: int | None, norm: float | None, numel: int,
             nonfinite: int | None, ratio: float | None = None) -> dict[str, Any]:
    """One record; ``rms`` = norm / sqrt(numel), the per-element scale comparable across layers."""
    rms = None if norm is None or numel == 0 else norm / math.sqrt(numel)
    return {"step": step, "name": name, "kind": kind, "block": block, "norm": norm,
            "rms": rms, "numel": numel, "nonfinite": nonfinite, "ratio": ratio}


@dataclass
class Slot:
    """One activation row of one step: accumulates over passes (gradient accumulation)."""

    name: str
    kind: str
    block: int | None
    numel: int = 0
    norms: list[Tensor] = field(default_factory=list)
    counts: list[Tensor | int] = field(default_factory=list)
    order: int | None = None  # position in backward order of its first gradient (1 = first)


@dataclass
class TapSlot:
    """A module hooked for compiled mode: its probe and where it sits in forward order."""

    name: str
    kind: str
    block: int | None
    probe: Tensor
    forward_index: int
    # Compiled mode, block inputs only: the key of the previous block's output tap when
    # that output is this block's input (adjacent blocks in one nn.Sequential); no second
    # tap on the same tensor then, its measurement is reused.
    source: str | None = None


@dataclass
class StepData:
    """What one measured step left on the device, turned into rows on read."""

    step: int
    param_scale: Tensor | None  # inverse loss scale applied to parameter norms
    act_scale: Tensor | None  # inverse loss scale for activation norms
    slots: list[Slot]
    param_idx: list[int] = field(default_factory=list)  # indices into monitor._params whose grad existed
    param_norms: Tensor | list[Tensor] | None = None
    param_counts: Tensor | list[Tensor | int] | None = None
    weights: Tensor | list[Tensor] | None = None
    updates: tuple[Tensor | list[Tensor], Tensor | list[Tensor]] | None = None  # (‖Δw‖, ‖w‖) of this step's update
    taps: list[TapSlot] = field(default_factory=list)  # compiled-mode slots with a gradient
    tap_vals: Tensor | None = None  # (len(taps), 3): Σg², #non-finite, numel
    act: Tensor | None = None  # (len(slots) + len(taps), 4) reduced over ranks: Σg², #bad, reached, numel
    shard_idx: list[int] = field(default_factory=list)  # params whose grad is an FSDP2 shard
    shards: list[Any] = field(default_factory=list)  # their DTensor gradients (until reduced)
    shard: Tensor | None = None  # (len(shard_idx), 2) reduced: Σg², #non-finite
    collected: set[str] = field(default_factory=set)  # the quantity options measured at this step
    fwd_keys: list[str] = field(default_factory=list)  # forward norms ("stream:<unit>", ...)
    fwd_vals: Tensor | None = None  # their norms (float64, one per key)
    fwd_numel: list[int] = field(default_factory=list)


class Quantity:
    """One measured quantity: ``collect`` at a measured step, ``rows`` when read.

    ``found`` is shared by the quantities of one step while its rows are made (the
    non-finite origin reads the parameter and activation rows made before it).
    """

    kind: str  # the ``kind`` column of its rows
    options: tuple[str, ...] = ()  # collected when one of these options is due (none: always)

    def collect(self, mon: GradientMonitor, data: StepData) -> None:
        """Leave this step's measurement in ``data`` (device tensors; no host read)."""

    def rows(self, mon: GradientMonitor, data: StepData, found: dict[str, Any]) -> list[dict[str, Any]]:
        raise NotImplementedError
