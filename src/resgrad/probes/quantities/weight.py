"""``weight`` rows: ‖w‖ per parameter tensor at the measured step (before its update)."""

from __future__ import annotations

from typing import Any

from .._norms import fused_norms, tolist
from ._base import Quantity, StepData, make_row, per_unit

__all__ = ["WeightNorm"]


class WeightNorm(Quantity):
    kind = "weight"
    options = ("weights",)

    def collect(self, mon: Any, data: StepData) -> None:
        ps = [p.detach() for _, p in mon._params]
        if ps:
            data.weights = fused_norms(ps, counts=False)[0]

    def rows(self, mon: Any, d: StepData, found: dict[str, Any]) -> list[dict[str, Any]]:
        if d.weights is None:
            return []
        out = [make_row(d.step, name, "weight", b, w, p.numel(), None)
               for (name, p), b, w in zip(mon._params, mon._param_block, tolist(d.weights), strict=True)]
        return per_unit(mon, out) if mon.per_unit else out
