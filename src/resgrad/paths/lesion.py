"""Lesions at test time: delete blocks, reorder blocks (Veit et al. 2016, arXiv 1605.06431, §4).

If a residual net were one deep composition, removing any block would break it, as
removing a layer breaks VGG; if it behaves like an ensemble of paths, removing one block
only removes the half of the paths through its branch, and error rises smoothly with the
number of blocks removed (Veit §4.2-4.3) or reordered (§4.4).

- ``deleted(model, blocks=[...])``: the branches of those blocks are removed,
  ``y = post(shortcut(x))``; a Plain block becomes its shape-matching shortcut (what
  Veit did for VGG layers). Built on :func:`resgrad.gates`, restored on exit.
- ``reordered(model, order)``: the blocks swap places in their parent containers;
  the original order is put back on exit, exceptions included.

Blocks are indexed as in :func:`resgrad.blocks` (Residual and Plain, forward order).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from ..nets.blocks import Block, blocks, gates
from ._common import as_input, chain, preserved

__all__ = [
    "deleted", "reordered", "error_rate", "swap_groups", "random_swaps", "kendall_tau",
    "stages", "single_deletions", "k_deletions", "reorder_curve",
]


@contextmanager
def deleted(model: nn.Module, blocks: Iterable[int] = ()) -> Iterator[list[Block]]:
    """Remove the branches of ``blocks`` (indices into ``resgrad.blocks(model)``) inside a ``with``."""
    with gates(model, lesion=blocks) as bl:
        yield bl


def _slots(model: nn.Module, bl: Sequence[Block]) -> list[tuple[nn.Module, str]]:
    """(parent, attribute name) holding each block."""
    where: dict[int, tuple[nn.Module, str]] = {}
    for parent in model.modules():
        for name, child in parent._modules.items():
            if child is not None and id(child) not in where:
                where[id(child)] = (parent, name)
    return [where[id(b)] for b in bl]


@contextmanager
def reordered(model: nn.Module, order: Sequence[int]) -> Iterator[list[Block]]:
    """Run the blocks in ``order``: position ``j`` holds the block that was at ``order[j]``.

    Only blocks whose input and output shapes agree can trade places (see
    :func:`swap_groups`). The original order is restored on exit.
    """
    bl = blocks(model)
    order = [int(i) for i in order]
    if sorted(order) != list(range(len(bl))):
        raise ValueError(
            f"order must be a permutation of 0..{len(bl) - 1} (one entry per block), received {order}"
        )
    slots = _slots(model, bl)
    try:
        for (parent, name), i in zip(slots, order, strict=True):
            parent._modules[name] = bl[i]
        yield [bl[i] for i in order]
    finally:
        for (parent, name), b in zip(slots, bl, strict=True):
            parent._modules[name] = b


def kendall_tau(order: Sequence[int]) -> float:
    """Kendall's tau between the original order and ``order`` (1: unchanged)."""
    from scipy.stats import kendalltau

    if len(order) < 2:
        return 1.0
    # Rounded: scipy returns 0.9999999999999999 for the identity.
    return round(float(kendalltau(list(range(len(order))), list(order)).statistic), 12)


def _rows(kw: dict[str, Any] | None, i: int, j: int, n: int) -> dict[str, Any]:
    """Forward kwargs for examples ``i:j`` of ``n``: per-example tensors sliced like the inputs."""
    return {k: v[i:j] if isinstance(v, Tensor) and v.dim() > 0 and v.shape[0] == n else v
            for k, v in (kw or {}).items()}


def error_rate(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 1000,
               forward_kwargs: dict[str, Any] | None = None) -> float:
    """Top-1 error on ``(x, y)`` in eval mode (BatchNorm running statistics), no grad.

    Outputs ``(B, C, ...)`` with labels ``(B, ...)`` (token logits ``(B, V, T)``, see
    ``resgrad.tokens.TokenView``) score every position: the fraction of wrong labels.
    ``forward_kwargs``: extra forward arguments (attention_mask=, ...); tensors with one row
    per example are sliced with the batch."""
    x = as_input(model, x)
    y = y.to(x.device)
    wrong = 0
    with preserved(model, training=False), torch.no_grad():
        for i in range(0, len(x), batch_size):
            out = model(x[i : i + batch_size], **_rows(forward_kwargs, i, i + batch_size, len(x)))
            wrong += int((out.argmax(1) != y[i : i + batch_size]).sum())
    return wrong / max(y.numel(), 1)


def _shapes(model: nn.Module, x: Tensor) -> list[tuple[tuple, tuple]]:
    """(input shape, output shape) of every block, from one forward on ``x[:2]``."""
    bl = blocks(model)
    seen: dict[int, tuple] = {}

    def record(i: int):
        def hook(module, args, out) -> None:
            seen.setdefault(i, (tuple(args[0].shape[1:]), tuple(out.shape[1:])))

        return hook

    handles = [b.register_forward_hook(record(i)) for i, b in enumerate(bl)]
    try:
        with preserved(model, training=False), torch.no_grad():
            model(as_input(model, x[:2]))
    finally:
        for h in handles:
            h.remove()
    return [seen.get(i, ((), ())) for i in range(len(bl))]


def swap_groups(model: nn.Module, x: Tensor) -> list[list[int]]:
    """Groups of blocks that can trade places: identity shortcut, same input and output shape.

    Downsampling blocks are never moved (Veit §4.4 reorders within a stage).
    """
    bl = blocks(model)
    groups: dict[tuple, list[int]] = {}
    for i, (shp, b) in enumerate(zip(_shapes(model, x), bl, strict=True)):
        if not b.changes_shape and shp[0] == shp[1] and shp[0]:
            groups.setdefault(shp, []).append(i)
    return [g for g in groups.values() if len(g) > 1]


def stages(model: nn.Module) -> list[int]:
    """Stage number of each block: a new stage starts at each shape-changing block."""
    out, s = [], 0
    for i, b in enumerate(blocks(model)):
        if b.changes_shape and i > 0:
            s += 1
        out.append(s)
    return out


def random_swaps(n: int, groups: Sequence[Sequence[int]], k: int, generator: torch.Generator) -> list[int]:
    """An order of ``n`` blocks after ``k`` random swaps of a pair within one group.

    Each swap picks a pair uniformly among all same-group pairs (Veit §4.4: "swapping k
    randomly sampled pairs of building blocks").
    """
    order = list(range(n))
    weights = torch.tensor([len(g) * (len(g) - 1) / 2 for g in groups], dtype=torch.float64)
    if k and (not groups or weights.sum() == 0):
        raise ValueError("no two blocks have the same shape, so none can be swapped")
    for _ in range(k):
        g = groups[int(torch.multinomial(weights, 1, generator=generator))]
        a, b = torch.randperm(len(g), generator=generator)[:2].tolist()
        pa, pb = order.index(g[a]), order.index(g[b])  # positions of the two blocks now
        order[pa], order[pb] = order[pb], order[pa]
    return order


def single_deletions(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 1000,
                     forward_kwargs: dict[str, Any] | None = None) -> dict:
    """Test error with each block deleted in turn (Veit §4.2, Fig. 3)."""
    _, bl = chain(model)  # an error naming resgrad.adapt when there are no blocks
    base = error_rate(model, x, y, batch_size, forward_kwargs)
    st = stages(model)
    rows = []
    for i, b in enumerate(bl):
        with deleted(model, blocks=[i]):
            err = error_rate(model, x, y, batch_size, forward_kwargs)
        rows.append({
            "block": i, "stage": st[i], "kind": "residual" if type(b).__name__ == "Residual" else "plain",
            "downsample": bool(b.changes_shape), "error": err, "delta": err - base,
        })
    return {"baseline": base, "blocks": rows}


def _summary(values: list[float]) -> dict:
    m = sum(values) / len(values)
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return {"mean": m, "std": sd}


def k_deletions(
    model: nn.Module, x: Tensor, y: Tensor, ks: Iterable[int], *, trials: int = 5, seed: int = 0,
    include_downsampling: bool = False, batch_size: int = 1000, forward_kwargs: dict[str, Any] | None = None,
) -> list[dict]:
    """Test error with ``k`` random blocks deleted, ``trials`` draws per ``k`` (Veit §4.3, Fig. 5a).

    Downsampling blocks are left in unless ``include_downsampling`` (deleting them is a
    different lesion: Veit §4.2 reports them separately).
    """
    bl = blocks(model)
    pool = [i for i, b in enumerate(bl) if include_downsampling or not b.changes_shape]
    g = torch.Generator().manual_seed(seed)
    rows = []
    for k in ks:
        k = int(k)
        if not 0 <= k <= len(pool):
            raise ValueError(f"k must be in 0..{len(pool)} (deletable blocks), received {k}")
        errs = []
        for _ in range(trials if k else 1):
            pick = [pool[j] for j in torch.randperm(len(pool), generator=g)[:k].tolist()]
            with deleted(model, blocks=pick):
                errs.append(error_rate(model, x, y, batch_size, forward_kwargs))
        rows.append({"k": k, "errors": errs, **_summary(errs)})
    return rows


def reorder_curve(
    model: nn.Module, x: Tensor, y: Tensor, ks: Iterable[int], *, trials: int = 5, seed: int = 0,
    batch_size: int = 1000, forward_kwargs: dict[str, Any] | None = None,
) -> list[dict]:
    """Test error after ``k`` random swaps vs Kendall tau of the order (Veit §4.4, Fig. 5b)."""
    n = len(blocks(model))
    groups = swap_groups(model, x)
    g = torch.Generator().manual_seed(seed)
    rows = []
    for k in ks:
        k = int(k)
        runs = []
        for _ in range(trials if k else 1):
            order = random_swaps(n, groups, k, g)
            with reordered(model, order):
                runs.append({"tau": kendall_tau(order),
                             "error": error_rate(model, x, y, batch_size, forward_kwargs)})
        errs = [r["error"] for r in runs]
        taus = [r["tau"] for r in runs]
        rows.append({"swaps": k, "trials": runs, "mean_tau": sum(taus) / len(taus), **_summary(errs)})
    return rows
