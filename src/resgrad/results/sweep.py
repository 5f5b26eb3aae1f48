"""SweepResult: a grid of training runs and its per-cell statistics over seeds (``experiments/sweep.py``).

A *cell* is one (dataset, model) pair; its seeds are the repeats. For each cell and each
final metric (train/test error and loss) the result holds the mean, the sample std and
a Student-t 95% interval over the seeds (None with one seed), and the first/last
gradient ratio ‖∂L/∂x_first block‖ / ‖∂L/∂x_last block‖ at initialisation and after
training, summarised in decades (log10) because ratios span orders of magnitude.
Errors are fractions in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..schema import Num, Record, Result
from .degradation import DataInfo, FinalErrors, GradProfile
from .metrics import MetricsRow

__all__ = ["SweepResult", "SweepRun", "SweepCell", "Stat", "METRICS"]

METRICS = ("train_error", "test_error", "train_loss", "test_loss")  # the final metrics each cell summarises


@dataclass
class Stat(Record):
    """One quantity over a cell's seeds."""

    mean: Num  # of the finite values
    std: Num  # sample std (n - 1); 0 with one value
    ci_low: Num  # Student-t interval for the mean at ``level``; None with < 2 finite values
    ci_high: Num
    level: float  # 0.95
    n: int  # seeds
    n_finite: int  # seeds whose value was finite (a diverged run counts here, not in the mean)
    values: list[Num]  # per seed, in the cell's seed order


@dataclass
class SweepRun(Record):
    """One (dataset, model, seed) training run of the grid."""

    dataset: str
    model: str  # registry name
    arch: str  # "plain", "residual", or "other" for a model without a twin naming
    depth: int | None  # layers (He et al.) or blocks (MLPs), from the name; None when it has none
    seed: int
    params: int
    run_dir: str
    history: list[MetricsRow]  # metrics.jsonl rows without the gradient columns
    final: FinalErrors
    grad: list[GradProfile]  # one per epoch (first entry: the net at initialisation)


@dataclass
class SweepCell(Record):
    """The seeds of one (dataset, model)."""

    dataset: str
    model: str
    arch: str
    depth: int | None
    seeds: list[int]
    metrics: dict[str, Stat]  # METRICS -> over seeds
    log10_grad_ratio_init: Stat  # log10 first/last block-input gradient ratio at initialisation (< 0: vanishing)
    log10_grad_ratio_final: Stat  # the same on the last epoch's first step
    grad_ratio_init: Num  # 10 ** mean log10 ratio: the geometric mean over seeds
    grad_ratio_final: Num


@dataclass
class SweepResult(Result):
    """Final errors and gradient ratios of a grid of runs, with statistics per cell."""

    SCHEMA = "resgrad.sweep"
    VERSION = 1
    EXPERIMENT = "sweep"

    config: dict[str, Any]  # the SweepConfig as a dict
    environment: dict[str, Any]
    data: list[DataInfo]  # one per dataset, in config order
    runs: list[SweepRun]  # dataset, then model, then seed order (the grid's, not completion's)
    cells: list[SweepCell]  # one per (dataset, model), in grid order

    def cell(self, dataset: str, model: str) -> SweepCell:
        """The cell of ``model`` on ``dataset`` (KeyError naming the cells otherwise)."""
        for c in self.cells:
            if c.dataset == dataset and c.model == model:
                return c
        raise KeyError(f"no cell {dataset}/{model}; cells: {', '.join(f'{c.dataset}/{c.model}' for c in self.cells)}")
