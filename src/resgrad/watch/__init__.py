"""``resgrad watch``: follow a training run in the browser as it trains (127.0.0.1 only).

    resgrad train resnet56 --data cifar10 --monitor 10 --out runs/r56 &
    resgrad watch runs/r56                  # then open http://127.0.0.1:8765/

The page shows the layer-by-step heat map of gradient norms (log colour scale), each residual
unit's latest gradient (its skip/branch split where the monitor writes one), the loss curves
of ``metrics.jsonl`` and the alarms of :mod:`resgrad.verdicts.alarms`; it polls the server
and redraws as rows land. Any training can be watched: write GradientMonitor rows to a JSONL
file (:class:`resgrad.integrations.monitor_file.MonitorFile`, or a
:class:`resgrad.integrations.loggers.JSONLLogger`) and point ``resgrad watch`` at the file or
its folder. Torch-free.

Your own training, three ways to the file ``resgrad watch`` follows:

- a plain loop: ``out = MonitorFile("runs/x/monitor.jsonl", mon, alarms=GradientAlarms(mon))``
  and ``out.write()`` after each ``mon.step(step)`` (or ``JSONLLogger(path).write(mon)``);
- the HF Trainer (``GradientMonitorCallback`` puts the norms in its logs): a callback whose
  ``on_log(self, args, state, control, logs=None, **kw)`` appends
  ``json.dumps({"step": state.global_step, **logs})`` to ``runs/x/monitor.jsonl`` (its ``loss``
  is drawn per step);
- Lightning: in a callback's ``on_train_batch_end``, ``logger.write(cb.monitor)`` with
  ``logger = JSONLLogger("runs/x/monitor.jsonl")`` and ``cb`` the GradientMonitorCallback.
"""

from __future__ import annotations

from .follow import Follower, RunFiles, rows_of
from .server import LOCAL_HOSTS, PortInUse, WatchServer, make_server

__all__ = ["Follower", "RunFiles", "rows_of", "LOCAL_HOSTS", "PortInUse", "WatchServer", "make_server",
           "DEFAULT_PORT"]

DEFAULT_PORT = 8765  # resgrad watch --port's default (TensorBoard's 6006 stays free beside it)
