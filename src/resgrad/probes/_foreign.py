"""GradientMonitor on a model without resgrad blocks: its residual units, found through the
adapter registry (``resgrad.nets.adapters.locate_units``), watched by hooks on the model's
own modules; the model is left as it is. Eager mode only: under ``torch.compile`` a tap on
an inner module's input would see only that module's share of the gradient.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from ..nets.adapters._registry import _lookup, is_view
from ..nets.blocks import Block
from ._taps import first_tensor

__all__: list[str] = []


def _last_original(m: nn.Module, original: set[int]) -> nn.Module | None:
    """The last of the layer's own modules at the top of a branch view, in registration
    order (the adapters register a branch's modules in the order it calls them)."""
    for child in reversed(list(m.children())):
        if id(child) in original:
            return child
        found = _last_original(child, original)
        if found is not None:
            return found
    return None


def branch_modules(model: nn.Module) -> list[tuple[nn.Module, nn.Module | None]]:
    """(first, last) of the model's own modules in each unit's branch, in the order of
    ``locate_units(model)``: the first receives the unit input x, the last returns F(x)."""
    out: list[tuple[nn.Module, nn.Module | None]] = []
    adapted = {id(m) for m in model.modules() if not is_view(m) and _lookup(m) is not None}
    skip: set[int] = set()
    for m in model.modules():
        if id(m) in skip or id(m) not in adapted:
            continue
        if any(id(c) in adapted for c in m.modules() if c is not m):
            continue
        skip.update(id(c) for c in m.modules())
        try:
            view = _lookup(m)(m)  # type: ignore[misc]
        except (NotImplementedError, ValueError):
            continue
        original = {id(c) for c in m.modules()}
        units = [view] if isinstance(view, Block) else [u for u in view.modules() if isinstance(u, Block)]
        firsts = [next((c for c in u.branch.modules() if id(c) in original), None) for u in units]
        if any(f is None for f in firsts):
            continue  # locate_units skips such a layer too (a unit holding none of its modules)
        out.extend((f, _last_original(u.branch, original)) for f, u in zip(firsts, units, strict=True))  # type: ignore[misc]
    return out


class _ForeignUnits:
    """Mixin of :class:`GradientMonitor`: hooks at the unit sites, and the warnings that say
    why no activation hook ran."""

    model: nn.Module
    activations: str | None
    _blocks: list[Any]
    _sites: list[Any]
    _handles: list[Any]

    def _capture(self, t: Tensor | None, name: str, kind: str, block: int | None) -> None: ...

    def _hook_sites(self) -> None:
        """Hooks at a foreign model's unit sites: one per (module, input|output), feeding
        every row that reads that tensor (a unit's output is often the next one's input)."""
        points: dict[tuple[int, str], tuple[nn.Module, str, list[tuple[str, str, int]]]] = {}
        for bi, st in enumerate(self._sites):
            for (mod, where), kind in ((st.input, "input"), (st.output, "activation")):
                points.setdefault((id(mod), where), (mod, where, []))[2].append((st.name, kind, bi))
        for mod, where, targets in points.values():
            if where == "input":
                self._handles.append(mod.register_forward_pre_hook(
                    partial(self._on_site_input, targets), with_kwargs=True))
            else:
                self._handles.append(mod.register_forward_hook(partial(self._on_site_output, targets)))

    def _on_site_input(self, targets: list[tuple[str, str, int]], module: nn.Module, args: Any,
                       kwargs: dict[str, Any]) -> None:
        if torch.compiler.is_compiling():
            # Tapping an inner module's input would give only that module's share of the
            # gradient (the skip path reads the tensor too): foreign units are eager-only.
            return
        t = first_tensor(args)
        if t is None:  # called by keyword (transformers passes hidden_states= at times)
            t = kwargs.get("hidden_states")
            t = t if isinstance(t, Tensor) else first_tensor(tuple(kwargs.values()))
        for name, kind, bi in targets:
            self._capture(t, name, kind, bi)

    def _on_site_output(self, targets: list[tuple[str, str, int]], module: nn.Module, args: Any, out: Any) -> None:
        if torch.compiler.is_compiling():
            return
        t = first_tensor(out)
        for name, kind, bi in targets:
            self._capture(t, name, kind, bi)

    def _no_hook_message(self) -> str:
        """Why no activation hook ran although gradients exist (see ActivationGrad)."""
        if not self._has_targets():
            return self._no_units_message()
        # Hooks exist but none ran: the modules hooked were not called (another model was
        # trained), or torch.compile reuses code traced before the hooks existed (dynamo
        # skips guards on module hooks by default).
        eager = (" (the residual units of a model without resgrad blocks are watched in eager mode only; "
                 "monitor resgrad.adapt(model) to measure them compiled)") if self._sites else ""
        return ("resgrad: no activation hook ran this step although gradients exist: the monitored "
                f"{type(self.model).__name__} did not run its hooked modules, or it is torch.compile'd"
                f"{eager}; with compile, attach the monitor before its first compiled call, or set "
                "torch._dynamo.config.skip_nnmodule_hook_guards = False so hooks are guarded")

    def _has_targets(self) -> bool:
        """Does the activation option find anything to hook on this model?"""
        if self.activations == "blocks":
            return bool(self._blocks or self._sites)
        return True

    def _no_units_message(self) -> str:
        return (f"resgrad: activations='blocks' found no resgrad block and no residual unit that "
                f"resgrad.adapt knows in {type(self.model).__name__}, so no block rows will be recorded; "
                "use activations='leaves' (every leaf module), or register an adapter for its block "
                "class with resgrad.register_adapter(BlockClass, fn)")
