"""Signal propagation at initialisation: Signal Propagation Plots and token cosine across depth.

- :func:`signal_propagation` (Brock et al. 2021, arXiv 2101.08692, Fig. 1, "Signal
  Propagation Plots"): per block, on one forward pass, the block output's *average channel
  squared mean* (the mean over channels of the squared per-channel mean), its *average channel
  variance* (the mean over channels of the per-channel variance) and the *residual branch's
  variance* (the average channel variance of the branch output, before it joins the skip).
  A healthy residual net keeps the variance growing about linearly with depth and the squared
  mean near zero; a mean shift that grows with depth is what Brock et al. remove from NF-ResNets.
- :func:`token_cosine` (Noci et al. 2022, arXiv 2206.03126, "rank collapse"): per block of a
  Transformer, the mean cosine similarity between the token representations of one sequence
  (every ordered pair of distinct tokens, averaged over the batch). A value that climbs to 1 with
  depth means every token carries the same vector: the rank of the stream has collapsed.

A channel is the last axis of a ``(N, T, d)`` token stream and axis 1 of a ``(N, C, ...)``
feature map; statistics are taken over every other axis, in float64. Blocks are
``resgrad.nets.blocks(model)`` (or the ``units`` given); a block without a ``branch`` submodule
reports no branch variance.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..nets import blocks

__all__ = ["channel_stats", "signal_propagation", "token_cosine", "pairwise_cosine"]


def _channels_last(h: Tensor, channel_dim: int) -> Tensor:
    """``h`` as ``(M, C)``: channels last, every other axis flattened into M samples."""
    h = h.detach().double()
    return h.movedim(channel_dim, -1).reshape(-1, h.shape[channel_dim])


def channel_stats(h: Tensor, channel_dim: int = 1) -> tuple[float, float]:
    """(average channel squared mean, average channel variance) of ``h`` (population variance).

    Brock et al. 2021 Fig. 1: the mean over channels of ``mean_c^2`` and of ``var_c``, each taken
    over the batch and every spatial or token position of channel ``c``.
    """
    flat = _channels_last(h, channel_dim)
    mu = flat.mean(0)
    var = flat.var(0, unbiased=False)
    return float(mu.square().mean()), float(var.mean())


def _first_tensor(out: Any) -> Tensor | None:
    if isinstance(out, Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], Tensor):
        return out[0]
    return None


def _capture(model: nn.Module, x: Tensor, units: Sequence[nn.Module]) -> tuple[list[Tensor | None], list[Tensor | None],
                                                                                  Tensor | None]:
    """(every unit's output, every unit's branch output, the first unit's input) on one forward pass."""
    outs: list[Tensor | None] = [None] * len(units)
    branches: list[Tensor | None] = [None] * len(units)
    first: list[Tensor | None] = [None]
    handles = []

    def keep(store: list[Tensor | None], i: int):
        def hook(_m: nn.Module, _a: tuple, out: Any) -> None:
            t = _first_tensor(out)
            store[i] = None if t is None else t.detach()
        return hook

    for i, u in enumerate(units):
        handles.append(u.register_forward_hook(keep(outs, i)))
        branch = getattr(u, "branch", None)
        if isinstance(branch, nn.Module):
            handles.append(branch.register_forward_hook(keep(branches, i)))
    if units:
        handles.append(units[0].register_forward_pre_hook(
            lambda _m, a: first.__setitem__(0, _first_tensor(a).detach() if _first_tensor(a) is not None else None)))
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        for h in handles:
            h.remove()
    return outs, branches, first[0]


def signal_propagation(model: nn.Module, x: Tensor, *, channel_dim: int = 1,
                       units: Sequence[nn.Module] | None = None) -> dict[str, list[float | None]]:
    """A Signal Propagation Plot's three curves for ``model`` on the batch ``x`` (eval mode, no grad).

    Returns ``sq_mean`` and ``variance`` (per unit, of its output) and ``branch_variance`` (per
    unit, of its residual branch's output; None for a unit without one); ``channel_dim``: 1 for
    feature maps ``(N, C, ...)``, -1 for token streams ``(N, T, d)``.
    """
    units = list(blocks(model) if units is None else units)
    if not units:
        raise ValueError(f"{type(model).__name__} has no resgrad blocks to take a signal propagation plot over; "
                         "build it with resgrad.build or pass units=")
    outs, branches, _ = _capture(model, x, units)
    sq, var, bvar = [], [], []
    for o, b in zip(outs, branches, strict=True):
        s, v = channel_stats(o, channel_dim) if o is not None else (None, None)
        sq.append(s)
        var.append(v)
        bvar.append(channel_stats(b, channel_dim)[1] if b is not None else None)
    return {"sq_mean": sq, "variance": var, "branch_variance": bvar}


def pairwise_cosine(h: Tensor) -> float:
    """Mean cosine similarity between distinct tokens of each sequence of ``h`` ``(N, T, d)``, over the batch."""
    if h.dim() != 3 or h.shape[1] < 2:
        raise ValueError(f"token cosine needs a stream (N, T>=2, d), received shape {tuple(h.shape)}")
    u = h.detach().double()
    u = u / u.norm(dim=-1, keepdim=True).clamp_min(1e-300)
    g = u @ u.transpose(1, 2)  # (N, T, T) cosines
    t = h.shape[1]
    off = g.sum((1, 2)) - g.diagonal(dim1=1, dim2=2).sum(-1)
    return float((off / (t * (t - 1))).mean())


def token_cosine(model: nn.Module, x: Tensor, *, units: Sequence[nn.Module] | None = None) -> list[float | None]:
    """Mean pairwise token cosine of the stream entering the first unit, then after every unit.

    ``len(units) + 1`` values (Noci et al. 2022: rank collapse is the cosine going to 1 with depth);
    None where a unit's output is not a ``(N, T, d)`` stream; ``n`` residual streams ``(N, n, T, d)``
    (hyper-connections) are summed first, as the model sums them before its head.
    """
    units = list(blocks(model) if units is None else units)
    if not units:
        raise ValueError(f"{type(model).__name__} has no resgrad blocks to measure token cosine over")
    outs, _, first = _capture(model, x, units)
    out: list[float | None] = []
    for h in [first, *outs]:
        if h is not None and h.dim() == 4:  # n residual streams (B, n, T, d): the model reads out their sum
            h = h.sum(1)
        out.append(pairwise_cosine(h) if h is not None and h.dim() == 3 and h.shape[1] >= 2 else None)
    return out
