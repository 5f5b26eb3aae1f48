"""GradientMonitor as a Lightning callback (``pip install 'resgrad[lightning]'``).

    trainer = lightning.Trainer(callbacks=[GradientMonitorCallback(activations="blocks")])

Measures in ``on_before_optimizer_step``: Lightning calls it once per optimizer step,
after every accumulation micro-batch's backward and after AMP's ``scaler.unscale_``
(lightning/pytorch/plugins/precision/amp.py), so parameter gradients are final and
unscaled; activation gradients are divided by the scaler's scale by the monitor. Logs
straight to ``trainer.loggers`` (or, with ``log_via="log_dict"``, through
``pl_module.log_dict``) under ``resgrad/grad_norm/<param>``,
``resgrad/act_grad_norm/<module>``, ``resgrad/block_grad/<i>`` and
``resgrad/nonfinite/<name>`` at the steps Lightning writes logs (``log_every_n_steps``),
unless ``every=``/``schedule=`` says otherwise.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..probes.monitor import GradientMonitor
from ._common import PREFIX, metric_dict, require
from ._readout import MonitorReadout

_pl = require("lightning.pytorch", "lightning", "resgrad.integrations.lightning")

__all__ = ["GradientMonitorCallback"]


class GradientMonitorCallback(MonitorReadout, _pl.Callback):
    """Per-layer gradient norms of the LightningModule, logged where its metrics go.

    ``monitor_options`` are :class:`resgrad.GradientMonitor`'s (``activations``,
    ``params``, ``weights``, ``updates``, ``every``, ``schedule``, ``sync_dist``); they are
    checked here, so a typo fails at construction. ``log=False`` keeps the records only.

    ``log_via="loggers"`` (default) hands the step's floats to each of ``trainer.loggers``
    at the step Lightning itself logs under: ``log_dict`` costs about 0.2 ms per value in
    Lightning's ResultCollection (a tensor, a metric object and device moves per key;
    measured with cProfile, benchmarks/README.md), which on a ResNet-20 with 65 values
    was the whole callback's overhead. ``log_via="log_dict"`` goes through
    ``pl_module.log_dict`` instead, so the values also reach ``trainer.callback_metrics``
    (needed to monitor them with ModelCheckpoint or EarlyStopping).
    """

    _during = "Trainer.fit"

    def __init__(self, *, prefix: str = PREFIX, log: bool = True, log_via: str = "loggers",
                 **monitor_options: Any) -> None:
        GradientMonitor.check_options(**monitor_options)
        if not isinstance(prefix, str) or not prefix:
            raise TypeError(f"prefix must be a non-empty string, received {prefix!r}")
        if log_via not in ("loggers", "log_dict"):
            raise ValueError(f"log_via must be 'loggers' or 'log_dict', received {log_via!r}")
        self.log_via = log_via
        self.prefix = prefix
        self.log = log
        self.options = dict(monitor_options)
        self.monitor: GradientMonitor | None = None
        self._n_rows = 0
        self._last: dict[str, float] = {}
        self._restored: dict[str, Any] = {}  # load_state_dict before setup made the monitor

    # ---- lifecycle ----------------------------------------------------------------

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if stage != "fit" or self.monitor is not None:
            return
        opts = dict(self.options)
        if "every" not in opts and "schedule" not in opts:
            n = max(int(trainer.log_every_n_steps), 1)
            # Lightning writes step logs when (batches stepped + 1) % n == 0, checked
            # after the optimizer step of global step s (0-based): measure exactly then.
            opts["schedule"] = lambda s, n=n: (s + 1) % n == 0
        if "scaler" not in opts:
            opts["scaler"] = getattr(trainer.precision_plugin, "scaler", None)
        model: nn.Module = pl_module
        # Raises here (before step 0) for a model with nothing to measure.
        self.monitor = GradientMonitor(model, **opts)
        if "step" in self._restored:
            self.monitor.load_state_dict({"step": int(self._restored["step"])})

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        if self.monitor is None:  # fit without setup (a hand-driven loop)
            self.setup(trainer, pl_module, "fit")
        assert self.monitor is not None
        self.monitor.load_state_dict({"step": int(trainer.global_step)})
        self.monitor.attach()

    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        mon = self.monitor
        if mon is None or not mon.attached:
            return
        if not mon.step(int(trainer.global_step), optimizer=optimizer):
            return
        rows = mon.records
        new, self._n_rows = rows[self._n_rows:], len(rows)
        self._last = metric_dict(new, self.prefix)
        if not (self.log and self._last):
            return
        if self.log_via == "log_dict":
            # Values are already reduced over ranks (GradientMonitor's one all-reduce).
            pl_module.log_dict(self._last, on_step=True, on_epoch=False, sync_dist=False,
                               batch_size=1)
            return
        # Lightning logs step metrics under the count of optimizer-stepped batches, read
        # before this step increments it (loops/training_epoch_loop.py); loggers'
        # log_metrics are rank-zero-only, so other ranks write nothing.
        step = getattr(getattr(trainer.fit_loop, "epoch_loop", None), "_batches_that_stepped",
                       trainer.global_step)
        for logger in trainer.loggers:
            logger.log_metrics(self._last, step=int(step))

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        if self.monitor is not None:
            self.monitor.detach()

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        if self.monitor is not None:
            self.monitor.detach()

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if self.monitor is not None:
            self.monitor.detach()

    def state_dict(self) -> dict[str, Any]:
        """What a Lightning checkpoint keeps: the monitor's step and the last logged values."""
        state = dict(self.monitor.state_dict()) if self.monitor is not None else dict(self._restored)
        if self._last or "last_metrics" in self._restored:
            state["last_metrics"] = dict(self._last)
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (Lightning calls it on ``fit(ckpt_path=...)``, after
        ``setup``); the step is applied to the monitor now or when it is made."""
        if not isinstance(state_dict, dict):
            raise TypeError(f"load_state_dict takes the dict state_dict() returned, received {type(state_dict).__name__}")
        self._restored = dict(state_dict)
        self._last = dict(state_dict.get("last_metrics", {}))
        if self.monitor is not None and "step" in state_dict:
            self.monitor.load_state_dict({"step": int(state_dict["step"])})
