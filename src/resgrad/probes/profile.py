"""The exact per-block gradient profile, in log space: what the flow experiment plots.

``block_gradient_profile`` is one forward and one backward pass with a renormalising
tensor hook at every block input, so a gradient of 1e-180 (a deep plain sigmoid net) is
measured as such instead of underflowing to 0 as a plain norm would.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from ..nets.blocks import blocks as _blocks
from ._norms import SAFE_HI, SAFE_LO, robust_norm
from ._taps import first_tensor

__all__ = ["block_gradient_profile"]


def block_gradient_profile(
    model: nn.Module,
    x: Tensor,
    y: Tensor | None = None,
    *,
    loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
) -> dict[str, Any]:
    """log10 ‖∂L/∂x_l‖ for the input x_l of every resgrad block, exact at any depth.

    Backprop is linear in the incoming gradient, so a tensor hook at each block input
    renormalises the gradient to norm 1 and the true log-norm is the running sum of
    the logs of the measured norms. Nothing under- or overflows: a depth-256 sigmoid
    plain net reports 1e-180, not 0. Assumes the blocks form a chain (a block's input
    reaches the loss only through the next block), as in every resgrad family; the
    parameter gradients this backward pass leaves are rescaled and must not be used.

    Returns ``{"names", "numel", "log10_norm", "log10_rms", "loss"}`` (lists, block 0 first).
    """
    bl = _blocks(model)
    if not bl:
        raise ValueError(
            f"{type(model).__name__} has no resgrad blocks; block_gradient_profile needs Residual/Plain "
            "blocks (use GradientMonitor(activations=True) for any other model)"
        )
    loss_fn = loss_fn or F.cross_entropy
    names = {id(m): n for n, m in model.named_modules()}
    inputs: list[Tensor | None] = [None] * len(bl)
    handles: list[RemovableHandle] = []

    def grab(i: int, module: nn.Module, args: Any) -> None:
        inputs[i] = first_tensor(args)

    logs: dict[int, float] = {}
    order: list[int] = []

    def renorm(i: int, g: Tensor) -> Tensor:
        # The incoming gradient was renormalised one block up, so one block's change is
        # all this norm sees; the slower robust norm is only needed when even that under/overflows.
        n = torch.linalg.vector_norm(g, dtype=torch.float64)
        v = float(n)
        if not SAFE_LO < v < SAFE_HI:
            n = robust_norm(g)
            v = float(n)
        order.append(i)
        logs[i] = math.log10(v) if v > 0 else -math.inf if v == 0 else math.nan
        if v > 0 and math.isfinite(v):
            return g / n.to(g.dtype)
        return g

    try:
        for i, b in enumerate(bl):
            handles.append(b.register_forward_pre_hook(partial(grab, i)))
        out = model(x)
        loss = loss_fn(out, y) if y is not None else loss_fn(out)  # type: ignore[call-arg]
        for h in handles:
            h.remove()
        handles.clear()
        for i, t in enumerate(inputs):
            if t is None or not t.requires_grad:
                raise ValueError(
                    f"block {i} ({names.get(id(bl[i]), '?')}) received an input that does not require "
                    "grad; the profile needs a stem with parameters before the first block"
                )
            handles.append(t.register_hook(partial(renorm, i)))
        loss.backward()
    finally:
        for h in handles:
            h.remove()
    if order != sorted(order, reverse=True) or len(order) != len(bl):
        raise ValueError(
            "block inputs were not reached in reverse order exactly once: the blocks do not form a chain; "
            "use GradientMonitor(activations='blocks') instead"
        )
    # true log-norm at block l = sum of the measured log-norms of blocks l..L-1
    acc, cum = 0.0, [0.0] * len(bl)
    for i in reversed(range(len(bl))):
        acc += logs[i]
        cum[i] = acc
    numel = [int(t.numel()) for t in inputs]  # type: ignore[union-attr]
    return {
        "names": [names.get(id(b), str(i)) for i, b in enumerate(bl)],
        "numel": numel,
        "log10_norm": cum,
        "log10_rms": [c - 0.5 * math.log10(n) for c, n in zip(cum, numel, strict=True)],
        "loss": float(loss.detach()),
    }
