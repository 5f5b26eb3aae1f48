"""DiagnoseResult: per-layer gradient norms of any model on a few batches (``resgrad diagnose``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..schema import Num, Record, Result

__all__ = ["DiagnoseResult", "LayerRow", "BlockSummary", "Cause", "Trend"]


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
    decades_from_median: Num = None  # version 1 files: flags were judged against the median RMS
    output_norm: Num = None  # ‖h‖ of the module's output
    sensitivity: Num = None  # ‖∂L/∂h‖·‖h‖: what the trend is fitted on
    decades_from_trend: Num = None  # log10 sensitivity minus the trend line at this row
    decades_from_output: Num = None  # ... minus the trend line at its output end
    cause: str | None = None  # the kind of the Cause that explains this row's flags (None: unflagged or unknown)


@dataclass
class BlockSummary(Record):
    profile_rms: list[Num]  # gradient RMS at each block's input
    verdict: str
    ratio_first_last: Num = None
    slope: Num = None
    decades: Num = None


@dataclass
class Trend(Record):
    """The gradient's trend through depth: a least-squares line of log10 ‖∂L/∂h‖·‖h‖ along the
    forward order, judged as the flow experiment judges a net."""

    measure: str
    slope: Num  # decades per row crossed backward (negative: smaller toward the input)
    decades: Num  # slope * (rows - 1)
    rows: int  # rows the line is fitted on (the main path)
    left_out: int  # rows the threshold or more below the line, left out of the fit
    verdict: str  # vanishing / healthy / exploding / non-finite (resgrad.verdicts.flow_verdict)
    threshold: float
    first: str  # the fitted rows' first and last names
    last: str


@dataclass
class Cause(Record):
    """A known cause behind some flags, said in words with the modules it concerns."""

    kind: str  # "zero-init-branch", "layer-scale", "dead-relu", "no-grad", "non-finite", "attention-scores",
    #            "saturating-activation", "no-known-cause"
    modules: list[str]
    message: str


@dataclass
class DiagnoseResult(Result):
    SCHEMA = "resgrad.diagnose"
    VERSION = 2  # 2: the trend, and the rows' sensitivity, decades from the trend and cause
    EXPERIMENT = "diagnose"
    MIGRATIONS = {1: lambda d: d}  # every new field has a default: a version-1 file reads as it is

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
    trend: Trend | None = None
