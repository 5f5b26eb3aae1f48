"""Where a foreign model's residual units show in its *own* forward, for hooks on the original.

``adapt(model)`` builds a view to compute with; a probe that only watches gradients needs
less: for each unit, which original module receives the unit's input ``x`` and which
produces (or receives) its output ``y``, so hooks on the unchanged model see the same
tensors the view's :class:`resgrad.Residual` units would. The sites are read off the
adapter's view of each layer, which is built from the layer's own modules:

- a view that is a single unit (torchvision/timm ResNet blocks, ConvNeXt): ``x`` is the
  layer's input and ``y`` its output;
- a layer viewed as several units (Transformer layers: ``attn`` then ``mlp``): the first
  unit's ``x`` is the layer's input, the last unit's ``y`` the layer's output; in between,
  a unit's ``y`` is the output of its ``post`` when that is one of the layer's modules
  (post-LN: BERT, ``norm_first=False``), else the next unit's ``x``, which is the input of
  the first of the layer's modules that unit's branch calls (``ln_2`` in GPT-2: it
  receives the sum ``x + attn(x)`` itself, whose gradient is the whole ∂L/∂y).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

from torch import nn

from ..blocks import Block, blocks
from ._registry import _lookup, is_view

__all__ = ["UnitSite", "locate_units"]


@dataclass(frozen=True, eq=False)
class UnitSite:
    """One residual unit of a foreign model: its name in ``adapt(model)`` and where its
    input and output tensors appear, as ``(module, "input" | "output")`` of original modules."""

    name: str
    input: tuple[nn.Module, str]
    output: tuple[nn.Module, str]
    modules: frozenset[int]  # id() of the original modules inside the unit
    params: frozenset[int]  # id() of its parameters


def _first_original(m: nn.Module, original: set[int]) -> nn.Module | None:
    """The first of the layer's own modules in ``m`` (pre-order = the order a branch calls them)."""
    for sub in m.modules():
        if id(sub) in original:
            return sub
    return None


def _sites(name: str, layer: nn.Module, view: nn.Module) -> list[UnitSite]:
    original = {id(m) for m in layer.modules()}
    if isinstance(view, Block):
        units, names = [view], [name]
    else:
        named = [(n, m) for n, m in view.named_modules() if isinstance(m, Block)]
        units, names = [m for _, m in named], [f"{name}.{n}" if name else n for n, _ in named]
    inputs: list[tuple[nn.Module, str]] = [(layer, "input")]
    for u in units[1:]:
        first = _first_original(u.branch, original)
        if first is None:
            raise ValueError(f"a unit of the view of {type(layer).__name__} holds none of its modules")
        inputs.append((first, "input"))
    out = []
    for k, u in enumerate(units):
        if k == len(units) - 1:
            y = (layer, "output")
        elif id(u.post) in original:
            y = (u.post, "output")
        else:
            y = inputs[k + 1]
        mods = frozenset(id(m) for m in u.modules() if id(m) in original)
        out.append(UnitSite(names[k], inputs[k], y, mods, frozenset(id(p) for p in u.parameters())))
    return out


def locate_units(model: nn.Module, *, warn: bool = True) -> list[UnitSite]:
    """The residual units the adapter registry knows in ``model``, in registration order.

    Nothing is changed on ``model`` (each layer's view is built and dropped). A module whose
    adapter refuses it (e.g. GPT-2 with cross-attention) is skipped, with a warning if ``warn``; a model
    built from resgrad blocks, or with no known unit, gives ``[]``.
    """
    if blocks(model):
        return []
    found: list[UnitSite] = []
    adapted = {id(m) for m in model.modules() if not is_view(m) and _lookup(m) is not None}
    skip: set[int] = set()
    for name, m in model.named_modules():
        if id(m) in skip or id(m) not in adapted:
            continue
        if any(id(c) in adapted for c in m.modules() if c is not m):
            continue  # a container (nn.TransformerEncoder): its layers are located themselves
        skip.update(id(c) for c in m.modules())
        try:
            view = _lookup(m)(m)  # type: ignore[misc]
            found.extend(_sites(name, m, view))
        except (NotImplementedError, ValueError) as e:
            if warn:
                warnings.warn(f"resgrad: {name or type(m).__name__} is not watched as residual units: {e}",
                              RuntimeWarning, stacklevel=2)
    return found
