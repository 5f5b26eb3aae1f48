"""GradientMonitor as a Lightning callback (``pip install 'resgrad[lightning]'``).

    trainer = lightning.Trainer(callbacks=[GradientMonitorCallback(activations="blocks")])

Measures in ``on_before_optimizer_step``: Lightning calls it once per optimizer step,
after every accumulation micro-batch's backward and after AMP's ``scaler.unscale_``
(lightning/pytorch/plugins/precision/amp.py), so parameter gradients are final and
unscaled; activation gradients are divided by the scaler's scale by the monitor. It is
also before clipping (``Precision._after_closure`` calls the hook, then
``configure_gradient_clipping``), so ``resgrad/grad_norm/<param>`` is the gradient before
``gradient_clip_val`` caps it. ``clip="post"``/``"both"`` takes the norms after clipping too
(``resgrad/grad_norm_post_clip/<param>``): for the duration of ``fit`` the module's
``configure_gradient_clipping`` is wrapped (on the instance) and the norms are taken when
it returns, which covers ``gradient_clip_val`` and a user's own override; that step's
values are logged then, in one call. Manual optimization never calls it: there the step
is logged without post-clip rows at ``on_train_batch_end``, with one warning. Logs
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
from ._clip import PostClip, check_clip, metric_dict, monitor_options, params_replaced, wants_post
from ._common import PREFIX, require
from ._readout import MonitorReadout

_pl = require("lightning.pytorch", "lightning", "resgrad.integrations.lightning")
rank_zero_warn = _pl.utilities.rank_zero_warn

__all__ = ["GradientMonitorCallback"]


class GradientMonitorCallback(MonitorReadout, _pl.Callback):
    """Per-layer gradient norms of the LightningModule, logged where its metrics go.

    ``monitor_options`` are :class:`resgrad.GradientMonitor`'s (``activations``,
    ``params``, ``weights``, ``updates``, ``every``, ``schedule``, ``sync_dist``); they are
    checked here, so a typo fails at construction. ``log=False`` keeps the records only.
    ``clip``: parameter-gradient norms before clipping (``"pre"``, default), after it
    (``"post"``), or ``"both"``.

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
                 clip: str = "pre", **monitor_options: Any) -> None:
        GradientMonitor.check_options(**monitor_options)
        self.clip = check_clip(clip)
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
        self._post: PostClip | None = None
        self._await: tuple[int, int] | None = None  # (step, logger step) waiting for its post-clip norms
        self._wrapped: Any = None  # the module whose configure_gradient_clipping is wrapped
        self._warned_manual = False

    # ---- lifecycle ----------------------------------------------------------------

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if stage != "fit" or self.monitor is not None:
            return
        opts = monitor_options(self.clip, self.options)
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
        self._post = PostClip(self.monitor) if wants_post(self.clip, self.options) else None
        if "step" in self._restored:
            self.monitor.load_state_dict({"step": int(self._restored["step"])})

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        if self.monitor is not None and params_replaced(self.monitor, pl_module):
            # configure_model ran after setup (ModelParallelStrategy's fully_shard puts
            # DTensor parameters in place of the ones the monitor holds): build it again.
            self.monitor.detach()
            self.monitor = None
            self._n_rows = 0
        if self.monitor is None:  # fit without setup (a hand-driven loop)
            self.setup(trainer, pl_module, "fit")
        assert self.monitor is not None
        self.monitor.load_state_dict({"step": int(trainer.global_step)})
        self.monitor.attach()
        self._await = None
        if self._post is not None:
            self._wrap(pl_module)

    def _wrap(self, pl_module: Any) -> None:
        self._unwrap()
        orig = pl_module.configure_gradient_clipping  # bound: the class's or the user's override
        trainer = pl_module.trainer

        def configure_gradient_clipping(*args: Any, **kwargs: Any) -> Any:
            out = orig(*args, **kwargs)
            self._after_clip(trainer, pl_module)
            return out

        pl_module.__dict__["configure_gradient_clipping"] = configure_gradient_clipping
        self._wrapped = (pl_module, configure_gradient_clipping)

    def _unwrap(self) -> None:
        if self._wrapped is not None:
            mod, fn = self._wrapped
            if mod.__dict__.get("configure_gradient_clipping") is fn:
                del mod.__dict__["configure_gradient_clipping"]
            self._wrapped = None

    def _after_clip(self, trainer: Any, pl_module: Any) -> None:
        if self._await is None or self._post is None:
            return
        s, log_step = self._await
        self._await = None
        self._post.collect(s)
        self._last.update(metric_dict([r for r in self._post.rows if r["step"] == s], self.prefix))
        self._emit(trainer, pl_module, log_step)

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self._await is None:
            return
        if not self._warned_manual:  # configure_gradient_clipping was not called: manual optimization
            rank_zero_warn("resgrad: no post-clip gradient norms for this step: Lightning did not call "
                           "configure_gradient_clipping (manual optimization clips in training_step); "
                           "use clip='pre' there")
            self._warned_manual = True
        _, log_step = self._await
        self._await = None
        self._emit(trainer, pl_module, log_step)

    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        mon = self.monitor
        if mon is None or not mon.attached:
            return
        s = int(trainer.global_step)
        # clip="post": the monitor measures no parameter gradient itself (PostClip does, after
        # clipping), so its own schedule says whether this is a log step.
        if not mon.step(s, optimizer=optimizer) and not (self._post is not None and mon._due(s)):
            return
        rows = mon.records
        new, self._n_rows = rows[self._n_rows:], len(rows)
        self._last = metric_dict(new, self.prefix)
        # Lightning logs step metrics under the count of optimizer-stepped batches, read
        # before this step increments it (loops/training_epoch_loop.py).
        log_step = getattr(getattr(trainer.fit_loop, "epoch_loop", None), "_batches_that_stepped",
                           trainer.global_step)
        if self._post is not None:  # logged once the post-clip norms are in (_after_clip)
            self._await = (int(trainer.global_step), int(log_step))
            return
        self._emit(trainer, pl_module, int(log_step))

    def _emit(self, trainer: Any, pl_module: Any, log_step: int) -> None:
        if not (self.log and self._last):
            return
        if self.log_via == "log_dict":
            # Values are already reduced over ranks (GradientMonitor's one all-reduce).
            pl_module.log_dict(self._last, on_step=True, on_epoch=False, sync_dist=False,
                               batch_size=1)
            return
        # loggers' log_metrics are rank-zero-only, so other ranks write nothing.
        for logger in trainer.loggers:
            logger.log_metrics(self._last, step=log_step)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self._unwrap()
        if self.monitor is not None:
            self.monitor.detach()

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self._unwrap()
        if self.monitor is not None:
            self.monitor.detach()

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        self._unwrap()
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
