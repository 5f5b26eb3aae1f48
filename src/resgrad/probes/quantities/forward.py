"""``stream``, ``forward`` and ``act_norm`` rows: forward values per residual unit.

``stream``: ‖x‖, the residual stream entering unit l; ``forward``: ‖F(x)‖ of its branch,
with ``ratio`` = ‖F(x)‖/‖x‖ (how much a unit adds to the stream it reads; Veit et al.
2016, arXiv 1605.06431, read residual nets as ensembles of such small additions);
``act_norm``: ‖y‖ at the unit's output. The norms are taken by the hooks of
``probes/_units.py`` at measured steps and left on the device until the records are read.
"""

from __future__ import annotations

from typing import Any

import torch

from .._norms import tolist
from ._base import Quantity, StepData, make_row

__all__ = ["ForwardNorms"]


class ForwardNorms(Quantity):
    kind = "forward"
    options = ("split", "act_norms")

    def collect(self, mon: Any, data: StepData) -> None:
        if not mon._fwd:
            return
        keys = list(mon._fwd)
        vals = [torch.stack(v).sum() if isinstance(v, list) else v for v in mon._fwd.values()]
        dev = vals[0].device
        data.fwd_keys = keys
        data.fwd_vals = torch.stack([v.to(dev) for v in vals]).sqrt()
        data.fwd_numel = [mon._fwd_n.get(k, 0) for k in keys]

    def rows(self, mon: Any, d: StepData, found: dict[str, Any]) -> list[dict[str, Any]]:
        if d.fwd_vals is None:
            return []
        got = {k: (v, n) for k, v, n in zip(d.fwd_keys, tolist(d.fwd_vals), d.fwd_numel, strict=True)}
        out = []
        for pt in mon._split_pts:  # unit order; per unit: stream, forward, act_norm
            x = got.get(f"stream:{pt.name}")
            for kind in ("stream", "forward", "act_norm"):
                v = got.get(f"{kind}:{pt.name}")
                if v is None:
                    continue
                ratio = v[0] / x[0] if kind == "forward" and x is not None and x[0] > 0 else None
                out.append(make_row(d.step, pt.name, kind, pt.block, v[0], v[1], None, ratio))
        return out
