"""GradientMonitor as a Hugging Face ``TrainerCallback`` (``pip install 'resgrad[hf]'``).

    trainer = Trainer(model, args, train_dataset=ds)
    GradientMonitorCallback(activations="blocks").add_to(trainer)   # before the reporters
    trainer.train()

Where it measures: before gradient clipping. The Trainer (transformers 5, trainer.py,
``_inner_training_loop``) runs, once per optimizer step after the last accumulation
micro-batch: ``accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)`` (or, with
``max_grad_norm=0``, the same call with ``inf`` to get the norm it logs), then the
``on_pre_optimizer_step`` callbacks, then ``optimizer.step()``. No callback event falls
between the last backward and the clip, so ``on_pre_optimizer_step`` sees clipped
gradients. For the duration of ``train()`` the callback therefore wraps
``Accelerator.clip_grad_norm_`` (the Trainer's accelerator when it was placed with
:meth:`~GradientMonitorCallback.add_to`/``trainer=``; the class otherwise, acting only on
calls with this model's parameters) and measures on entry, which is

- the accumulated gradient, once per optimizer step (the call is made only on the
  step's last micro-batch, after DDP's all-reduce; FSDP2 shards are reduced by the monitor);
- before ``unscale_`` under fp16 AMP: the monitor divides by the GradScaler's scale,
  so the values are unscaled; bf16 autocast needs no scale;
- exactly the gradient whose total the Trainer logs as ``grad_norm``: the per-layer
  norms combine (sqrt of the sum of squares) to it.

A gradient hook (``register_post_accumulate_grad_hook``) was the other candidate; it runs
on every micro-batch and, under DDP, before the all-reduce has written the averaged
gradient, so it would need its own accumulation bookkeeping and still measure per-rank
gradients. Should the Trainer clip by another route (SageMaker MP, gradients on several
device meshes), the wrapper is not called: the callback measures in
``on_pre_optimizer_step``, labels the rows post-clip when ``max_grad_norm > 0``, and
warns once. (Under DeepSpeed the gradients live in the engine, not in ``.grad``: not
measured.) ``clip="post"``/``"both"`` adds (or keeps only) the norms after clipping,
taken in ``on_pre_optimizer_step`` (see :mod:`resgrad.integrations._clip` for the names).

At the Trainer's logging steps (``logging_steps``, ``logging_first_step``) the norms are
added to the ``logs`` of ``Trainer.log`` and to ``state.log_history``, so every reporter
the user set up (``report_to``: TensorBoard, W&B, MLflow, ...) receives them — on the
world process zero only, as the Trainer's reporters do.

``on_log`` hands one ``logs`` dict to each callback in the order of the Trainer's list,
and ``Trainer(callbacks=[...])`` puts user callbacks after the ``report_to`` reporters;
so the callback must be ahead of them for the reporters to see the norms.
:meth:`GradientMonitorCallback.add_to` (or the ``trainer=`` argument) places it first
with the Trainer's own ``pop_callback``/``add_callback``. Passed in ``callbacks=[...]``
instead, the norms reach ``state.log_history`` and the callbacks after it, and the
callback warns once that the reporters before it miss them.
"""

from __future__ import annotations

import warnings
from typing import Any

from ..probes.monitor import GradientMonitor
from ._clip import (
    POST_KIND,
    PostClip,
    check_clip,
    metric_dict,
    monitor_options,
    params_replaced,
    wants_post,
)
from ._common import PREFIX, require
from ._readout import MonitorReadout

_tf = require("transformers", "hf", "resgrad.integrations.hf")

__all__ = ["GradientMonitorCallback"]


class _ClipWrap:
    """``clip_grad_norm_`` wrapped on one Accelerator (or on the class), removable."""

    def __init__(self, target: Any, on_entry: Any) -> None:
        self.target = target
        self.on_entry = on_entry
        self.is_class = isinstance(target, type)
        name = "clip_grad_norm_"
        if self.is_class:
            self.saved = target.__dict__.get(name)
            orig = getattr(target, name)

            def wrapper(acc: Any, parameters: Any, max_norm: Any, *a: Any, **kw: Any) -> Any:
                params = list(parameters)
                on_entry(params)
                return orig(acc, params, max_norm, *a, **kw)

            setattr(target, name, wrapper)
        else:
            self.saved = target.__dict__.get(name)
            orig = getattr(target, name)  # bound

            def wrapper(parameters: Any, max_norm: Any, *a: Any, **kw: Any) -> Any:  # type: ignore[misc]
                params = list(parameters)
                on_entry(params)
                return orig(params, max_norm, *a, **kw)

            target.__dict__[name] = wrapper
        self.wrapper = wrapper

    def remove(self) -> None:
        name = "clip_grad_norm_"
        if self.target.__dict__.get(name) is not self.wrapper:
            return  # wrapped again on top since: leave the chain to its owner
        if self.is_class:
            if self.saved is None:
                delattr(self.target, name)
            else:
                setattr(self.target, name, self.saved)
        elif self.saved is None:
            del self.target.__dict__[name]
        else:
            self.target.__dict__[name] = self.saved


class GradientMonitorCallback(MonitorReadout, _tf.TrainerCallback):
    """Per-layer gradient norms of the Trainer's model, in its log history.

    ``monitor_options`` are :class:`resgrad.GradientMonitor`'s, checked at construction;
    without ``every``/``schedule`` it measures exactly the steps the Trainer logs. Steps are
    the Trainer's ``global_step`` after the optimizer step (what ``log_history`` shows), so
    ``every=k`` measures steps k, 2k, ... ``trainer``: place the callback first in that
    Trainer now (:meth:`add_to`). ``clip``: parameter-gradient norms before clipping
    (``"pre"``, default: ``resgrad/grad_norm/<param>``), after it (``"post"``:
    ``resgrad/grad_norm_post_clip/<param>``), or ``"both"``.
    """

    _during = "Trainer.train"

    def __init__(self, *, prefix: str = PREFIX, trainer: Any = None, clip: str = "pre",
                 **monitor_options: Any) -> None:
        GradientMonitor.check_options(**monitor_options)
        if not isinstance(prefix, str) or not prefix:
            raise TypeError(f"prefix must be a non-empty string, received {prefix!r}")
        self.clip = check_clip(clip)
        self.prefix = prefix
        self.options = dict(monitor_options)
        self.monitor: GradientMonitor | None = None
        self._post: PostClip | None = None
        self._n_rows = 0
        self._pending: dict[str, float] | None = None
        self._last: dict[str, float] = {}
        self._placed = False  # first in the Trainer's list (add_to)
        self._warned = False
        self._warned_clip = False
        self._accelerator: Any = None  # the Trainer's, when placed by add_to
        self._wrap: _ClipWrap | None = None
        self._state: Any = None  # the TrainerState of the running train()
        self._optimizer: Any = None
        self._param_ids: set[int] = set()
        self._entered: int | None = None  # step whose clip call was entered (pre-clip measured)
        self._due: int | None = None  # that step was measured (it is in the schedule)
        if trainer is not None:
            self.add_to(trainer)

    # ---- lifecycle ----------------------------------------------------------------

    def add_to(self, trainer: Any) -> GradientMonitorCallback:
        """Make this the Trainer's first callback, so the ``report_to`` reporters, which
        receive the same ``logs`` dict after it, log the norms too; returns ``self``.

        Uses only the Trainer's API: every callback is popped and added back behind this
        one, in its order. The Trainer's ``on_init_end`` has already run, so the model is
        checked here (a frozen model fails now, not at step 10,000).
        """
        if not callable(getattr(trainer, "pop_callback", None)) or not hasattr(trainer, "callback_handler"):
            raise TypeError(f"add_to needs a transformers.Trainer, received {type(trainer).__name__}")
        others = [cb for cb in trainer.callback_handler.callbacks if cb is not self]
        for cb in [*others, self]:
            trainer.pop_callback(cb)
        for cb in [self, *others]:
            trainer.add_callback(cb)
        self._placed = True
        self._accelerator = getattr(trainer, "accelerator", None)
        self._build(trainer.args, trainer.model)
        return self

    def _build(self, args: Any, model: Any) -> None:
        if self.monitor is not None or model is None:
            return
        opts = monitor_options(self.clip, self.options)
        if "every" not in opts and "schedule" not in opts:
            opts["schedule"] = _log_schedule(args)
        self.monitor = GradientMonitor(model, **opts)  # raises now for a frozen model
        self._post = PostClip(self.monitor) if wants_post(self.clip, self.options) else None

    def on_init_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        self._build(args, model)  # so bad input fails in Trainer(...), not at step 10,000

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None,
                       optimizer: Any = None, **kwargs: Any) -> None:
        report_to = getattr(args, "report_to", None) or []
        reporters = [r for r in ([report_to] if isinstance(report_to, str) else report_to) if r != "none"]
        if reporters and not self._placed and not self._warned:
            warnings.warn(
                f"resgrad: GradientMonitorCallback in Trainer(callbacks=[...]) runs after the report_to "
                f"reporters ({', '.join(map(str, reporters))}), which then miss the norms (they reach "
                "state.log_history only); use GradientMonitorCallback(...).add_to(trainer) instead",
                RuntimeWarning, stacklevel=2)
            self._warned = True
        self._build(args, model)
        if self.monitor is None:
            raise ValueError("GradientMonitorCallback received no model from the Trainer; pass model= to Trainer")
        if model is not None and (self.monitor.model is not model or params_replaced(self.monitor, model)):
            # a new model (model_init), or new parameters (FSDP2's fully_shard in prepare)
            self.monitor.detach()
            self.monitor = None
            self._n_rows = 0
            self._build(args, model)
        mon = self.monitor
        assert mon is not None
        # Steps are numbered as the Trainer numbers them: global_step after the optimizer
        # step, the number log_history and every reporter show for that step's logs.
        mon.load_state_dict({"step": int(state.global_step) + 1})
        mon.attach()
        self._state, self._optimizer = state, optimizer
        self._entered = self._due = None
        if mon.scaler is None and getattr(optimizer, "scaler", None) is not None:
            mon.scaler = optimizer.scaler  # accelerate's AcceleratedOptimizer carries the GradScaler
        self._param_ids = {id(p) for _, p in mon._params}
        self._unwrap()
        target = self._accelerator
        if target is None:  # placed by callbacks=[...]: the class, acting on this model only
            import accelerate

            target = accelerate.Accelerator
        self._wrap = _ClipWrap(target, self._before_clip)

    def _unwrap(self) -> None:
        if self._wrap is not None:
            self._wrap.remove()
            self._wrap = None

    def _measure(self, s: int) -> None:
        """Close step ``s`` in the monitor (measuring it if scheduled) and keep its metrics."""
        mon = self.monitor
        assert mon is not None
        self._entered = s
        inner = getattr(self._optimizer, "optimizer", self._optimizer)  # the torch optimizer the scaler knows
        # clip="post": the monitor measures no parameter gradient itself (PostClip does, after
        # clipping), so its own schedule says whether this is a log step.
        if not mon.step(s, optimizer=inner) and not (self._post is not None and mon._due(s)):
            return
        self._due = s
        rows = mon.records
        new, self._n_rows = rows[self._n_rows:], len(rows)
        self._last = metric_dict(new, self.prefix)

    def _before_clip(self, params: list[Any]) -> None:
        mon, state = self.monitor, self._state
        if mon is None or not mon.attached or state is None or not params:
            return
        if id(params[0]) not in self._param_ids:  # another model's clip (the class-wide wrapper)
            return
        s = int(state.global_step) + 1  # the step being completed
        if self._entered != s:  # once per optimizer step
            self._measure(s)

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, optimizer: Any = None,
                              **kwargs: Any) -> None:
        mon = self.monitor
        if mon is None or not mon.attached:
            return
        s = int(state.global_step) + 1
        if self._entered != s:  # the Trainer clipped by another route: measure here, after it
            self._measure(s)
            if self._due == s and float(getattr(args, "max_grad_norm", 0) or 0) > 0:
                self._relabel_post(s)
        if self._due != s:
            return
        if self._post is not None:
            self._post.collect(s)
            new = [r for r in self._post.rows if r["step"] == s]
            self._last.update(metric_dict(new, self.prefix))
        self._pending = dict(self._last)

    def _relabel_post(self, s: int) -> None:
        if not self._warned_clip:
            warnings.warn("resgrad: the Trainer clipped the gradients without Accelerator.clip_grad_norm_ "
                          "(SageMaker MP, or gradients on several device meshes), so the per-layer norms are "
                          "after clipping; they are logged as grad_norm_post_clip", RuntimeWarning,
                          stacklevel=2)
            self._warned_clip = True
        assert self.monitor is not None
        for r in self.monitor.records:
            if r["step"] == s and r["kind"] == "param":
                r["kind"] = POST_KIND
        self._last = metric_dict([r for r in self.monitor.records if r["step"] == s], self.prefix)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
               **kwargs: Any) -> None:
        if self._pending is None or logs is None or not state.is_world_process_zero:
            return
        if any(k.startswith("eval_") for k in logs):  # an evaluation's log: keep for the next train log
            return
        logs.update(self._pending)  # the dict every later callback (the reporters) receives
        hist = state.log_history
        if hist and hist[-1].get("step") == state.global_step:
            hist[-1].update(self._pending)
        self._pending = None

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._unwrap()
        self._state = None
        if self.monitor is not None:
            self.monitor.detach()


def _log_schedule(args: Any) -> Any:
    """The optimizer steps the Trainer logs after, numbered as the Trainer does (global_step
    after the increment): DefaultFlowCallback sets should_log when that is a multiple of
    logging_steps (or is 1 with logging_first_step). None (measure every step, log the
    latest) where that cannot be known in advance."""
    n = args.logging_steps
    first = bool(getattr(args, "logging_first_step", False))
    strategy = str(getattr(args.logging_strategy, "value", args.logging_strategy))
    if strategy != "steps":  # "epoch"/"no": which step logs is not known ahead; measure every step
        return None
    n = float(n)
    if n < 1:  # a fraction of max_steps: DefaultFlowCallback resolves it into state.logging_steps
        return None
    k = int(n)
    return lambda s, k=k, first=first: s % k == 0 or (first and s == 1)
