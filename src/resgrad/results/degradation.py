"""DegradationResult: plain vs residual twins of growing depth, one recipe (``experiments/degradation.py``).

Errors are fractions in [0, 1]. ``grad`` holds, per epoch, the gradient norm at every
block's input on the epoch's first step (the first entry is the net at initialisation).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from ..schema import Num, Record, Result
from .metrics import MetricsRow

__all__ = ["DegradationResult", "TrainedRun", "FinalErrors", "GradProfile", "ArchCell", "DepthRow", "DataInfo"]


@dataclass
class FinalErrors(Record):
    train_loss: Num
    train_error: Num
    test_loss: Num
    test_error: Num


@dataclass
class GradProfile(Record):
    epoch: int
    block_norms: list[Num]  # input side first
    ratio_first_last: Num


@dataclass
class TrainedRun(Record):
    """One (depth, arch, seed) training run."""

    model: str  # registry name
    arch: Literal["plain", "residual"]
    depth: int  # layers (6n+2)
    seed: int
    params: int
    run_dir: str
    history: list[MetricsRow]  # metrics.jsonl rows (epoch, train_loss, train_error, test_*, lr, seconds, steps)
    final: FinalErrors
    grad: list[GradProfile]


@dataclass
class ArchCell(Record):
    model: str
    train_error: Num  # mean over seeds (finite ones)
    test_error: Num
    train_error_std: Num  # sample std over seeds (0 with one seed)
    test_error_std: Num
    n_seeds: int


@dataclass
class DepthRow(Record):
    depth: int
    plain: ArchCell
    residual: ArchCell


@dataclass
class DataInfo(Record):
    name: str
    input_shape: list[int]
    num_classes: int
    n_train: int
    n_test: int


@dataclass
class DegradationResult(Result):
    """Final errors and gradient profiles of every training run (He et al. 2015 §4.2, Fig. 1/6)."""

    SCHEMA = "resgrad.degradation"
    VERSION = 1
    EXPERIMENT = "degradation"

    config: dict[str, Any]  # the DegradationConfig as a dict (its train: the TrainConfig)
    data: DataInfo
    environment: dict[str, Any]
    runs: list[TrainedRun]
    table: list[DepthRow]  # one row per depth, shallow first

    @property
    def epochs(self) -> int | None:
        """Epochs every net trained for (the recipe's)."""
        e = (self.config.get("train") or {}).get("epochs")
        return int(e) if isinstance(e, int) else None

    @property
    def seeds(self) -> list[int]:
        return [int(s) for s in self.config.get("seeds") or []]
