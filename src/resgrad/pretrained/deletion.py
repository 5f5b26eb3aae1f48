"""Whole layers of a pretrained Transformer removed or reordered, as transformers itself runs them.

A layer is removed from the model's own layer list (``nn.ModuleList`` without it,
``config.num_hidden_layers`` adjusted; Llama's forward reads that field), not gated: a
post-LN BERT layer with both branches gated would still apply its two LayerNorms, which is
not the model without the layer. The original list and config are put back on exit.

- every single layer removed;
- ``k`` consecutive layers for ``k`` up to half the depth, the start chosen three ways:
  Gromov et al. 2024 (arXiv 2403.17887, §3.2) take the smallest angular distance between
  layer ``s``'s input and layer ``s+k``'s; ShortGPT (Men et al. 2024, arXiv 2403.03853) ranks
  layers by Block Influence, here summed over the window so the removed layers stay
  consecutive; the oracle tries every start and keeps the best;
- the middle layers (all but the first and last) skipped, reversed and shuffled (Sun et al.
  2024, arXiv 2407.09298, §3: "Transformer layers as painters").
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

__all__ = ["layer_list", "layers_as", "deletion"]


def layer_list(model: nn.Module) -> tuple[nn.Module, str, nn.ModuleList]:
    """(parent, attribute, list) of the model's Transformer layers: the longest ModuleList of one class."""
    best: tuple[nn.Module, str, nn.ModuleList] | None = None
    for parent in model.modules():
        for name, child in parent._modules.items():
            if (isinstance(child, nn.ModuleList) and len(child) > 0 and len({type(c) for c in child}) == 1
                    and (best is None or len(child) > len(best[2]))):
                best = (parent, name, child)
    if best is None:
        raise ValueError(f"{type(model).__name__} has no list of layers (nn.ModuleList) to remove layers from")
    return best


@contextmanager
def layers_as(model: nn.Module, order: Sequence[int]) -> Iterator[nn.Module]:
    """Run ``model`` with its layers ``order`` (indices into the original list; missing ones removed)."""
    parent, name, layers = layer_list(model)
    n = len(layers)
    bad = [i for i in order if not 0 <= int(i) < n]
    if bad:
        raise ValueError(f"layer indices must be in 0..{n - 1}, received {bad}")
    config = getattr(model, "config", None)
    had = getattr(config, "num_hidden_layers", None)
    parent._modules[name] = nn.ModuleList([layers[int(i)] for i in order])
    if had is not None:
        config.num_hidden_layers = len(order)
    try:
        yield model
    finally:
        parent._modules[name] = layers
        if had is not None:
            config.num_hidden_layers = had


def _without(n: int, drop: Sequence[int]) -> list[int]:
    d = set(drop)
    return [i for i in range(n) if i not in d]


def deletion(model: nn.Module, score: Callable[[nn.Module], dict[str, float]], primary: str, angular: list[list[float]],
             influence: list[float], *, k_max: int | None = None, shuffles: int = 3, seed: int = 0,
             higher_is_better: bool = False, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Score the model with layers removed or reordered (see the module docstring).

    ``score(model) -> {name: value}``; ``primary`` names the value the oracle minimises
    (perplexity) or maximises (``higher_is_better``: cosine to the full model).
    ``angular[l][m]``: the distance between layer ``l``'s and ``m``'s input (``l, m <= L``).
    """
    n = len(layer_list(model)[2])
    k_max = n // 2 if k_max is None else max(1, min(int(k_max), n - 1))

    def run(order: list[int]) -> dict[str, float]:
        with layers_as(model, order):
            return score(model)

    def better(a: float, b: float) -> bool:
        return a > b if higher_is_better else a < b

    full = run(list(range(n)))
    single = [run(_without(n, [layer])) for layer in range(n)]
    consecutive = []
    for k in range(1, k_max + 1):
        starts = list(range(n - k + 1))
        scores = [single[s] if k == 1 else run(_without(n, range(s, s + k))) for s in starts]
        vals = [s[primary] for s in scores]
        oracle = 0
        for s in starts[1:]:
            if better(vals[s], vals[oracle]):
                oracle = s
        ang = min(starts, key=lambda s: angular[s][s + k])
        bi = min(starts, key=lambda s: sum(influence[s: s + k]))
        consecutive.append({"k": k, "fraction": k / n, "scores": scores, "oracle_start": oracle,
                            "angular_start": ang, "influence_start": bi, "oracle": scores[oracle],
                            "angular": scores[ang], "influence": scores[bi]})
        if log is not None:
            log(f"  {k} consecutive layers removed: oracle {primary} {vals[oracle]:.4g} (start {oracle}), "
                f"angular {vals[ang]:.4g} (start {ang}), Block Influence {vals[bi]:.4g} (start {bi})")
    reorder = None
    if n >= 4:
        middle = list(range(1, n - 1))
        g = torch.Generator().manual_seed(seed)
        shuffled = [run([0, *[middle[i] for i in torch.randperm(len(middle), generator=g).tolist()], n - 1])
                    for _ in range(shuffles)]
        reorder = {"layers": middle, "skipped": run([0, n - 1]), "reversed": run([0, *middle[::-1], n - 1]),
                   "shuffled": shuffled}
    return {"layers": n, "primary": primary, "full": full, "single": single, "consecutive": consecutive,
            "reorder": reorder}
