"""The training loop: the He et al. recipe, a step-wise schedule, checkpoints, resume, callbacks.

``fit(model, data, TrainConfig())`` trains with SGD the way He et al. 2015 (arXiv
1512.03385, §4.2) trained their CIFAR-10 nets: batch 128, lr 0.1 divided by 10 at 50% and
75% of training, momentum 0.9, weight decay 1e-4, an optional constant warm-up at 0.01.

With ``out_dir`` a run writes one folder::

    config.json          resolved config, model_spec, data, schedule, environment (atomic)
    metrics.jsonl        one JSON line per finished epoch (flushed and fsynced)
    checkpoints/last.pt  model, optimizer, scheduler, epoch, step, RNG states and callback
                         states, written atomically (temp file + os.replace)

Rerunning ``fit`` on the folder continues from ``checkpoints/last.pt`` (kill -9 included):
``metrics.jsonl`` is cut back to the checkpointed epochs first, every source of randomness
is restored or re-derived from ``(seed, epoch)``, so on CPU the final weights are bitwise
those of an uninterrupted run. A finished run returns its recorded result.

Preemption (Slurm sends SIGTERM, or SIGUSR1 with ``--signal``; people press Ctrl-C): on
SIGTERM, SIGINT or SIGUSR1 the current step finishes, a mid-epoch checkpoint is written
(the position in the epoch's data order, the epoch's partial losses, every RNG and callback
state) and :class:`Preempted` is raised; the CLI prints one line and exits 128 + signal.
The rerun continues at that step, bitwise. ``checkpoint_steps`` / ``checkpoint_minutes``
write such checkpoints on a clock too, for epochs that take hours. Only one process writes
a run folder at a time (:meth:`resgrad.rundir.RunDir.locked`).

The package, one seam per module: ``config`` (TrainConfig), ``loop`` (fit and the Loop
object), ``resume`` (the run-folder protocol), ``rng`` (seeds and generator states),
``device`` (the device resolver, data on the GPU, autocast), ``schedule`` (lr and the
optimizer), ``evaluation``, ``model_spec`` (load_run), ``progress``.
"""

from __future__ import annotations

import importlib
from typing import Any

from ..stopping import NonFiniteLoss, Preempted
from .config import RUN_KIND, TrainConfig

__all__ = ["TrainConfig", "FitResult", "NonFiniteLoss", "Preempted", "fit", "evaluate", "load_run",
           "resolve_device", "RUN_KIND", "Loop"]

# Imported on first use, so that TrainConfig, RUN_KIND and the exceptions cost no torch import
# (the command line builds its options from TrainConfig). _on_device, _evaluate and
# _resolve_device are private names other code imports from here (benchmarks/gpu.py).
_LAZY = {
    "fit": ("loop", "fit"), "FitResult": ("loop", "FitResult"), "Loop": ("loop", "Loop"),
    "evaluate": ("evaluation", "evaluate"), "_evaluate": ("evaluation", "_evaluate"),
    "load_run": ("model_spec", "load_run"),
    "resolve_device": ("device", "resolve_device"), "_resolve_device": ("device", "resolve_device"),
    "_on_device": ("device", "on_device"),
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, attr = _LAZY[name]
    value = getattr(importlib.import_module(f"{__name__}.{module}"), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
