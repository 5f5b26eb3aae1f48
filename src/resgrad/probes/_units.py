"""The skip/branch split, forward ratios and activation norms per residual unit, from the
passes already running (mixin of :class:`resgrad.GradientMonitor`).

A unit computes ``y = post(s(x) + F(x))``. The gradient at its input is the sum of what
comes back through the shortcut and through the branch, ``∂L/∂x = J_s^T g + J_F^T g``
with ``g = ∂L/∂(s(x) + F(x))`` (for an identity shortcut ``J_s^T g = g`` itself). Each
part is a tensor of the backward pass that already runs: at a measured step the forward
pre-hook of the branch hands it ``x.view_as(x)``, an alias whose gradient is exactly
``J_F^T g``; no second backward, no extra VJP.

- resgrad blocks (``Residual``): the shortcut module (``nn.Identity`` included) gets an
  alias as well, so the skip part is the shortcut's own VJP. Under ``torch.compile`` the
  aliases are :class:`._taps.Tap` s (purely functional: ``fullgraph=True`` holds).
- foreign units (HF, timm, torchvision, ``nn.TransformerEncoder``; eager only, as for their
  other rows): the first of the layer's modules that the adapter's branch calls receives
  the alias (every argument that *is* ``x``: ``self_attn(x, x, x)`` passes it three times);
  the skip part is ``∂L/∂x - J_F^T g``, taken in a tensor hook on ``x`` once its gradient
  is complete (the alias's hook runs before it: the alias is one of ``x``'s consumers).

Forward values (``stream`` ‖x‖, ``forward`` ‖F(x)‖ and ‖F(x)‖/‖x‖, ``act_norm`` ‖y‖) are
norms taken in forward hooks at measured steps only, left on the device (float64, no host
read). Under compile a pass overwrites the previous one (the last pass of a step counts);
in eager mode the passes of one step combine as a root sum of squares, like the
gradient rows. Distributed, the skip/branch parts are reduced over ranks with the other
activation-gradient rows; the forward norms are this rank's (not reduced).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from ..nets.blocks import Residual
from . import _norms
from ._foreign import branch_modules
from ._taps import Tap, first_tensor

__all__ = ["SplitPoint", "split_points"]


@dataclass(frozen=True, eq=False)
class SplitPoint:
    """Where one unit's branch starts and ends among the hooked model's modules."""

    name: str
    block: int
    branch_in: nn.Module  # its forward pre-hook sees x (the unit input) first
    branch_out: nn.Module | None  # its output is F(x); None: not known (no forward ratio)
    shortcut: nn.Module | None  # resgrad blocks: the shortcut module; None: skip = total - branch
    unit_out: tuple[nn.Module, str]  # (module, "input" | "output") holding y
    eager_only: bool  # foreign units: no hook runs under torch.compile


def split_points(mon: Any, wanted: bool) -> list[SplitPoint]:
    """The monitored units' split points (selected ones only), or a one-line error when the
    ``split``/``act_norms`` options are on and the model has no unit to measure."""
    if not wanted:
        return []
    sel = mon._unit_sel
    pts: list[SplitPoint] = []
    if mon._blocks:
        for i, b in enumerate(mon._blocks):
            sc = b.shortcut if isinstance(b, Residual) else None  # Plain: the branch is everything
            pts.append(SplitPoint(mon._unit_names[i], i, b.branch, b.branch, sc, (b, "output"), False))
    elif mon._sites:
        ends = branch_modules(mon.model)
        if len(ends) != len(mon._sites):  # the registry's views and sites disagree: say so, do not guess
            raise ValueError(f"split/act_norms: found {len(ends)} branches for {len(mon._sites)} units in "
                             f"{type(mon.model).__name__}; monitor resgrad.adapt(model) instead")
        for i, (st, (first, last)) in enumerate(zip(mon._sites, ends, strict=True)):
            pts.append(SplitPoint(st.name, i, first, last, None, st.output, True))
    else:
        opt = "split=True" if mon.split else "act_norms=True"
        raise ValueError(f"{opt} needs residual units, but {type(mon.model).__name__} has no resgrad block and no "
                         "residual unit that resgrad.adapt knows; register an adapter with "
                         "resgrad.register_adapter(BlockClass, fn), or leave it off")
    return [p for p in pts if sel is None or p.block in sel]


def _fnorm(t: Tensor) -> Tensor:
    """‖t‖ of a forward value, float64 on its device (squares of float32 over/underflow)."""
    return torch.linalg.vector_norm(t.detach(), dtype=torch.float64)


def _replace(obj: Any, x: Tensor, alias: Tensor) -> Any:
    """``obj`` (args tuple or kwargs dict) with every occurrence of ``x`` itself replaced."""
    if isinstance(obj, dict):
        return {k: alias if v is x else v for k, v in obj.items()}
    return tuple(alias if v is x else v for v in obj)


class _UnitSplit:
    """Hooks of the ``split`` and ``act_norms`` options; state lives on the monitor."""

    model: nn.Module
    _handles: list[Any]
    _tensor_handles: list[Any]
    _split_pts: list[SplitPoint]
    _arm: dict[str, bool]
    _taps: dict[str, Any]
    _fwd: dict[str, Any]
    _fwd_meta: dict[str, tuple[str, str, int]]
    _gb: dict[int, Tensor]
    _pass: int

    def _capture(self, t: Tensor | None, name: str, kind: str, block: int | None) -> None: ...
    def _add_tap(self, name: str, kind: str, block: int | None, source: str | None = None) -> None: ...
    def _slot(self, name: str, kind: str, block: int | None, numel: int) -> Any: ...
    def _on_grad(self, targets: list[Any], grad: Tensor) -> None: ...

    def _hook_split(self, split: bool, act_norms: bool) -> None:
        for pt in self._split_pts:
            if split:
                if not pt.eager_only:  # resgrad blocks: compiled mode taps the two parts
                    self._add_tap(pt.name, "branch", pt.block)
                if pt.shortcut is not None:
                    self._add_tap(pt.name, "skip", pt.block)
                    self._handles.append(pt.shortcut.register_forward_pre_hook(partial(self._on_shortcut_in, pt)))
                self._fwd_meta[f"stream:{pt.name}"] = (pt.name, "stream", pt.block)
                self._handles.append(pt.branch_in.register_forward_pre_hook(
                    partial(self._on_branch_in, pt), with_kwargs=True))
                if pt.branch_out is not None:
                    self._fwd_meta[f"forward:{pt.name}"] = (pt.name, "forward", pt.block)
                    self._handles.append(pt.branch_out.register_forward_hook(partial(self._on_branch_out, pt)))
            if act_norms:
                self._fwd_meta[f"act_norm:{pt.name}"] = (pt.name, "act_norm", pt.block)
                mod, where = pt.unit_out
                if where == "input":
                    self._handles.append(mod.register_forward_pre_hook(partial(self._on_unit_out_pre, pt)))
                else:
                    self._handles.append(mod.register_forward_hook(partial(self._on_unit_out, pt)))

    # ---- forward values ---------------------------------------------------------------

    def _record(self, key: str, t: Tensor) -> None:
        if torch.compiler.is_compiling():
            self._fwd[key] = _fnorm(t).square()  # a dict store: dynamo replays it, the norm is a graph output
            self._fwd_n[key] = t.numel()
            return
        # One norm per tensor: unit l's input is often unit l-1's output (stream = act_norm).
        mark = getattr(t, "_resgrad_fnorm", None)
        if mark is not None and mark[0] == id(self) and mark[1] == self._pass and mark[2] == t._version:
            sq = mark[3]
        else:
            # The gradient rows' norm: on the CPU float32 with a float64 redo outside the safe
            # range (a read costs no sync there), on accelerators float64 (no read).
            sq = _norms.norm(t.detach()).double().square()
            with contextlib.suppress(AttributeError, RuntimeError):  # tensor subclasses may refuse
                t._resgrad_fnorm = (id(self), self._pass, t._version, sq)  # type: ignore[attr-defined]
        self._fwd.setdefault(key, []).append(sq)
        self._fwd_n[key] = self._fwd_n.get(key, 0) + t.numel()

    def _live(self, kind: str, t: Tensor | None) -> bool:
        return t is not None and self._arm.get(kind, False) and torch.is_grad_enabled()

    def _on_branch_out(self, pt: SplitPoint, module: nn.Module, args: Any, out: Any) -> None:
        t = first_tensor(out)
        if pt.eager_only and torch.compiler.is_compiling():
            return
        if self._live("split", t):
            self._record(f"forward:{pt.name}", t)  # type: ignore[arg-type]

    def _on_unit_out(self, pt: SplitPoint, module: nn.Module, args: Any, out: Any) -> None:
        self._unit_out(pt, first_tensor(out))

    def _on_unit_out_pre(self, pt: SplitPoint, module: nn.Module, args: Any) -> None:
        self._unit_out(pt, first_tensor(args))

    def _unit_out(self, pt: SplitPoint, t: Tensor | None) -> None:
        if pt.eager_only and torch.compiler.is_compiling():
            return  # foreign units: eager only
        if self._live("act_norms", t):
            self._record(f"act_norm:{pt.name}", t)  # type: ignore[arg-type]

    # ---- the gradient split -------------------------------------------------------------

    def _on_shortcut_in(self, pt: SplitPoint, module: nn.Module, args: Any) -> Any:
        x = first_tensor(args)
        if not self._live("split", x) or not x.requires_grad:  # type: ignore[union-attr]
            return None
        if torch.compiler.is_compiling():
            return _replace(args, x, Tap.apply(x, self._taps[f"skip:{pt.name}"].probe))  # type: ignore[arg-type]
        alias = x.view_as(x)  # type: ignore[union-attr]
        self._capture_split(alias, pt, "skip")
        return _replace(args, x, alias)  # type: ignore[arg-type]

    def _on_branch_in(self, pt: SplitPoint, module: nn.Module, args: Any, kwargs: dict[str, Any]) -> Any:
        x = first_tensor(args)
        if x is None:  # called by keyword (transformers passes hidden_states= at times)
            x = kwargs.get("hidden_states")
            x = x if isinstance(x, Tensor) else first_tensor(tuple(kwargs.values()))
        if not self._live("split", x):
            return None
        compiling = torch.compiler.is_compiling()
        if pt.eager_only and compiling:
            return None  # foreign units: eager only (see _foreign)
        self._record(f"stream:{pt.name}", x)  # type: ignore[arg-type]
        if not x.requires_grad:  # type: ignore[union-attr]
            return None
        if compiling:  # (a Plain block has no skip: its branch carries the whole gradient)
            alias = Tap.apply(x, self._taps[f"branch:{pt.name}"].probe)
        else:
            alias = x.view_as(x)  # type: ignore[union-attr]
            self._capture_split(alias, pt, "branch")
            if pt.shortcut is None:  # the skip part is what the rest of x's gradient holds
                skip = self._slot(pt.name, "skip", pt.block, x.numel())  # type: ignore[union-attr]
                self._tensor_handles.append(x.register_hook(partial(self._on_unit_input_grad, pt, skip)))  # type: ignore[union-attr]
        return _replace(args, x, alias), _replace(kwargs, x, alias)  # type: ignore[arg-type]

    def _capture_split(self, alias: Tensor, pt: SplitPoint, kind: str) -> None:
        slot = self._slot(pt.name, kind, pt.block, alias.numel())
        keep = pt.shortcut is None and kind == "branch"
        self._tensor_handles.append(alias.register_hook(partial(self._on_split_grad, slot, pt, keep)))

    def _on_split_grad(self, slot: Any, pt: SplitPoint, keep: bool, grad: Tensor) -> None:
        if keep:
            self._gb[pt.block] = grad.detach()
        self._on_grad([slot], grad)

    def _on_unit_input_grad(self, pt: SplitPoint, slot: Any, grad: Tensor) -> None:
        # (The slot was made in forward: making one here would start a new pass.)
        gb = self._gb.pop(pt.block, None)
        g = grad.detach()
        self._on_grad([slot], g - gb if gb is not None else g)
