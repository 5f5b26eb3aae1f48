"""DiagnoseResult: per-layer gradient norms of any model on a few batches (``resgrad diagnose``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..schema import Num, Record, Result

__all__ = ["DiagnoseResult", "LayerRow", "BlockSummary", "Cause"]


@dataclass
class LayerRow(Record):
    """One module at the last measured step, in forward order."""

    name: str
    block: int | None
    grad_norm: Num  # ‖∂L/∂output‖
    grad_rms: Num
    numel: int | None
    nonfinite: int  # non-finite entries in its output and parameter gradients
    param_grad_norm: Num  # ‖∂L/∂w‖ over the module's own parameters
    weight_norm: Num
    params: int
    flags: list[str]  # "vanishing", "exploding", "zero", "non-finite", "no grad"
    decades_from_median: Num = None


@dataclass
class BlockSummary(Record):
    profile_rms: list[Num]  # gradient RMS at each block's input
    verdict: str
    ratio_first_last: Num = None
    slope: Num = None
    decades: Num = None


@dataclass
class Cause(Record):
    """A known cause behind some flags, said in words with the modules it concerns."""

    kind: str  # "zero-init-branch", "dead-relu", "no-grad", "non-finite"
    modules: list[str]
    message: str


@dataclass
class DiagnoseResult(Result):
    SCHEMA = "resgrad.diagnose"
    VERSION = 1
    EXPERIMENT = "diagnose"

    spec: str
    kind: str  # how the SPEC was resolved: registry, torchvision, factory, run
    model: str  # class name
    parameters: int
    input_shape: list[int]
    num_classes: int | None
    data: str  # dataset name or "random"
    batch_size: int
    steps: int
    seed: int
    losses: list[Num]
    thresholds: dict[str, Any]
    layers: list[LayerRow]
    blocks: BlockSummary | None
    records: list[dict[str, Any]]  # GradientMonitor's tidy rows
    environment: dict[str, Any]
    causes: list[Cause] = field(default_factory=list)
