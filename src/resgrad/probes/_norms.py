"""Norms that neither under- nor overflow, and the fused per-tensor norms every quantity uses.

On the CPU a scalar can be read for free, so a norm is computed in float32 and recomputed
in float64 only when it falls outside the range where float32 squares are exact enough;
on an accelerator the norms accumulate in float64 instead (no host read, no device sync).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

__all__ = ["robust_norm", "host_readable", "norm", "nonfinite", "fused_norms", "device_norms", "tolist", "SAFE_LO", "SAFE_HI"]

# float32 squares under/overflow outside ~1e-19..1e19 per element; a norm outside this
# range is recomputed in float64 (CPU only: there reading a scalar costs no device sync).
SAFE_LO, SAFE_HI = 1e-15, 1e15


def robust_norm(g: Tensor) -> Tensor:
    """‖g‖₂ without under/overflow: float64, scaled by max|g| (0-d float64 tensor)."""
    g = g.detach().to(torch.float64)
    m = g.abs().amax() if g.numel() else g.new_zeros(())
    if not bool(torch.isfinite(m)) or float(m) == 0.0:
        return torch.linalg.vector_norm(g) if g.numel() else m
    return m * torch.linalg.vector_norm(g / m)


def host_readable(t: Tensor) -> bool:
    """Can a scalar of ``t`` be read without stalling a device queue? (CPU tensors.)"""
    return t.is_cpu


def norm(g: Tensor) -> Tensor:
    """Norm of one gradient tensor, on its device (one reduction on the fast path)."""
    if host_readable(g):
        n = torch.linalg.vector_norm(g)
        v = n.item()
        # Outside the safe range the float32 squares may have under/overflowed; a
        # non-finite norm from finite entries is an overflow too.
        if not SAFE_LO < v < SAFE_HI and (math.isfinite(v) or bool(torch.isfinite(g).all())):
            n = robust_norm(g)
        return n
    # Accelerators: accumulate in float64 instead of branching on the value (no sync).
    return torch.linalg.vector_norm(g, dtype=torch.float64)


def nonfinite(g: Tensor, n: Tensor) -> Tensor | int:
    """Number of NaN/Inf entries of ``g`` (``n`` = its norm: finite norm => zero)."""
    if host_readable(g):
        return 0 if math.isfinite(n.item()) else int((~torch.isfinite(g)).sum())
    # finite * 0 = 0, inf * 0 = nan, nan * 0 = nan: count the non-zeros, on the device.
    return torch.count_nonzero(g * 0)


def fused_norms(ts: list[Tensor], counts: bool = True) -> tuple[Tensor | list[Tensor], Any]:
    """Norms (and non-finite counts) of many tensors: one fused kernel per device/dtype."""
    if all(host_readable(t) for t in ts):
        stacked = torch.stack(torch._foreach_norm(ts)).double()
        lo, hi = stacked.aminmax()
        if not (lo.item() > SAFE_LO and hi.item() < SAFE_HI):
            bad = ~((stacked > SAFE_LO) & (stacked < SAFE_HI))
            for i in bad.nonzero().flatten().tolist():
                if math.isfinite(stacked[i].item()) or bool(torch.isfinite(ts[i]).all()):
                    stacked[i] = robust_norm(ts[i])
        cnt = None
        if counts:
            cnt = torch.zeros(len(ts), dtype=torch.int64)
            for i in (~torch.isfinite(stacked)).nonzero().flatten().tolist():
                cnt[i] = int((~torch.isfinite(ts[i])).sum())
        return stacked, cnt
    norms = torch._foreach_norm(ts, 2, dtype=torch.float64)
    cnt = torch._foreach_norm(torch._foreach_mul(ts, 0.0), 0) if counts else None
    if len({n.device for n in norms}) == 1:
        return torch.stack(norms), (torch.stack(cnt) if cnt is not None else None)
    return list(norms), (list(cnt) if cnt is not None else None)


def device_norms(ts: list[Tensor]) -> Tensor | list[Tensor]:
    """Norms of many tensors accumulated in float64, read nothing from the device (on the CPU
    too): for work done between measured steps, which must not copy anything to the host."""
    norms = torch._foreach_norm(ts, 2, dtype=torch.float64)
    if len({n.device for n in norms}) == 1:
        return torch.stack(norms)
    return list(norms)


def tolist(x: Tensor | list[Any] | None, scale: Tensor | None = None) -> list[Any]:
    """Host floats of a stacked (or per-device list of) norms, times ``scale`` if given."""
    if x is None:
        return []
    if isinstance(x, Tensor):
        if scale is not None:
            x = x.double() * scale.to(x.device)
        return x.tolist()
    out = [float(v) if isinstance(v, Tensor) else v for v in x]
    if scale is not None:
        s = float(scale)
        out = [v * s for v in out]
    return out
