"""GradientMonitor as a Hugging Face ``TrainerCallback`` (``pip install 'resgrad[hf]'``).

    trainer = Trainer(model, args, train_dataset=ds, callbacks=[GradientMonitorCallback()])

Measures in ``on_pre_optimizer_step``: the Trainer calls it once per optimizer step,
after the last accumulation micro-batch and after gradient clipping (transformers
trainer.py, ``_inner_training_loop``). The model comes from the callback's kwargs.
At the Trainer's logging steps (``logging_steps``, ``logging_first_step``) the norms are
added to the ``logs`` of ``Trainer.log`` and to ``state.log_history``, so every reporter
the user set up (``report_to``: TensorBoard, W&B, MLflow, ...) receives them — on the
world process zero only, as the Trainer's reporters do.
"""

from __future__ import annotations

import sys
import warnings
from typing import Any

from ..probes.gradients import GradientMonitor
from ._common import PREFIX, metric_dict, require

_tf = require("transformers", "hf", "resgrad.integrations.hf")

__all__ = ["GradientMonitorCallback"]


class GradientMonitorCallback(_tf.TrainerCallback):
    """Per-layer gradient norms of the Trainer's model, in its log history.

    ``monitor_options`` are :class:`resgrad.GradientMonitor`'s, checked at construction;
    without ``every``/``schedule`` it measures exactly the steps the Trainer logs.
    """

    def __init__(self, *, prefix: str = PREFIX, **monitor_options: Any) -> None:
        GradientMonitor.check_options(**monitor_options)
        if not isinstance(prefix, str) or not prefix:
            raise TypeError(f"prefix must be a non-empty string, received {prefix!r}")
        self.prefix = prefix
        self.options = dict(monitor_options)
        self.monitor: GradientMonitor | None = None
        self._n_rows = 0
        self._pending: dict[str, float] | None = None
        self._last: dict[str, float] = {}

    # ---- lifecycle ----------------------------------------------------------------

    def _go_first(self) -> None:
        """Move this callback ahead of the reporters, which receive the same ``logs`` dict.

        ``Trainer(callbacks=[...])`` appends user callbacks after the ``report_to``
        reporters, and ``on_log`` hands one dict to each in turn; added after them, our
        norms would reach ``log_history`` but no reporter. The handler is the caller of
        this event (``CallbackHandler.call_event``); moving ourselves to index 0 while it
        iterates neither skips nor repeats a callback (the ones before us shift by one).
        """
        frame = sys._getframe(2)  # _go_first <- on_* <- call_event
        handler = frame.f_locals.get("self")
        cbs = getattr(handler, "callbacks", None)
        if not isinstance(cbs, list) or self not in cbs:
            warnings.warn("resgrad: could not place GradientMonitorCallback before the Trainer's reporters; "
                          "norms go to state.log_history only", RuntimeWarning, stacklevel=3)
            return
        if cbs[0] is not self:
            cbs.remove(self)
            cbs.insert(0, self)

    def _build(self, args: Any, model: Any) -> None:
        if self.monitor is not None or model is None:
            return
        opts = dict(self.options)
        if "every" not in opts and "schedule" not in opts:
            opts["schedule"] = _log_schedule(args)
        self.monitor = GradientMonitor(model, **opts)  # raises now for a frozen model

    def on_init_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        self._go_first()
        self._build(args, model)  # so bad input fails in Trainer(...), not at step 10,000

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        self._go_first()
        self._build(args, model)
        if self.monitor is None:
            raise ValueError("GradientMonitorCallback received no model from the Trainer; pass model= to Trainer")
        if self.monitor.model is not model and model is not None:  # a new model (model_init)
            self.monitor.detach()
            self.monitor = None
            self._build(args, model)
        assert self.monitor is not None
        self.monitor.load_state_dict({"step": int(state.global_step)})
        self.monitor.attach()

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, optimizer: Any = None,
                              **kwargs: Any) -> None:
        mon = self.monitor
        if mon is None or not mon.attached:
            return
        if mon.scaler is None and getattr(optimizer, "scaler", None) is not None:
            mon.scaler = optimizer.scaler  # accelerate's AcceleratedOptimizer carries the GradScaler
        inner = getattr(optimizer, "optimizer", optimizer)  # the torch optimizer the scaler knows
        if not mon.step(int(state.global_step), optimizer=inner):
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

    # ---- reading ------------------------------------------------------------------

    @property
    def records(self) -> list[dict[str, Any]]:
        return self.monitor.records if self.monitor is not None else []

    @property
    def last_metrics(self) -> dict[str, float]:
        return dict(self._last)

    def to_pandas(self) -> Any:
        if self.monitor is None:
            raise ValueError("no measurements yet: the callback measures during Trainer.train")
        return self.monitor.to_pandas()


def _log_schedule(args: Any) -> Any:
    """The optimizer steps the Trainer logs after: DefaultFlowCallback sets should_log
    when the incremented global_step is a multiple of logging_steps (or is 1 with
    logging_first_step); on_pre_optimizer_step sees the step before the increment.
    None (measure every step, log the latest) where that cannot be known in advance."""
    n = args.logging_steps
    first = bool(getattr(args, "logging_first_step", False))
    strategy = str(getattr(args.logging_strategy, "value", args.logging_strategy))
    if strategy != "steps":  # "epoch"/"no": which step logs is not known ahead; measure every step
        return None
    n = float(n)
    if n < 1:  # a fraction of max_steps: DefaultFlowCallback resolves it into state.logging_steps
        return None
    k = int(n)
    return lambda s, k=k, first=first: (s + 1) % k == 0 or (first and s == 0)
