"""``activation`` and ``input`` rows: ‖∂L/∂y‖ for the output ``y`` of a module, and
‖∂L/∂x_l‖ for the input of a block, so "the gradient at block l" is one row (He et al.
2016, arXiv 1603.05027, Eq. 5 is about exactly this quantity).

The monitor's hooks fill the step's slots (eager mode: one norm per tensor hook) or the
probes of its compiled-mode taps; this quantity gathers the taps at the measured step
and turns both into rows, accumulated over the step's passes as a root sum of squares.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from torch import Tensor

from ._base import Quantity, StepData, make_row

__all__ = ["ActivationGrad", "act_matrix"]


def act_matrix(data: StepData, dev: torch.device) -> Tensor:
    """(slots + taps, 4) float64: Σg², #non-finite, reached (0/1), numel, on ``dev``."""
    rows = []
    for sl in data.slots:
        if sl.norms:
            sq = torch.stack([n.detach().double().to(dev) for n in sl.norms]).square().sum()
            bad = torch.stack([torch.as_tensor(c, dtype=torch.float64).to(dev) for c in sl.counts]).sum()
            rows.append(torch.stack([sq, bad, torch.ones((), dtype=torch.float64, device=dev),
                                     torch.full((), float(sl.numel), dtype=torch.float64, device=dev)]))
        else:
            rows.append(torch.tensor([0.0, 0.0, 0.0, float(sl.numel)], dtype=torch.float64, device=dev))
    if data.tap_vals is not None:
        tv = data.tap_vals.to(dev)
        rows.extend(torch.stack([tv[:, 0], tv[:, 1], torch.ones_like(tv[:, 0]), tv[:, 2]], 1).unbind(0))
    if not rows:
        return torch.zeros((0, 4), dtype=torch.float64, device=dev)
    return torch.stack(rows)


def _shares(acts: list[tuple[dict[str, Any], int | None]]) -> None:
    """``ratio`` of the skip/branch rows: each part's share ‖part‖/(‖skip‖ + ‖branch‖) of its unit."""
    parts: dict[tuple[str, int | None], dict[str, dict[str, Any]]] = {}
    for r, _ in acts:
        if r["kind"] in ("skip", "branch"):
            parts.setdefault((r["name"], r["block"]), {})[r["kind"]] = r
    for p in parts.values():
        if len(p) == 2 and p["skip"]["norm"] is not None and p["branch"]["norm"] is not None:
            total = p["skip"]["norm"] + p["branch"]["norm"]
            for r in p.values():
                r["ratio"] = r["norm"] / total if total > 0 else None


class ActivationGrad(Quantity):
    kind = "activation"
    options = ("activations", "split")

    def collect(self, mon: Any, data: StepData) -> None:
        taps, vals = [], []
        for t in mon._taps.values():
            g = t.probe.grad
            if g is None and t.source is not None:  # a chained block input: its source's value
                g = mon._taps[t.source].probe.grad
            if g is not None:
                taps.append(t)
                vals.append(g.detach())
        if taps:
            data.taps = taps
            data.tap_vals = torch.stack(vals)
        elif not data.slots and data.param_idx and not mon._warned_no_hooks and mon.activations is not None:
            mon._warned_no_hooks = True
            warnings.warn(mon._no_hook_message(), RuntimeWarning, stacklevel=4)

    def rows(self, mon: Any, d: StepData, found: dict[str, Any]) -> list[dict[str, Any]]:
        # Eager slots then compiled-mode taps; taps have no backward clock, so their
        # backward order is taken as reverse forward order.
        metas = [(s.name, s.kind, s.block, s.order) for s in d.slots]
        metas += [(t.name, t.kind, t.block, 10**9 - t.forward_index) for t in d.taps]
        found["activation"] = acts = []
        if not metas:
            return []
        mat = d.act.double().cpu() if d.act is not None else act_matrix(d, torch.device("cpu"))
        if d.act_scale is not None:
            mat = mat.clone()
            mat[:, 0] *= d.act_scale.double().cpu() ** 2
        for (name, kind, block, order), (sq, bad, reached, numel) in zip(metas, mat.tolist(), strict=True):
            if not reached:  # the module ran but no gradient reached its output
                acts.append((make_row(d.step, name, kind, block, None, int(numel), None), None))
                continue
            norm = math.sqrt(sq) if not math.isnan(sq) else math.nan
            # A part of a unit's input gradient is not a module's gradient: no backward order.
            split = kind in ("skip", "branch")
            acts.append((make_row(d.step, name, kind, block, norm, int(numel), int(bad)), None if split else order))
        _shares(acts)
        return [r for r, _ in acts]
