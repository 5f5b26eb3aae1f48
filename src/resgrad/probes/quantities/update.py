"""``update`` rows: ‖Δw‖ of the optimizer step that follows a measured step, and
``ratio`` = ‖Δw‖/‖w‖ (the relative update size; about 1e-3 is the healthy rule of thumb
in Karpathy's "A Recipe for Training Neural Networks", 2019).

The weights are copied at the measured step (before ``optimizer.step()``) and compared
at the next call of the monitor, once the update has been applied.
"""

from __future__ import annotations

from typing import Any

import torch

from .._norms import device_norms, tolist
from ._base import Quantity, StepData, make_row, per_unit

__all__ = ["UpdateNorm"]


class UpdateNorm(Quantity):
    kind = "update"
    options = ("updates",)

    def collect(self, mon: Any, data: StepData) -> None:
        ps = [p.detach() for _, p in mon._params]
        if ps:  # a copy; ‖Δw‖ is read at the next step (after optimizer.step())
            mon._snapshot = (data, torch._foreach_mul(ps, 1.0))

    @staticmethod
    def finish(mon: Any) -> None:
        """Compare the weights with the copy taken at the last measured step, if any."""
        if mon._snapshot is None:
            return
        data, snap = mon._snapshot
        mon._snapshot = None
        ps = [p.detach() for _, p in mon._params]
        delta = torch._foreach_sub(ps, snap)
        # Runs at the call after a measured step, usually not itself measured: no host read.
        data.updates = (device_norms(delta), device_norms(snap))

    def rows(self, mon: Any, d: StepData, found: dict[str, Any]) -> list[dict[str, Any]]:
        if d.updates is None:
            return []
        dn, w0 = tolist(d.updates[0]), tolist(d.updates[1])
        out = [make_row(d.step, name, "update", b, u, p.numel(), None, u / w if w else None)
               for (name, p), b, u, w in zip(mon._params, mon._param_block, dn, w0, strict=True)]
        if not mon.per_unit:
            return out
        # Per unit: ‖Δw‖ over the unit's parameters, and its ratio to ‖w‖ over the same ones.
        w_unit = {r["block"]: r["norm"] for r in per_unit(mon, [
            make_row(d.step, name, "update", b, w, p.numel(), None)
            for (name, p), b, w in zip(mon._params, mon._param_block, w0, strict=True)])}
        rows = per_unit(mon, out)
        for r in rows:
            if r["block"] is not None:
                w = w_unit.get(r["block"])
                r["ratio"] = r["norm"] / w if w and r["norm"] is not None else None
        return rows
