"""Experiments: a typed config in, a typed Result out, through one driver.

Every experiment is a module declaring ``KIND``, ``Config``, ``Result`` and
``compute(config, ctx)``; :func:`run` (``resgrad.experiments.driver.run``) owns the run
folder's lock, claim, reuse, timing, writing and the executor's lifetime for all of them.
docs/architecture.md describes the contract and how to add an experiment.
"""

from .driver import Context, Lazy, Progress, experiment, register, registered, run

# One line per experiment: its KIND and its module (imported when first used).
register("resgrad.flow", "resgrad.experiments.flow")
register("resgrad.degradation", "resgrad.experiments.degradation")
register("resgrad.ensemble", "resgrad.experiments.ensemble")
register("resgrad.transformer", "resgrad.experiments.transformer")
register("resgrad.sweep", "resgrad.experiments.sweep")
register("resgrad.diagnose", "resgrad.experiments.diagnose")
register("resgrad.study", "resgrad.experiments.study")
register("resgrad.designs", "resgrad.experiments.designs")
register("resgrad.pretrained", "resgrad.experiments.pretrained")

from .flow import FlowConfig, run_flow  # noqa: E402  (the 0.1 names, after the registry they use)

__all__ = ["FlowConfig", "run_flow", "run", "register", "registered", "experiment", "Context", "Progress", "Lazy"]
