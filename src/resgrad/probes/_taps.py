"""Compile-friendly activation taps: an identity whose backward reports the gradient's norm.

Under ``torch.compile`` a tensor hook with Python side effects breaks the graph, so while
dynamo traces, the monitor's forward hooks route a module's output through :class:`Tap`
instead: an identity ``autograd.Function`` whose backward writes ``[Σg², #non-finite,
numel]`` of the incoming gradient into the gradient of a small leaf "probe" tensor. That
is purely functional (no host read, no mutation), so the hooked model compiles with
``fullgraph=True`` and the numbers equal eager mode's.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["Tap", "first_tensor", "replace_first"]


def first_tensor(out: Any) -> Tensor | None:
    """The tensor a module returned, or the first tensor of a returned tuple/list."""
    if isinstance(out, Tensor):
        return out
    if isinstance(out, (tuple, list)):
        for o in out:
            if isinstance(o, Tensor):
                return o
    return None


def replace_first(obj: Any, new: Tensor) -> Any:
    """``obj`` with its first tensor (as found by :func:`first_tensor`) replaced by ``new``."""
    if isinstance(obj, Tensor):
        return new
    items = list(obj)
    for i, o in enumerate(items):
        if isinstance(o, Tensor):
            items[i] = new
            break
    return tuple(items) if isinstance(obj, tuple) else items


class Tap(torch.autograd.Function):
    """Identity in forward; in backward, ``[Σg², #non-finite, numel]`` of the incoming
    gradient becomes the gradient of ``probe`` (a (3,) float64 leaf), so autograd itself
    carries the measurement out: no hook side effect, nothing for dynamo to break on."""

    @staticmethod
    def forward(ctx: Any, y: Tensor, probe: Tensor) -> Tensor:
        ctx.probe_device = probe.device
        # A clone, not y.view_as(y): autograd forbids in-place ops on views made inside a
        # custom Function, and torchvision's ReLU(inplace=True) follows most convs.
        # Measured under inductor, the clone costs no more than a view: the cost of a tap
        # is the materialised output it forces (benchmarks/README.md).
        return y.clone()

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor, Tensor]:
        # float64 accumulation: float32 squares would under/overflow outside ~1e-19..1e19.
        sq = torch.linalg.vector_norm(g, dtype=torch.float64).square()
        bad = torch.count_nonzero(~torch.isfinite(g)).to(torch.float64)
        n = torch.full((), float(g.numel()), dtype=torch.float64, device=g.device)
        return g, torch.stack([sq, bad, n]).to(ctx.probe_device)
