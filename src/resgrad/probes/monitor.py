"""Per-layer gradient norms of any ``nn.Module``: :class:`GradientMonitor`.

(Over 500 lines on purpose: the hook plumbing, taps, slots and the step, stays in one place; the
schedule, reading, unit split and foreign units are already mixins in their own modules.)

The monitor owns the hooks and the step schedule; what it records at the steps its
schedule selects are the quantities of :mod:`resgrad.probes.quantities`, one module each:
``param`` (‖∂L/∂w‖), ``activation`` (‖∂L/∂y‖ of module outputs) and ``input`` (‖∂L/∂x_l‖
of block inputs: He et al. 2016, arXiv 1603.05027, Eq. 5), ``weight`` and ``update``.
Every row counts its non-finite entries (``nonfinite``) instead of dropping them.

Activation gradients come from *tensor* hooks: a forward hook registers
``output.register_hook`` on the tensor the module returned. That costs one norm per
tensor and works with in-place ops (torchvision's ``ReLU(inplace=True)``), where
``register_full_backward_hook`` wraps outputs in an extra autograd node and refuses
in-place modification. A hook registered before an in-place op sees the gradient of the
value before it (PyTorch autograd semantics), so each module gets the gradient of what
it returned. Modules returning their input unchanged (``nn.Identity``) are skipped.

Under ``torch.compile`` the forward hooks insert a tap (``_taps.Tap``, purely functional,
so the model compiles with ``fullgraph=True``) whose numbers equal eager mode's; they are
read after backward, in :meth:`GradientMonitor.step`. Dynamo does not guard on module
hooks by default (``skip_nnmodule_hook_guards``), so attach the monitor before the
compiled model's first call. In compiled mode a module called several times per forward
gets one row (the norm over its calls), and backward order for the non-finite origin is
taken as reverse forward order (no hook runs at backward time to tell).

Distributed (``torch.distributed`` initialised, world size > 1): activation gradients and
FSDP2 parameter shards are reduced in one all-reduce per measured step (``_dtensor``);
activation sums of squares are divided by world², DDP's gradient averaging, so the values
equal a single-process run on the global batch when each rank's loss is a mean over its part.

Non-finite origin: the first step with a NaN/Inf gradient adds a ``nonfinite_origin``
row naming the first module, in backward order, whose output gradient was non-finite,
and warns once in one line (``GradientMonitor.nonfinite_origin`` keeps it).
"""

from __future__ import annotations

import contextlib
import inspect
import warnings
from collections.abc import Callable
from functools import partial
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.utils.hooks import RemovableHandle

from ..callbacks import Callback
from ..nets.adapters import UnitSite, locate_units
from ..nets.blocks import blocks as _blocks
from . import _norms
from ._dtensor import dist_world, reduce_step
from ._exports import _DeprecatedExports
from ._foreign import _ForeignUnits
from ._options import QUANTITY_OPTIONS, check_options
from ._reading import _Reading, _Schedule
from ._select import resolve
from ._taps import Tap, first_tensor, replace_first
from ._units import _UnitSplit, split_points
from .quantities import (
    COLUMNS,
    ActivationGrad,
    ForwardNorms,
    NonfiniteOrigin,
    ParamGrad,
    Quantity,
    StepData,
    UpdateNorm,
    WeightNorm,
)
from .quantities._base import Slot, TapSlot
from .quantities.activation import act_matrix

__all__ = ["GradientMonitor", "COLUMNS", "Schedule", "Activations"]

Schedule = Callable[[int], bool]
Activations = bool | Literal["all", "leaves", "blocks"]
# Row kind -> the option whose schedule arms it.
_OPTION_OF = {"activation": "activations", "input": "activations", "skip": "split", "branch": "split"}
# per="auto": one row per unit (not per parameter tensor) above this many parameter tensors:
# a 100-layer model has 300-1,200 of them, a log no one reads; ResNet-20 (65), timm resnet18
# (62) and a 6-layer GPT-2 (76) stay per parameter.
PER_UNIT_ABOVE = 128


class GradientMonitor(_Schedule, _Reading, _UnitSplit, _ForeignUnits, _DeprecatedExports, Callback):
    """Record per-layer gradient norms while a model trains; use as a ``with`` block.

    ``every=k`` measures steps 0, k, 2k, ...; ``schedule(step) -> bool`` overrides it.
    ``activations``: False, True/``"all"`` (leaf modules and blocks), ``"leaves"`` or
    ``"blocks"`` (blocks only: cheapest way to get the per-block profile). Blocks are the
    model's resgrad blocks or, in a model without any (torchvision, timm, Hugging Face),
    the residual units the adapter registry finds, hooked on the model's own modules.
    ``scaler``: a ``torch.amp.GradScaler``; norms are divided by the loss scale used in
    the backward pass (activation gradients always; parameter gradients unless the
    optimizer's gradients were already unscaled with ``scaler.unscale_``, which the
    monitor can tell when it knows the optimizer: callback mode or ``step(optimizer=)``).

    ``sync_dist``: None (default) reduces activation norms and FSDP2 shards over ranks when
    ``torch.distributed`` is initialised with more than one process; False never does.
    Every rank must then call :meth:`step` at the same steps (it is a collective).

    Manual use: call :meth:`step` once per training step, after ``backward()`` and before
    ``optimizer.step()``. As a ``resgrad.fit`` callback it measures in
    ``on_before_optimizer_step`` (Lightning's convention: gradients final, unscaled); it
    attaches in ``on_train_start`` and detaches in ``on_train_end``, or in
    ``on_exception`` when ``fit`` raises, so no hook outlives the training call.

    ``split``: per residual unit, the skip and branch parts of the gradient at its input
    (``skip``/``branch`` rows, ``ratio`` = each part's share), ‖F(x)‖ and ‖F(x)‖/‖x‖
    (``forward``) and ‖x‖ (``stream``), from the passes already running (``_units``).
    ``act_norms``: ‖y‖ at each unit's output (``act_norm`` rows). Both need units (resgrad
    blocks or an adapter's); a model without any is refused at construction. Under
    ``torch.compile`` they are measured on resgrad blocks (``resgrad.adapt(model)`` for a
    foreign model), like the other unit rows.

    ``select``: a selector or a list (``_select``: globs, ``"re:..."``, module types,
    ``"first"``/``"last"``/``"middle"``/``"every:k"``/unit index) keeps only what it names.
    ``schedules``: ``{option: k or step -> bool}`` per quantity option (``"params"``,
    ``"activations"``, ``"weights"``, ``"updates"``, ``"split"``, ``"act_norms"``); the
    others follow ``every``/``schedule``. ``per``: ``"param"`` rows per parameter tensor,
    ``"unit"`` per unit (parameters outside units keep their own rows), ``"auto"`` (default)
    per unit above ``PER_UNIT_ABOVE`` parameter tensors when the model has units.

    Between measured steps nothing is read from the device and no tensor is copied to
    the host (tests/probes/test_no_sync.py counts it, eager and compiled).

    Cost (benchmarks/monitor_overhead.py, ResNet-20, batch 128, one CPU thread): parameter
    norms and block norms are within the noise of a plain step; every leaf module's
    activation norm adds one reduction per activation, about 1.03-1.08x.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        every: int = 1,
        schedule: Schedule | None = None,
        params: bool = True,
        activations: Activations = False,
        weights: bool = False,
        updates: bool = False,
        scaler: Any | None = None,
        sync_dist: bool | None = None,
        split: bool = False,
        act_norms: bool = False,
        select: Any = None,
        schedules: dict[str, int | Schedule] | None = None,
        per: Literal["auto", "param", "unit"] = "auto",
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"GradientMonitor needs an nn.Module, received {type(model).__name__}")
        self.check_options(every=every, schedule=schedule, params=params, activations=activations,
                           weights=weights, updates=updates, scaler=scaler, sync_dist=sync_dist,
                           split=split, act_norms=act_norms, select=select, schedules=schedules, per=per)
        if not any(p.requires_grad for p in model.parameters()):
            raise ValueError(
                f"{type(model).__name__} has no parameters that require grad (received "
                f"{sum(1 for _ in model.parameters())} frozen); unfreeze some or monitor another model"
            )
        self.model = model
        self.every = every
        self.schedule = schedule
        self.params = params
        self.activations: str | None = {False: None, True: "all"}.get(activations, activations)  # type: ignore[arg-type]
        self.weights = weights
        self.updates = updates
        self.scaler = scaler
        self.sync_dist = sync_dist
        self.split = split
        self.act_norms = act_norms
        self.select = select
        self.schedules = dict(schedules or {})

        self._params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self._blocks = _blocks(model)
        block_names = {id(b): i for i, b in enumerate(self._blocks)}
        self._block_prefix = sorted(
            ((n, block_names[id(m)]) for n, m in model.named_modules() if id(m) in block_names),
            key=lambda t: -len(t[0]),
        )
        # A model without resgrad blocks: its residual units as the adapter registry sees
        # them, watched by hooks on its own modules (the model is left as it is).
        # (Located even without activation rows: parameter rows are labelled by unit.)
        self._sites: list[UnitSite] = [] if self._blocks else locate_units(
            model, warn=self.activations in ("all", "blocks"))
        self._site_of = {k: i for i, st in reversed(list(enumerate(self._sites))) for k in st.modules | st.params}
        if self._sites:
            self._unit_names = [st.name for st in self._sites]
            self._param_block = [self._site_of.get(id(p)) for _, p in self._params]
        else:
            names = {i: n for n, i in self._block_prefix}
            self._unit_names = [names[i] for i in range(len(self._blocks))]
            self._param_block = [self._block_of(n) for n, _ in self._params]
        unit_mods = ([set(st.modules) for st in self._sites] if self._sites
                     else [{id(m) for m in b.modules()} for b in self._blocks])
        self._unit_sel: set[int] | None = None
        self._leaf_sel: set[int] | None = None
        if select is not None:
            sel = resolve(select, model, self._params, self._unit_names, unit_mods, self._param_block)
            self._params = [x for x, k in zip(self._params, sel.params, strict=True) if k]
            self._param_block = [x for x, k in zip(self._param_block, sel.params, strict=True) if k]
            self._unit_sel, self._leaf_sel = sel.units, sel.leaves
        self._split_pts = split_points(self, split or act_norms)
        self.per_unit = per == "unit" or (per == "auto" and bool(self._unit_names)
                                           and len(self._params) > PER_UNIT_ABOVE)
        # The quantities measured, in the order of their rows in ``records``.
        self._quantities: list[Quantity] = [
            *([ParamGrad()] if params else []),
            *([ActivationGrad()] if self.activations is not None or split else []),
            *([ForwardNorms()] if split or act_norms else []),
            *([WeightNorm()] if weights else []),
            *([UpdateNorm()] if updates else []),
            NonfiniteOrigin(),
        ]
        on = {"params": params, "activations": self.activations is not None, "weights": weights,
              "updates": updates, "split": split, "act_norms": act_norms}
        self._options_on = [o for o in QUANTITY_OPTIONS if on[o]]
        self._arm: dict[str, bool] = {}  # option -> is it measured at the upcoming step?
        self._fwd: dict[str, Any] = {}  # forward norms of this step (``_units``)
        self._fwd_n: dict[str, int] = {}
        self._fwd_meta: dict[str, tuple[str, str, int]] = {}
        self._gb: dict[int, Tensor] = {}

        self._handles: list[RemovableHandle] = []
        self._tensor_handles: list[RemovableHandle] = []
        self._attached = False
        self._self_attached = False  # attached by on_train_start (detached by on_train_end)
        self._step = 0
        self._armed = False  # is the upcoming step (self._step) measured?
        self._pass = 0
        self._calls: dict[str, int] = {}
        self._slots: dict[str, Slot] = {}
        self._pending: list[StepData] = []
        self._rows: list[dict[str, Any]] = []
        self._snapshot: tuple[StepData, list[Tensor]] | None = None
        self._seq = 0  # gradients seen this step, in backward order (for the non-finite origin)
        self._taps: dict[str, TapSlot] = {}  # compiled mode: "kind:name" -> probe
        self.nonfinite_origin: dict[str, Any] | None = None  # the first step's, once found
        self._warned_no_hooks = False
        if self.activations is not None and not self._has_targets():
            self._warned_no_hooks = True  # said once, here, rather than at the first step
            warnings.warn(self._no_units_message(), RuntimeWarning, stacklevel=2)

    @staticmethod
    def check_options(**options: Any) -> None:
        """Raise a one-line TypeError/ValueError for an unknown or bad option (no model needed).

        The framework callbacks call this at construction, so a typo fails before step 0.
        """
        known = [n for n in inspect.signature(GradientMonitor.__init__).parameters if n not in ("self", "model")]
        check_options(known, options)

    # ---- lifecycle ------------------------------------------------------------------

    def __enter__(self) -> GradientMonitor:
        self.attach()
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if exc[0] is None:
                self._finish_update()
        finally:
            self.detach()

    def attach(self) -> GradientMonitor:
        """Register the hooks (done by ``with``); prefer the context manager."""
        if self._attached:
            return self
        self._attached = True
        try:
            if self.activations is not None or self.split or self.act_norms:
                self._handles.append(self.model.register_forward_pre_hook(self._on_root_forward))
            if self.activations is not None:
                index = {id(b): i for i, b in enumerate(self._blocks)
                         if self._unit_sel is None or i in self._unit_sel}
                chained = self._chained_blocks(index)
                for name, mod in self.model.named_modules():
                    bi = index.get(id(mod))
                    label = name or "<model>"
                    if bi is not None and self.activations in ("all", "blocks"):
                        self._add_tap(label, "input", bi, source=chained.get(id(mod)))
                        self._add_tap(label, "activation", bi)
                        self._handles.append(mod.register_forward_pre_hook(
                            partial(self._on_block_input, label, bi)))
                        self._handles.append(mod.register_forward_hook(
                            partial(self._on_output, label, bi)))
                    elif (
                        self.activations in ("all", "leaves")
                        and not any(True for _ in mod.children())
                        and not isinstance(mod, nn.Identity)
                        and (self._leaf_sel is None or id(mod) in self._leaf_sel)
                    ):
                        bl = self._site_of.get(id(mod)) if self._sites else self._block_of(name)
                        self._add_tap(label, "activation", bl)
                        self._handles.append(mod.register_forward_hook(partial(self._on_output, label, bl)))
                if self.activations in ("all", "blocks"):
                    self._hook_sites()
            self._hook_split(self.split, self.act_norms)
            self._rearm(self._step)
        except BaseException:
            self.detach()
            raise
        return self

    def _add_tap(self, name: str, kind: str, block: int | None, source: str | None = None) -> None:
        key = f"{kind}:{name}"
        if key not in self._taps:
            dev = next((p.device for _, p in self._params), torch.device("cpu"))
            probe = torch.zeros(3, dtype=torch.float64, device=dev, requires_grad=True)
            self._taps[key] = TapSlot(name, kind, block, probe, len(self._taps), source)

    def _chained_blocks(self, index: dict[int, int]) -> dict[int, str]:
        """{id(block): output-tap key of the block before it} for blocks that directly
        follow another block in a plain ``nn.Sequential``: there the earlier block's output
        is the later one's input and nothing else's, so ∂L/∂(input) is the same tensor.

        Compiled mode taps it once (a tap makes inductor materialise a copy; two taps on
        one boundary cost two, benchmarks/README.md). Eager mode already hooks the tensor
        once (``_watch``). A Sequential subclass may route tensors otherwise: not chained.
        """
        out: dict[int, str] = {}
        names = {id(m): n or "<model>" for n, m in self.model.named_modules()}
        for parent in self.model.modules():
            if type(parent) is not nn.Sequential:
                continue
            kids = list(parent.children())
            for a, b in zip(kids[:-1], kids[1:], strict=True):
                if id(a) in index and id(b) in index and a is not b:
                    out[id(b)] = f"activation:{names[id(a)]}"
        return out

    def detach(self) -> None:
        """Remove every hook this monitor registered (module and tensor hooks)."""
        self._attached = False
        self._armed = False
        self._arm = {}
        for h in self._handles + self._tensor_handles:
            h.remove()
        self._handles.clear()
        self._tensor_handles.clear()
        self._slots = {}
        for t in self._taps.values():
            t.probe.grad = None

    @property
    def attached(self) -> bool:
        return self._attached

    # ---- callback hooks (Lightning names) -------------------------------------------

    def on_train_start(self, model: nn.Module) -> None:
        if not self._attached:
            self.attach()
            self._self_attached = True

    def on_before_optimizer_step(self, model: nn.Module, optimizer: Optimizer, step: int) -> None:
        self.step(step, optimizer=optimizer)

    def on_train_end(self, model: nn.Module) -> None:
        self._finish_update()
        if self._self_attached:
            self.detach()
            self._self_attached = False

    def on_exception(self, model: nn.Module, exception: BaseException) -> None:
        if self._self_attached:  # fit failed: remove the hooks this monitor put on
            self.detach()
            self._self_attached = False

    def state_dict(self) -> dict[str, Any]:
        return {"step": self._step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._step = int(state.get("step", 0))
        self._rearm(self._step)

    # ---- measuring --------------------------------------------------------------------

    def _block_of(self, name: str) -> int | None:
        for prefix, i in self._block_prefix:
            if name == prefix or name.startswith(prefix + ".") or prefix == "":
                return i
        return None

    def step(self, step: int | None = None, *, optimizer: Optimizer | None = None) -> bool:
        """Close a training step: measure it if scheduled. Returns True if it was measured.

        Call after ``loss.backward()`` and before ``optimizer.step()``; ``step`` defaults
        to an internal counter (0, 1, 2, ...).
        """
        s = self._step if step is None else int(step)
        self._finish_update()
        arm = self._arm if s == self._step and self._attached else self._due_options(s)
        due = any(arm.values())
        if due:
            self._measure(s, optimizer, arm)
        if due and all(_norms.host_readable(p) for p in self._probe_devices()):
            # On the CPU reading costs no device sync: turn the step into rows now, so a
            # non-finite gradient is reported at the step that produced it. Only at measured
            # steps: between them nothing is read (a step whose update norm was awaited is
            # turned into rows at the next measured step, or when ``records`` is read).
            self._flush()
        self._slots = {}
        for d in (self._fwd, self._fwd_n, self._gb):  # cleared, not replaced: compiled code stores into them
            d.clear()
        self._seq = 0
        self._tensor_handles.clear()  # their tensors have been through backward
        for t in self._taps.values():  # compiled mode: start the next step's sums at zero
            t.probe.grad = None
        self._step = s + 1
        self._rearm(self._step)
        return due

    def _probe_devices(self) -> list[Tensor]:
        return [p for _, p in self._params[:1]]

    def _loss_scale(self, optimizer: Optimizer | None) -> tuple[Tensor | None, bool]:
        """(inverse loss scale, parameter grads already unscaled?) for AMP."""
        sc = self.scaler
        if sc is None or not sc.is_enabled():
            return None, False
        get = getattr(sc, "_get_scale_async", None)
        scale = get() if get is not None else torch.tensor(sc.get_scale())
        if scale is None:  # the scaler has not scaled anything yet
            return None, False
        unscaled = False
        states = getattr(sc, "_per_optimizer_states", None)
        if optimizer is not None and states is not None and id(optimizer) in states:
            stage = states[id(optimizer)].get("stage")
            unscaled = getattr(stage, "name", "") == "UNSCALED"
        return scale.double().reciprocal(), unscaled

    def _measure(self, s: int, optimizer: Optimizer | None, arm: dict[str, bool]) -> None:
        inv, unscaled = self._loss_scale(optimizer)
        data = StepData(s, None if unscaled else inv, inv, list(self._slots.values()))
        data.collected = {o for o, on in arm.items() if on}
        for q in self._quantities:
            if not q.options or data.collected.intersection(q.options):
                q.collect(self, data)
        world = dist_world(self.sync_dist)
        if world > 1 or data.shards:
            dev = next((p.device for _, p in self._params), torch.device("cpu"))
            if torch.distributed.is_initialized() and torch.distributed.get_backend() == "nccl":
                dev = torch.device("cuda", torch.cuda.current_device())
            reduce_step(data, act_matrix(data, dev), world)
        data.shards = []  # reduced: the DTensor gradients need not be kept
        self._pending.append(data)

    def _finish_update(self) -> None:
        UpdateNorm.finish(self)

    # ---- hooks ---------------------------------------------------------------------

    def _on_root_forward(self, module: nn.Module, args: Any) -> None:
        if torch.compiler.is_compiling():  # compiled mode keeps no per-pass Python state
            return
        self._pass += 1
        self._calls = {}

    def _slot(self, name: str, kind: str, block: int | None, numel: int) -> Slot:
        key = f"{kind}:{name}"
        k = self._calls.get(key, -1) + 1
        self._calls[key] = k
        if k:  # a module called twice in one forward (torchvision's shared self.relu)
            name, key = f"{name}#{k}", f"{key}#{k}"
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = Slot(name, kind, block)
        slot.numel += numel
        return slot

    def _watch(self, t: Tensor, slot: Slot) -> None:
        # One norm per tensor: a tensor returned by several modules (a block's output is
        # its post-activation's output) is hooked once and feeds every slot.
        mark = getattr(t, "_resgrad_watch", None)
        if mark is not None and mark[0] == id(self) and mark[1] == self._pass and mark[2] == t._version:
            mark[3].append(slot)
            return
        targets = [slot]
        with contextlib.suppress(AttributeError, RuntimeError):  # tensor subclasses may refuse
            t._resgrad_watch = (id(self), self._pass, t._version, targets)  # type: ignore[attr-defined]
        self._tensor_handles.append(t.register_hook(partial(self._on_grad, targets)))

    def _on_grad(self, targets: list[Slot], grad: Tensor) -> None:
        if not self._attached:
            return
        if self._calls:
            # A backward has begun, so the next forward is a new pass even when the root's
            # forward is never called (Lightning calls training_step, not forward).
            self._calls = {}
            self._pass += 1
        g = grad.detach()
        n = _norms.norm(g)
        c = _norms.nonfinite(g, n)
        self._seq += 1
        for s in targets:
            s.norms.append(n)
            s.counts.append(c)
            if s.order is None:
                s.order = self._seq

    def _capture(self, t: Tensor | None, name: str, kind: str, block: int | None) -> None:
        if not self._arm.get(_OPTION_OF[kind]) or t is None or not t.requires_grad or not torch.is_grad_enabled():
            return
        self._watch(t, self._slot(name, kind, block, t.numel()))

    def _tap(self, obj: Any, name: str, kind: str) -> Any:
        """Compiled mode: route the first tensor of ``obj`` through a :class:`_Tap`."""
        t = first_tensor(obj)
        if not self._arm.get("activations") or t is None or not t.requires_grad or not torch.is_grad_enabled():
            return None
        return replace_first(obj, Tap.apply(t, self._taps[f"{kind}:{name}"].probe))

    def _on_block_input(self, name: str, block: int, module: nn.Module, args: Any) -> Any:
        if torch.compiler.is_compiling():
            if self._taps[f"input:{name}"].source is not None:
                return None  # the previous block's output tap measures this very tensor
            return self._tap(args, name, "input")
        self._capture(first_tensor(args), name, "input", block)
        return None

    def _on_output(self, name: str, block: int | None, module: nn.Module, args: Any, out: Any) -> Any:
        if torch.compiler.is_compiling():
            return self._tap(out, name, "activation")
        self._capture(first_tensor(out), name, "activation", block)
        return None

    def __repr__(self) -> str:
        return (f"GradientMonitor(params={self.params}, activations={self.activations!r}, "
                f"every={self.every}, attached={self._attached}, step={self._step})")
