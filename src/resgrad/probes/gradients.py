"""Per-layer gradient norms of any ``nn.Module``: :class:`GradientMonitor`, and the exact
log-space block profile used by the flow experiment (:func:`block_gradient_profile`).

``GradientMonitor`` records, at the steps its schedule selects:

- ``param``: ‖∂L/∂w‖ per parameter tensor, computed fused (one ``torch._foreach_norm``
  over every gradient that exists) and kept on the device until :attr:`records` is read;
  a parameter whose ``.grad`` is None gets a row with ``norm=None`` (unused parameters);
- ``activation``: ‖∂L/∂y‖ for the output ``y`` of every leaf module and of every resgrad
  block, ``input``: ‖∂L/∂x_l‖ for the input of every block, so "the gradient at block l"
  is one row (He et al. 2016, arXiv 1603.05027, Eq. 5 is about exactly this quantity);
- ``weight``: ‖w‖ and ``update``: ‖Δw‖ with ``ratio`` = ‖Δw‖/‖w‖, on request.

Every row counts its non-finite entries (``nonfinite``) instead of dropping them.

Activation gradients come from *tensor* hooks: a forward hook registers
``output.register_hook`` on the tensor the module returned. That costs one norm per
tensor and works with in-place ops (torchvision's ``ReLU(inplace=True)``), where
``register_full_backward_hook`` wraps outputs in an extra autograd node and refuses
in-place modification. A hook registered before an in-place op sees the gradient of the
value before it (PyTorch autograd semantics), so each module gets the gradient of what
it returned. Modules returning their input unchanged (``nn.Identity``) are skipped.

Under ``torch.compile`` a tensor hook with Python side effects breaks the graph, so
while dynamo traces, the forward hooks insert :class:`_Tap` instead: an identity
``autograd.Function`` whose backward writes ``[Σg², #non-finite, numel]`` of the incoming
gradient into the gradient of a small leaf "probe" tensor. That is purely functional
(no host read, no mutation), so the hooked model compiles with ``fullgraph=True`` and the
numbers equal eager mode's; they are read after backward, in :meth:`GradientMonitor.step`.
Dynamo does not guard on module hooks by default (``skip_nnmodule_hook_guards``), so
attach the monitor before the compiled model's first call; the monitor warns when a
step had gradients but no hook ran. In compiled mode a module called several times per
forward gets one row (the norm over its calls), and backward order for the non-finite
origin is taken as reverse forward order (no hook runs at backward time to tell).

Distributed (``torch.distributed`` initialised, world size > 1): parameter gradients
are identical on every rank after DDP's all-reduce and are measured locally; activation
gradients (each rank sees its own part of the batch) and FSDP2 parameter shards
(``fully_shard``: ``.grad`` is a sharded DTensor) are reduced as sums of squares in ONE
all-reduce per measured step. Activation sums of squares are divided by world², DDP's
gradient averaging, so the values equal a single-process run on the global batch when
each rank's loss is a mean over its part.

Non-finite origin: the first step with a NaN/Inf gradient adds a ``nonfinite_origin``
row naming the first module, in backward order, whose output gradient was non-finite,
and warns once in one line (``GradientMonitor.nonfinite_origin`` keeps it).
"""

from __future__ import annotations

import contextlib
import inspect
import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.utils.hooks import RemovableHandle

from ..callbacks import Callback
from ..nets.blocks import blocks as _blocks

__all__ = ["GradientMonitor", "block_gradient_profile", "robust_norm", "COLUMNS", "ORIGIN_KIND"]

# Columns of every row in GradientMonitor.records (tidy: one measurement per row).
COLUMNS = ("step", "name", "kind", "block", "norm", "rms", "numel", "nonfinite", "ratio")
# Row kind naming where a step's first non-finite gradient appeared (see _origin).
ORIGIN_KIND = "nonfinite_origin"
Schedule = Callable[[int], bool]
Activations = bool | Literal["all", "leaves", "blocks"]

# float32 squares under/overflow outside ~1e-19..1e19 per element; a norm outside this
# range is recomputed in float64 (CPU only: there reading a scalar costs no device sync).
_SAFE_LO, _SAFE_HI = 1e-15, 1e15


def robust_norm(g: Tensor) -> Tensor:
    """‖g‖₂ without under/overflow: float64, scaled by max|g| (0-d float64 tensor)."""
    g = g.detach().to(torch.float64)
    m = g.abs().amax() if g.numel() else g.new_zeros(())
    if not bool(torch.isfinite(m)) or float(m) == 0.0:
        return torch.linalg.vector_norm(g) if g.numel() else m
    return m * torch.linalg.vector_norm(g / m)


def _host_readable(t: Tensor) -> bool:
    """Can a scalar of ``t`` be read without stalling a device queue? (CPU tensors.)"""
    return t.is_cpu


def _norm(g: Tensor) -> Tensor:
    """Norm of one gradient tensor, on its device (one reduction on the fast path)."""
    if _host_readable(g):
        n = torch.linalg.vector_norm(g)
        v = n.item()
        # Outside the safe range the float32 squares may have under/overflowed; a
        # non-finite norm from finite entries is an overflow too.
        if not _SAFE_LO < v < _SAFE_HI and (math.isfinite(v) or bool(torch.isfinite(g).all())):
            n = robust_norm(g)
        return n
    # Accelerators: accumulate in float64 instead of branching on the value (no sync).
    return torch.linalg.vector_norm(g, dtype=torch.float64)


def _nonfinite(g: Tensor, n: Tensor) -> Tensor | int:
    """Number of NaN/Inf entries of ``g`` (``n`` = its norm: finite norm => zero)."""
    if _host_readable(g):
        return 0 if math.isfinite(n.item()) else int((~torch.isfinite(g)).sum())
    # finite * 0 = 0, inf * 0 = nan, nan * 0 = nan: count the non-zeros, on the device.
    return torch.count_nonzero(g * 0)


def _first_tensor(out: Any) -> Tensor | None:
    if isinstance(out, Tensor):
        return out
    if isinstance(out, (tuple, list)):
        for o in out:
            if isinstance(o, Tensor):
                return o
    return None


def _replace_first(obj: Any, new: Tensor) -> Any:
    """``obj`` with its first tensor (as found by :func:`_first_tensor`) replaced by ``new``."""
    if isinstance(obj, Tensor):
        return new
    items = list(obj)
    for i, o in enumerate(items):
        if isinstance(o, Tensor):
            items[i] = new
            break
    return tuple(items) if isinstance(obj, tuple) else items


class _Tap(torch.autograd.Function):
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


def _dist_world(sync: bool | None) -> int:
    """World size to reduce over (1: no reduction)."""
    if sync is False or not torch.distributed.is_available() or not torch.distributed.is_initialized():
        return 1
    return torch.distributed.get_world_size()


def _is_dtensor(t: Tensor) -> bool:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # torch built without distributed
        return False
    return isinstance(t, DTensor)


def _shard_group(t: Any) -> Any:
    """The process group over which a DTensor gradient is sharded (FSDP2: its mesh)."""
    from torch.distributed.tensor import Shard

    mesh = t.device_mesh
    dims = [i for i, pl in enumerate(t.placements) if isinstance(pl, Shard)]
    if len(dims) > 1:
        raise NotImplementedError(
            f"gradient sharded over {len(dims)} mesh dimensions; GradientMonitor reduces FSDP2 shards over one"
        )
    if not dims:
        return None  # replicated: the local tensor is the whole gradient
    return mesh.get_group(dims[0]) if mesh.ndim > 1 else mesh.get_group()


@dataclass
class _Slot:
    """One activation row of one step: accumulates over passes (gradient accumulation)."""

    name: str
    kind: str
    block: int | None
    numel: int = 0
    norms: list[Tensor] = field(default_factory=list)
    counts: list[Tensor | int] = field(default_factory=list)
    order: int | None = None  # position in backward order of its first gradient (1 = first)


@dataclass
class _TapSlot:
    """A module hooked for compiled mode: its probe and where it sits in forward order."""

    name: str
    kind: str
    block: int | None
    probe: Tensor
    forward_index: int
    # Compiled mode, block inputs only: the key of the previous block's output tap when
    # that output is this block's input (adjacent blocks in one nn.Sequential); no second
    # tap on the same tensor then, its measurement is reused.
    source: str | None = None


@dataclass
class _StepData:
    """What one measured step left on the device, turned into rows on read."""

    step: int
    param_idx: list[int]  # indices into monitor._params whose grad existed
    param_norms: Tensor | list[Tensor] | None
    param_counts: Tensor | list[Tensor | int] | None
    param_scale: Tensor | None  # inverse loss scale applied to parameter norms
    act_scale: Tensor | None  # inverse loss scale for activation norms
    slots: list[_Slot]
    weights: Tensor | list[Tensor] | None = None
    updates: tuple[Tensor | list[Tensor], Tensor | list[Tensor]] | None = None  # (‖Δw‖, ‖w‖) of this step's update
    taps: list[_TapSlot] = field(default_factory=list)  # compiled-mode slots with a gradient
    tap_vals: Tensor | None = None  # (len(taps), 3): Σg², #non-finite, numel
    act: Tensor | None = None  # (len(slots) + len(taps), 4) reduced over ranks: Σg², #bad, reached, numel
    shard_idx: list[int] = field(default_factory=list)  # params whose grad is an FSDP2 shard
    shard: Tensor | None = None  # (len(shard_idx), 2) reduced: Σg², #non-finite


class GradientMonitor(Callback):
    """Record per-layer gradient norms while a model trains; use as a ``with`` block.

    ``every=k`` measures steps 0, k, 2k, ...; ``schedule(step) -> bool`` overrides it.
    ``activations``: False, True/``"all"`` (leaf modules and blocks), ``"leaves"`` or
    ``"blocks"`` (resgrad blocks only: cheapest way to get the per-block profile).
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
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"GradientMonitor needs an nn.Module, received {type(model).__name__}")
        self.check_options(every=every, schedule=schedule, params=params, activations=activations,
                           weights=weights, updates=updates, scaler=scaler, sync_dist=sync_dist)
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

        self._params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self._blocks = _blocks(model)
        block_names = {id(b): i for i, b in enumerate(self._blocks)}
        self._block_prefix = sorted(
            ((n, block_names[id(m)]) for n, m in model.named_modules() if id(m) in block_names),
            key=lambda t: -len(t[0]),
        )
        self._param_block = [self._block_of(n) for n, _ in self._params]

        self._handles: list[RemovableHandle] = []
        self._tensor_handles: list[RemovableHandle] = []
        self._attached = False
        self._self_attached = False  # attached by on_train_start (detached by on_train_end)
        self._step = 0
        self._armed = False  # is the upcoming step (self._step) measured?
        self._pass = 0
        self._calls: dict[str, int] = {}
        self._slots: dict[str, _Slot] = {}
        self._pending: list[_StepData] = []
        self._rows: list[dict[str, Any]] = []
        self._snapshot: tuple[_StepData, list[Tensor]] | None = None
        self._seq = 0  # gradients seen this step, in backward order (for the non-finite origin)
        self._taps: dict[str, _TapSlot] = {}  # compiled mode: "kind:name" -> probe
        self.nonfinite_origin: dict[str, Any] | None = None  # the first step's, once found
        self._warned_no_hooks = False

    @staticmethod
    def check_options(**options: Any) -> None:
        """Raise a one-line TypeError/ValueError for an unknown or bad option (no model needed).

        The framework callbacks call this at construction, so a typo fails before step 0.
        """
        known = [n for n in inspect.signature(GradientMonitor.__init__).parameters if n not in ("self", "model")]
        for k in options:
            if k not in known:
                raise TypeError(f"unknown GradientMonitor option {k!r}; valid options: {', '.join(known)}")
        every = options.get("every", 1)
        if not isinstance(every, int) or isinstance(every, bool) or every < 1:
            raise ValueError(f"every must be an integer >= 1, received {every!r}")
        schedule = options.get("schedule")
        if schedule is not None and not callable(schedule):
            raise TypeError(f"schedule must be a callable step -> bool, received {type(schedule).__name__}")
        activations = options.get("activations", False)
        if activations not in (False, True, "all", "leaves", "blocks") or activations.__class__ not in (bool, str):
            raise ValueError(
                f"activations must be False, True, 'all', 'leaves' or 'blocks', received {activations!r}"
            )
        scaler = options.get("scaler")
        if scaler is not None and not hasattr(scaler, "is_enabled"):
            raise TypeError(f"scaler must be a torch.amp.GradScaler, received {type(scaler).__name__}")
        for flag in ("params", "weights", "updates"):
            v = options.get(flag, False)
            if not isinstance(v, bool):
                raise TypeError(f"{flag} must be True or False, received {v!r}")
        sync = options.get("sync_dist")
        if sync is not None and not isinstance(sync, bool):
            raise TypeError(f"sync_dist must be None (auto), True or False, received {sync!r}")

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
            if self.activations is not None:
                self._handles.append(self.model.register_forward_pre_hook(self._on_root_forward))
                index = {id(b): i for i, b in enumerate(self._blocks)}
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
                    ):
                        self._add_tap(label, "activation", self._block_of(name))
                        self._handles.append(mod.register_forward_hook(
                            partial(self._on_output, label, self._block_of(name))))
            self._armed = self._due(self._step)
        except BaseException:
            self.detach()
            raise
        return self

    def _add_tap(self, name: str, kind: str, block: int | None, source: str | None = None) -> None:
        key = f"{kind}:{name}"
        if key not in self._taps:
            dev = next((p.device for _, p in self._params), torch.device("cpu"))
            probe = torch.zeros(3, dtype=torch.float64, device=dev, requires_grad=True)
            self._taps[key] = _TapSlot(name, kind, block, probe, len(self._taps), source)

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
        self._armed = self._attached and self._due(self._step)

    # ---- measuring --------------------------------------------------------------------

    def _due(self, step: int) -> bool:
        if self.schedule is not None:
            return bool(self.schedule(step))
        return step % self.every == 0

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
        due = self._armed if s == self._step and self._attached else self._due(s)
        if due:
            self._measure(s, optimizer)
        if all(_host_readable(p) for p in self._probe_devices()):
            # On the CPU reading costs no device sync: turn the step into rows now, so a
            # non-finite gradient is reported at the step that produced it.
            self._flush()
        self._slots = {}
        self._seq = 0
        self._tensor_handles.clear()  # their tensors have been through backward
        for t in self._taps.values():  # compiled mode: start the next step's sums at zero
            t.probe.grad = None
        self._step = s + 1
        self._armed = self._attached and self._due(self._step)
        return due

    def _probe_devices(self) -> list[Tensor]:
        return [p for _, p in self._params[:1]]

    def _flush(self) -> None:
        """Materialise the pending steps whose update norms are not still awaited."""
        waiting = self._snapshot[0] if self._snapshot is not None else None
        keep = []
        for d in self._pending:
            if d is waiting:
                keep.append(d)
            else:
                self._rows.extend(self._materialise(d))
        self._pending = keep

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

    def _measure(self, s: int, optimizer: Optimizer | None) -> None:
        inv, unscaled = self._loss_scale(optimizer)
        data = _StepData(s, [], None, None, None if unscaled else inv, inv, list(self._slots.values()))
        if self.params:
            idx, grads, shards = [], [], []
            for i, (_, p) in enumerate(self._params):
                g = p.grad
                if g is None:
                    continue
                if _is_dtensor(g):  # FSDP2: this rank holds a shard; reduced below
                    data.shard_idx.append(i)
                    shards.append(g)
                    continue
                if g.is_sparse:
                    g = g.coalesce()._values()
                idx.append(i)
                grads.append(g.detach())
            data.param_idx = idx
            if grads:
                data.param_norms, data.param_counts = _fused_norms(grads)
        else:
            shards = []
        taps, vals = [], []
        for t in self._taps.values():
            g = t.probe.grad
            if g is None and t.source is not None:  # a chained block input: its source's value
                g = self._taps[t.source].probe.grad
            if g is not None:
                taps.append(t)
                vals.append(g.detach())
        if taps:
            data.taps = taps
            data.tap_vals = torch.stack(vals)
        elif self.activations is not None and not data.slots and data.param_idx and not self._warned_no_hooks:
            # Gradients exist but no hook ran: typically torch.compile reusing code traced
            # before the hooks existed (dynamo skips guards on module hooks by default).
            self._warned_no_hooks = True
            warnings.warn(
                "resgrad: no activation hook ran this step although gradients exist; if the model is "
                "torch.compile'd, attach the monitor before its first compiled call, or set "
                "torch._dynamo.config.skip_nnmodule_hook_guards = False so hooks are guarded",
                RuntimeWarning, stacklevel=3,
            )
        world = _dist_world(self.sync_dist)
        if world > 1 or shards:
            self._reduce(data, shards, world)
        ps = [p.detach() for _, p in self._params]
        if (self.weights or self.updates) and ps:
            data.weights = _fused_norms(ps, counts=False)[0]
        if self.updates and ps:
            # Keep a copy; ‖Δw‖ is read at the next step (after optimizer.step()).
            snap = torch._foreach_mul(ps, 1.0)
            self._snapshot = (data, snap)
        self._pending.append(data)

    def _reduce(self, data: _StepData, shards: list[Any], world: int) -> None:
        """One all-reduce for the step: activation sums of squares and FSDP2 shard norms."""
        dev = next((p.device for _, p in self._params), torch.device("cpu"))
        if torch.distributed.is_initialized() and torch.distributed.get_backend() == "nccl":
            dev = torch.device("cuda", torch.cuda.current_device())
        act = self._act_matrix(data, dev)  # (n, 4)
        parts = [act.flatten()]
        group = None
        if shards:
            groups = {id(g): g for g in (_shard_group(t) for t in shards)}
            if len(groups) != 1:
                raise NotImplementedError("parameter gradients sharded over several process groups")
            group = next(iter(groups.values()))
            local = [t.to_local().detach() for t in shards]
            sq = torch.stack(torch._foreach_norm(local, 2, dtype=torch.float64)).square()
            bad = torch.stack([torch.count_nonzero(~torch.isfinite(t)) for t in local]).to(torch.float64)
            parts.append(torch.stack([sq, bad], 1).to(dev).flatten())
        flat = torch.cat(parts)
        if world > 1:
            default = torch.distributed.group.WORLD
            if group is None or group == default or (
                torch.distributed.get_world_size(group) == world
            ):
                torch.distributed.all_reduce(flat)  # the one collective of this step
            else:  # HSDP-like layouts: activations over the world, shards over their group
                n = act.numel()
                a, b = flat[:n].clone(), flat[n:].clone()
                torch.distributed.all_reduce(a)
                torch.distributed.all_reduce(b, group=group)
                flat = torch.cat([a, b])
        n = act.numel()
        red = flat[:n].view(-1, 4)
        # DDP/FSDP average gradients over ranks, so the gradient of the global-batch loss
        # w.r.t. an activation is each rank's local gradient / world: Σg² scales by 1/world².
        red[:, 0] /= world * world
        data.act = red if world > 1 else None
        if shards:
            data.shard = flat[n:].view(-1, 2)

    def _act_matrix(self, data: _StepData, dev: torch.device) -> Tensor:
        """(slots + taps, 4) float64: Σg², #non-finite, reached (0/1), numel, on ``dev``."""
        rows = []
        for sl in data.slots:
            if sl.norms:
                sq = torch.stack([n.detach().double().to(dev) for n in sl.norms]).square().sum()
                bad = torch.stack([torch.as_tensor(c, dtype=torch.float64).to(dev) for c in sl.counts]).sum()
                rows.append(torch.stack([sq, bad, torch.ones((), dtype=torch.float64, device=dev),
                                         torch.full((), float(sl.numel), dtype=torch.float64, device=dev)]))
            else:
                rows.append(torch.tensor([0.0, 0.0, 0.0, float(sl.numel)], dtype=torch.float64, device=dev))
        if data.tap_vals is not None:
            tv = data.tap_vals.to(dev)
            rows.extend(torch.stack([tv[:, 0], tv[:, 1], torch.ones_like(tv[:, 0]), tv[:, 2]], 1).unbind(0))
        if not rows:
            return torch.zeros((0, 4), dtype=torch.float64, device=dev)
        return torch.stack(rows)

    def _finish_update(self) -> None:
        if self._snapshot is None:
            return
        data, snap = self._snapshot
        self._snapshot = None
        ps = [p.detach() for _, p in self._params]
        delta = torch._foreach_sub(ps, snap)
        data.updates = (_fused_norms(delta, counts=False)[0], _fused_norms(snap, counts=False)[0])

    # ---- hooks ---------------------------------------------------------------------

    def _on_root_forward(self, module: nn.Module, args: Any) -> None:
        if torch.compiler.is_compiling():  # compiled mode keeps no per-pass Python state
            return
        self._pass += 1
        self._calls = {}

    def _slot(self, name: str, kind: str, block: int | None, numel: int) -> _Slot:
        key = f"{kind}:{name}"
        k = self._calls.get(key, -1) + 1
        self._calls[key] = k
        if k:  # a module called twice in one forward (torchvision's shared self.relu)
            name, key = f"{name}#{k}", f"{key}#{k}"
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = _Slot(name, kind, block)
        slot.numel += numel
        return slot

    def _watch(self, t: Tensor, slot: _Slot) -> None:
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

    def _on_grad(self, targets: list[_Slot], grad: Tensor) -> None:
        if not self._attached:
            return
        if self._calls:
            # A backward has begun, so the next forward is a new pass even when the root's
            # forward is never called (Lightning calls training_step, not forward).
            self._calls = {}
            self._pass += 1
        g = grad.detach()
        n = _norm(g)
        c = _nonfinite(g, n)
        self._seq += 1
        for s in targets:
            s.norms.append(n)
            s.counts.append(c)
            if s.order is None:
                s.order = self._seq

    def _capture(self, t: Tensor | None, name: str, kind: str, block: int | None) -> None:
        if not self._armed or t is None or not t.requires_grad or not torch.is_grad_enabled():
            return
        self._watch(t, self._slot(name, kind, block, t.numel()))

    def _tap(self, obj: Any, name: str, kind: str) -> Any:
        """Compiled mode: route the first tensor of ``obj`` through a :class:`_Tap`."""
        t = _first_tensor(obj)
        if not self._armed or t is None or not t.requires_grad or not torch.is_grad_enabled():
            return None
        return _replace_first(obj, _Tap.apply(t, self._taps[f"{kind}:{name}"].probe))

    def _on_block_input(self, name: str, block: int, module: nn.Module, args: Any) -> Any:
        if torch.compiler.is_compiling():
            if self._taps[f"input:{name}"].source is not None:
                return None  # the previous block's output tap measures this very tensor
            return self._tap(args, name, "input")
        self._capture(_first_tensor(args), name, "input", block)
        return None

    def _on_output(self, name: str, block: int | None, module: nn.Module, args: Any, out: Any) -> Any:
        if torch.compiler.is_compiling():
            return self._tap(out, name, "activation")
        self._capture(_first_tensor(out), name, "activation", block)
        return None

    # ---- reading ---------------------------------------------------------------------

    @property
    def records(self) -> list[dict[str, Any]]:
        """All measurements as tidy rows (``COLUMNS``); reading syncs with the device."""
        for data in self._pending:
            self._rows.extend(self._materialise(data))
        self._pending.clear()
        return self._rows

    def _materialise(self, d: _StepData) -> list[dict[str, Any]]:
        def row(name: str, kind: str, block: int | None, norm: float | None, numel: int,
                nonfinite: int | None, ratio: float | None = None) -> dict[str, Any]:
            rms = None if norm is None or numel == 0 else norm / math.sqrt(numel)
            return {"step": d.step, "name": name, "kind": kind, "block": block, "norm": norm,
                    "rms": rms, "numel": numel, "nonfinite": nonfinite, "ratio": ratio}

        out: list[dict[str, Any]] = []
        param_rows: list[dict[str, Any]] = []
        if self.params:
            norms = _tolist(d.param_norms, d.param_scale) if d.param_norms is not None else []
            counts = _tolist(d.param_counts) if d.param_counts is not None else []
            got = dict(zip(d.param_idx, zip(norms, counts, strict=True), strict=True))
            if d.shard is not None:  # FSDP2: the global norm from the reduced shard squares
                sh = d.shard.double().cpu()
                if d.param_scale is not None:
                    sh[:, 0] *= d.param_scale.double().cpu() ** 2
                for i, (sq, bad) in zip(d.shard_idx, sh.tolist(), strict=True):
                    got[i] = (math.sqrt(sq) if math.isfinite(sq) else math.nan, bad)
            for i, (name, p) in enumerate(self._params):
                n, c = got.get(i, (None, None))
                param_rows.append(row(name, "param", self._param_block[i], n, p.numel(),
                                      None if c is None else int(c)))
        out.extend(param_rows)
        # Activation rows: eager slots then compiled-mode taps; (Σg², #bad, reached, numel).
        metas = [(s.name, s.kind, s.block, s.order) for s in d.slots]
        # Taps have no backward clock; backward order is taken as reverse forward order.
        metas += [(t.name, t.kind, t.block, 10**9 - t.forward_index) for t in d.taps]
        mat = d.act.double().cpu() if d.act is not None else (
            self._act_matrix(d, torch.device("cpu")) if metas else None)
        act_rows: list[tuple[dict[str, Any], int | None]] = []
        if mat is not None:
            if d.act_scale is not None:
                mat = mat.clone()
                mat[:, 0] *= d.act_scale.double().cpu() ** 2
            for (name, kind, block, order), (sq, bad, reached, numel) in zip(metas, mat.tolist(), strict=True):
                if not reached:  # the module ran but no gradient reached its output
                    act_rows.append((row(name, kind, block, None, int(numel), None), None))
                    continue
                norm = math.sqrt(sq) if not math.isnan(sq) else math.nan
                act_rows.append((row(name, kind, block, norm, int(numel), int(bad)), order))
        out.extend(r for r, _ in act_rows)
        if d.weights is not None and (self.weights or self.updates):
            wn = _tolist(d.weights)
            if self.weights:
                for (name, p), b, w in zip(self._params, self._param_block, wn, strict=True):
                    out.append(row(name, "weight", b, w, p.numel(), None))
            if d.updates is not None:
                dn, w0 = _tolist(d.updates[0]), _tolist(d.updates[1])
                for (name, p), b, u, w in zip(self._params, self._param_block, dn, w0, strict=True):
                    out.append(row(name, "update", b, u, p.numel(), None, u / w if w else None))
        if self.nonfinite_origin is None:
            origin = self._origin(d.step, act_rows, param_rows)
            if origin is not None:
                out.append(row(origin["name"], ORIGIN_KIND, origin["block"], None, origin["numel"],
                               origin["nonfinite"]))
        return out

    def _origin(self, step: int, acts: list[tuple[dict[str, Any], int | None]],
                params: list[dict[str, Any]]) -> dict[str, Any] | None:
        """Where this step's first non-finite gradient appeared, if any (warns once).

        The first module in backward order whose output gradient is non-finite is the one
        whose output the bad gradient first reached; everything after it only inherits it.
        ``produced_by`` names the module whose gradient arrived just before it, still finite:
        in a chain, the module whose backward turned a finite gradient into NaN/Inf.
        """
        ranked = sorted(((o, r) for r, o in acts if o is not None), key=lambda t: t[0])
        where: dict[str, Any] | None = None
        for k, (_, r) in enumerate(ranked):
            if r["nonfinite"]:
                prev = ranked[k - 1][1]["name"] if k else None
                where = {"step": step, "name": r["name"], "kind": r["kind"], "block": r["block"],
                         "numel": r["numel"], "nonfinite": r["nonfinite"], "produced_by": prev}
                break
        if where is None:
            # No activation monitored (or all finite): the parameter nearest the output,
            # i.e. the last registered, is the first its backward reaches (an approximation).
            bad = [r for r in params if r["nonfinite"]]
            if not bad:
                return None
            r = bad[-1]
            where = {"step": step, "name": r["name"], "kind": "param", "block": r["block"],
                     "numel": r["numel"], "nonfinite": r["nonfinite"], "produced_by": None}
        self.nonfinite_origin = where
        if where["kind"] == "param":
            came = ""
        elif where["produced_by"]:
            came = f", produced by the backward of {where['produced_by']!r}"
        else:
            came = ", already in the gradient arriving from the loss"
        what = "parameter" if where["kind"] == "param" else (
            "input of block" if where["kind"] == "input" else "output of")
        warnings.warn(
            f"resgrad: step {step}: first non-finite gradient at the {what} {where['name']!r} "
            f"({where['nonfinite']} NaN/Inf of {where['numel']}){came}",
            RuntimeWarning, stacklevel=3,
        )
        return where

    def block_profile(self, step: int | None = None, at: Literal["input", "output"] = "input") -> list[float | None]:
        """‖∂L/∂x_l‖ per block l at ``step`` (default: the last measured step).

        ``at="input"``: the gradient w.r.t. each block's input; ``"output"``: its output.
        """
        rows = self.records
        steps = [r["step"] for r in rows if r["kind"] == "input" or r["block"] is not None]
        if not steps:
            raise ValueError(
                "no block measurements: create the monitor with activations='blocks' (or True) on a "
                "model with resgrad blocks, and call step() after a backward pass"
            )
        step = max(steps) if step is None else step
        kind = "input" if at == "input" else "activation"
        out: list[float | None] = [None] * len(self._blocks)
        names = {i: n for n, i in self._block_prefix}
        for r in rows:
            if r["step"] == step and r["kind"] == kind and r["block"] is not None and r["name"] == names.get(r["block"]):
                out[r["block"]] = r["norm"]
        return out

    def to_jsonl(self, path: str | os.PathLike) -> str:
        """Write the records, one JSON object per line (atomic: temp file + rename)."""
        import json

        from ..io import atomic_write

        rows = self.records

        def write(f: Any) -> None:
            for r in rows:
                clean = {k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in r.items()}
                f.write(json.dumps(clean) + "\n")

        return str(atomic_write(path, write))

    def to_pandas(self) -> Any:
        """The records as a pandas DataFrame (needs pandas)."""
        try:
            import pandas as pd
        except ImportError as e:
            raise ImportError("GradientMonitor.to_pandas needs pandas: pip install pandas") from e
        return pd.DataFrame(self.records, columns=list(COLUMNS))

    def to_tensorboard(self, writer: Any, prefix: str = "resgrad") -> None:
        """Add every record as a scalar (a SummaryWriter or a log dir), named like the
        framework callbacks: ``{prefix}/grad_norm/<param>``, ``{prefix}/act_grad_norm/<module>``,
        ``{prefix}/block_grad/<i>``, ``{prefix}/nonfinite/<name>`` (resgrad.probes.names)."""
        if isinstance(writer, (str, os.PathLike)):
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:
                raise ImportError(
                    "GradientMonitor.to_tensorboard needs the tensorboard package: pip install tensorboard"
                ) from e
            w = SummaryWriter(str(writer))
            try:
                self.to_tensorboard(w, prefix)
            finally:
                w.close()
            return
        from .names import metric_dict

        by_step: dict[int, list[dict[str, Any]]] = {}
        for r in self.records:
            by_step.setdefault(r["step"], []).append(r)
        for step, rows in sorted(by_step.items()):
            for tag, value in metric_dict(rows, prefix).items():
                writer.add_scalar(tag, value, step)

    def __repr__(self) -> str:
        return (f"GradientMonitor(params={self.params}, activations={self.activations!r}, "
                f"every={self.every}, attached={self._attached}, step={self._step})")


def _fused_norms(ts: list[Tensor], counts: bool = True) -> tuple[Tensor | list[Tensor], Any]:
    """Norms (and non-finite counts) of many tensors: one fused kernel per device/dtype."""
    on_cpu = all(_host_readable(t) for t in ts)
    if on_cpu:
        norms = torch._foreach_norm(ts)
        stacked = torch.stack(norms).double()
        lo, hi = stacked.aminmax()
        if not (lo.item() > _SAFE_LO and hi.item() < _SAFE_HI):
            bad = ~((stacked > _SAFE_LO) & (stacked < _SAFE_HI))
            for i in bad.nonzero().flatten().tolist():
                if math.isfinite(stacked[i].item()) or bool(torch.isfinite(ts[i]).all()):
                    stacked[i] = robust_norm(ts[i])
        cnt = None
        if counts:
            cnt = torch.zeros(len(ts), dtype=torch.int64)
            for i in (~torch.isfinite(stacked)).nonzero().flatten().tolist():
                cnt[i] = int((~torch.isfinite(ts[i])).sum())
        return stacked, cnt
    norms = torch._foreach_norm(ts, 2, dtype=torch.float64)
    cnt = torch._foreach_norm(torch._foreach_mul(ts, 0.0), 0) if counts else None
    same = len({n.device for n in norms}) == 1
    if same:
        return torch.stack(norms), (torch.stack(cnt) if cnt is not None else None)
    return list(norms), (list(cnt) if cnt is not None else None)


def _tolist(x: Tensor | list[Any] | None, scale: Tensor | None = None) -> list[Any]:
    if x is None:
        return []
    if isinstance(x, Tensor):
        if scale is not None:
            x = x.double() * scale.to(x.device)
        return x.tolist()
    out = [float(v) if isinstance(v, Tensor) else v for v in x]
    if scale is not None:
        s = float(scale)
        out = [v * s for v in out]
    return out


# ---- the exact per-block profile, in log space --------------------------------------


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
        inputs[i] = _first_tensor(args)

    logs: dict[int, float] = {}
    order: list[int] = []

    def renorm(i: int, g: Tensor) -> Tensor:
        # The incoming gradient was renormalised one block up, so one block's change is
        # all this norm sees; the slower robust norm is only needed when even that under/overflows.
        n = torch.linalg.vector_norm(g, dtype=torch.float64)
        v = float(n)
        if not _SAFE_LO < v < _SAFE_HI:
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
