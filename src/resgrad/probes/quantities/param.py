"""``param`` rows: ‖∂L/∂w‖ per parameter tensor.

Computed fused (one ``torch._foreach_norm`` over every gradient that exists) and kept on
the device until the records are read; a parameter whose ``.grad`` is None gets a row with
``norm=None`` (an unused parameter). An FSDP2 shard (a DTensor gradient) is left for the
step's one all-reduce, which turns the shards' sums of squares into the global norm.
"""

from __future__ import annotations

import math
from typing import Any

from .._dtensor import is_dtensor
from .._norms import fused_norms, tolist
from ._base import Quantity, StepData, make_row, per_unit

__all__ = ["ParamGrad"]


class ParamGrad(Quantity):
    kind = "param"
    options = ("params",)

    def collect(self, mon: Any, data: StepData) -> None:
        grads = []
        for i, (_, p) in enumerate(mon._params):
            g = p.grad
            if g is None:
                continue
            if is_dtensor(g):  # FSDP2: this rank holds a shard; reduced by the monitor
                data.shard_idx.append(i)
                data.shards.append(g)
                continue
            if g.is_sparse:
                g = g.coalesce()._values()
            data.param_idx.append(i)
            grads.append(g.detach())
        if grads:
            data.param_norms, data.param_counts = fused_norms(grads)

    def rows(self, mon: Any, d: StepData, found: dict[str, Any]) -> list[dict[str, Any]]:
        if "params" not in d.collected:
            found["param"] = []
            return []
        norms = tolist(d.param_norms, d.param_scale) if d.param_norms is not None else []
        counts = tolist(d.param_counts) if d.param_counts is not None else []
        got = dict(zip(d.param_idx, zip(norms, counts, strict=True), strict=True))
        if d.shard is not None:  # FSDP2: the global norm from the reduced shard squares
            sh = d.shard.double().cpu()
            if d.param_scale is not None:
                sh[:, 0] *= d.param_scale.double().cpu() ** 2
            for i, (sq, bad) in zip(d.shard_idx, sh.tolist(), strict=True):
                got[i] = (math.sqrt(sq) if math.isfinite(sq) else math.nan, bad)
        out = []
        for i, (name, p) in enumerate(mon._params):
            n, c = got.get(i, (None, None))
            out.append(make_row(d.step, name, "param", mon._param_block[i], n, p.numel(),
                                None if c is None else int(c)))
        found["param"] = out  # per parameter: the non-finite origin's fallback reads these
        return per_unit(mon, out) if mon.per_unit else out
