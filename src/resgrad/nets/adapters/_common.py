"""Branch modules shared by the adapter families."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

__all__ = ["Attention", "seq", "run_units"]


class Attention(nn.Module):
    """Branch: ``[norm] -> attn(h, **context)`` (first output) ``-> [after]``.

    ``context`` holds the current call's extra arguments (masks, positions, cache); the
    layer view sets it for the call and clears it afterwards.
    """

    def __init__(self, norm: nn.Module | None, attn: nn.Module, after: nn.Module | None = None) -> None:
        super().__init__()
        self.norm = norm if norm is not None else nn.Identity()
        self.attn = attn
        self.after = after if after is not None else nn.Identity()
        self.context: dict[str, Any] = {}

    def forward(self, x: Tensor) -> Tensor:  # (B, S, E)
        out = self.attn(self.norm(x), **self.context)
        if isinstance(out, tuple):  # (output, attention weights)
            out = out[0]
        return self.after(out)


def seq(**mods: nn.Module | None) -> nn.Sequential:
    return nn.Sequential(OrderedDict((k, m) for k, m in mods.items() if m is not None))


def run_units(units: Sequence[nn.Module], x: Tensor, context: dict[str, Any]) -> Tensor:
    """Run ``units`` in order, every attention branch among them seeing ``context`` for this call.

    The branches are looked up at call time, so a unit moved here by ``resgrad.paths.reordered``
    gets this layer's masks and positions; the context is cleared afterwards, exceptions included.
    """
    attns = [u.branch for u in units if isinstance(getattr(u, "branch", None), Attention)]
    for a in attns:
        a.context = context
    try:
        for u in units:
            x = u(x)
    finally:
        for a in attns:
            a.context = {}
    return x
