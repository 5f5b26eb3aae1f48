"""GradientMonitor as a Hugging Face ``TrainerCallback`` (``pip install 'resgrad[hf]'``).

    trainer = Trainer(model, args, train_dataset=ds)
    GradientMonitorCallback(activations="blocks").add_to(trainer)   # before the reporters
    trainer.train()

Measures in ``on_pre_optimizer_step``: the Trainer calls it once per optimizer step,
after the last accumulation micro-batch and after gradient clipping (transformers
trainer.py, ``_inner_training_loop``). The model comes from the callback's kwargs.
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
from ._common import PREFIX, metric_dict, require
from ._readout import MonitorReadout

_tf = require("transformers", "hf", "resgrad.integrations.hf")

__all__ = ["GradientMonitorCallback"]


class GradientMonitorCallback(MonitorReadout, _tf.TrainerCallback):
    """Per-layer gradient norms of the Trainer's model, in its log history.

    ``monitor_options`` are :class:`resgrad.GradientMonitor`'s, checked at construction;
    without ``every``/``schedule`` it measures exactly the steps the Trainer logs. Steps are
    the Trainer's ``global_step`` after the optimizer step (what ``log_history`` shows), so
    ``every=k`` measures steps k, 2k, ... ``trainer``: place the callback first in that
    Trainer now (:meth:`add_to`).
    """

    _during = "Trainer.train"

    def __init__(self, *, prefix: str = PREFIX, trainer: Any = None, **monitor_options: Any) -> None:
        GradientMonitor.check_options(**monitor_options)
        if not isinstance(prefix, str) or not prefix:
            raise TypeError(f"prefix must be a non-empty string, received {prefix!r}")
        self.prefix = prefix
        self.options = dict(monitor_options)
        self.monitor: GradientMonitor | None = None
        self._n_rows = 0
        self._pending: dict[str, float] | None = None
        self._last: dict[str, float] = {}
        self._placed = False  # first in the Trainer's list (add_to)
        self._warned = False
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
        self._build(trainer.args, trainer.model)
        return self

    def _build(self, args: Any, model: Any) -> None:
        if self.monitor is not None or model is None:
            return
        opts = dict(self.options)
        if "every" not in opts and "schedule" not in opts:
            opts["schedule"] = _log_schedule(args)
        self.monitor = GradientMonitor(model, **opts)  # raises now for a frozen model

    def on_init_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        self._build(args, model)  # so bad input fails in Trainer(...), not at step 10,000

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
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
        if self.monitor.model is not model and model is not None:  # a new model (model_init)
            self.monitor.detach()
            self.monitor = None
            self._build(args, model)
        assert self.monitor is not None
        # Steps are numbered as the Trainer numbers them: global_step after the optimizer
        # step, the number log_history and every reporter show for that step's logs.
        self.monitor.load_state_dict({"step": int(state.global_step) + 1})
        self.monitor.attach()

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, optimizer: Any = None,
                              **kwargs: Any) -> None:
        mon = self.monitor
        if mon is None or not mon.attached:
            return
        if mon.scaler is None and getattr(optimizer, "scaler", None) is not None:
            mon.scaler = optimizer.scaler  # accelerate's AcceleratedOptimizer carries the GradScaler
        inner = getattr(optimizer, "optimizer", optimizer)  # the torch optimizer the scaler knows
        if not mon.step(int(state.global_step) + 1, optimizer=inner):  # the step being completed
            return
        rows = mon.records
        new, self._n_rows = rows[self._n_rows:], len(rows)
        self._last = metric_dict(new, self.prefix)
        self._pending = self._last

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
