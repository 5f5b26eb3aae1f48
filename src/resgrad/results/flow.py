"""FlowResult: what ``experiments/flow.py`` measures (gradient flow at initialisation).

Conventions (also in every file's ``conventions``): block 0 is nearest the input; the
profile is the gradient of the loss w.r.t. each block's input; ``ratio_first_last`` =
‖∂L/∂x_0‖ / ‖∂L/∂x_{L-1}‖ (< 1: the gradient shrinks toward the input); ``slope`` is the
least-squares slope of log10 RMS against blocks crossed backward (decades per block);
``decades`` = slope x (L-1). Verdicts: :func:`resgrad.verdicts.flow_verdict`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ..schema import Num, Record, Result

__all__ = ["FlowResult", "FlowProfile", "FlowMeasurement", "FlowGroup", "FlowData", "FlowThresholds",
           "FlowSummary", "ArchPick", "LargestDepth", "BnPlain", "DepthTrend", "Signal", "ShatteringRow",
           "SpectrumRow", "ShatteringFit", "FlowChunk"]

Verdict = Literal["vanishing", "healthy", "exploding", "non-finite"]


@dataclass
class FlowProfile(Record):
    names: list[str]  # block module names, block 0 (input side) first
    numel: list[int]  # elements of each block's input gradient (whole batch)
    log10_norm: list[Num]  # log10 ‖∂L/∂x_l‖ over the batch tensor
    log10_rms: list[Num]  # log10 (norm / sqrt(numel))
    norm: list[Num]  # 10 ** log10_norm (0.0 below 1e-320)
    rms: list[Num]


@dataclass
class FlowMeasurement(Record):
    """One (config, seed) of the grid."""

    family: str  # "mlp" or "he2015"
    arch: str  # "plain" or "residual"
    norm: str  # "none" or "batch"
    act: str  # activation
    init: str  # "he" or "xavier"
    depth: int  # blocks
    layers: int  # weight layers (he2015: 6n+2; mlp: blocks + 2)
    seed: int
    train_steps: int  # SGD steps before measuring (0: at initialisation)
    dtype: str  # "float32", or "float64" where float32 overflowed
    loss: Num
    finite: bool  # the loss and every norm were finite
    profile: FlowProfile
    log10_ratio: Num  # log10 ratio_first_last
    ratio_first_last: Num
    slope: Num  # decades per block crossed backward (negative: vanishing)
    group: int  # index into FlowResult.groups
    slope_ci: tuple[float, float] | None  # the group's CI across seeds (None with one seed)
    decades: Num  # the group's slope x (L-1)
    verdict: Verdict  # the group's verdict


@dataclass
class FlowGroup(Record):
    """One config of the grid over all its seeds."""

    family: str
    arch: str
    norm: str
    act: str
    init: str
    depth: int
    layers: int
    seeds: list[int]
    slope: Num  # mean over seeds
    slope_ci: tuple[float, float] | None  # Student t across seeds at FlowThresholds.ci_level
    decades: Num
    log10_ratio: Num  # mean over seeds
    ratio_first_last: Num  # geometric mean over seeds
    verdict: Verdict
    profile_log10_rms: list[Num]  # mean over seeds, per block


@dataclass
class FlowData(Record):
    name: str
    input_shape: list[int]
    num_classes: int
    batch_size: dict[str, int]  # examples in the measured batch per family


@dataclass
class FlowThresholds(Record):
    decades: float  # |decades| at least this to call a gradient vanishing/exploding
    ci_level: float  # ... with the slope's CI across seeds excluding 0 at this level


@dataclass
class ArchPick(Record):
    log10_ratio: Num
    decades: Num
    verdict: Verdict


@dataclass
class LargestDepth(Record):
    family: str
    norm: str
    act: str
    init: str
    depth: int
    plain: ArchPick | None = None
    residual: ArchPick | None = None


@dataclass
class BnPlain(Record):
    family: str
    act: str
    init: str
    depth: int
    log10_ratio: Num
    decades: Num
    verdict: Verdict


@dataclass
class DepthTrend(Record):
    family: str
    arch: str
    norm: str
    act: str
    init: str
    depths: list[int]
    decades: list[Num]
    rate_per_block: Num  # least-squares slope of decades on depth - 1


@dataclass
class FlowSummary(Record):
    largest_depth: list[LargestDepth]  # plain vs residual at each family's deepest setting
    bn_plain: list[BnPlain]  # BN plain nets at every depth (He et al. 2015 §4.1 vs Philipp et al. 2018)
    depth_trend: list[DepthTrend]
    verdict_counts: dict[str, dict[str, int]]  # arch -> verdict -> groups


@dataclass
class ShatteringRow(Record):
    """Gradient correlation at nearby inputs (Balduzzi et al. 2017) for one config over seeds."""

    family: str
    arch: str
    norm: str
    act: str
    init: str
    depth: int  # blocks
    layers: int
    seeds: list[int]
    neighbor: Num  # mean over seeds of the lag-1 correlation of input gradients along the line
    neighbor_seeds: list[Num]
    autocorrelation: list[Num]  # mean over seeds, lag 0 first
    points: int  # inputs along the line


@dataclass
class SpectrumRow(Record):
    """Singular values of the input-output Jacobian (Pennington et al. 2017) for one config."""

    family: str
    arch: str
    norm: str
    act: str
    init: str
    depth: int
    layers: int
    seeds: list[int]
    examples: int
    sigma_max: Num  # means over examples and seeds
    sigma_min: Num
    condition: Num  # median over examples of sigma_max / sigma_min
    log10_mean: Num  # mean of log10 singular values
    q10: Num  # quantiles of all singular values
    median: Num
    q90: Num
    hist_edges: list[float]  # log10 edges shared by every row
    hist: list[Num]  # density per bin, mean over seeds


@dataclass
class ShatteringFit(Record):
    family: str
    arch: str
    norm: str
    act: str
    init: str
    depths: list[int]
    neighbor: list[Num]
    used: int  # depths whose correlation lies above the floor and entered the fits
    floor: float  # the white-noise floor below which a correlation carries no trend
    log2_slope: Num  # least-squares slope of log2(neighbor) on depth (plain nets, Balduzzi: about -1)
    power: Num  # least-squares slope of ln(neighbor) on ln(depth) (skips + BN, Balduzzi: about -1/2)


@dataclass
class Signal(Record):
    """Shattering and the Jacobian spectrum for plain and residual twins at a few depths."""

    config: dict[str, Any]
    seconds: float
    shattering: list[ShatteringRow]  # experiments/signal.py says how each number is measured
    spectrum: list[SpectrumRow]
    fits: list[ShatteringFit]


def _v1_to_v2(d: dict[str, Any]) -> dict[str, Any]:
    # resgrad 0.1 measured no shattering or Jacobian spectrum.
    return {**d, "signal": None}


@dataclass
class FlowResult(Result):
    """The gradient-flow grid at initialisation (``resgrad flow``, the study's first stage)."""

    SCHEMA = "resgrad.flow"
    VERSION = 2
    EXPERIMENT = "flow"
    MIGRATIONS = {1: _v1_to_v2}

    config: dict[str, Any]  # the FlowConfig as a dict
    environment: dict[str, Any]  # versions and hardware (resgrad.io.environment)
    data: FlowData
    conventions: dict[str, str]  # the definitions above, in words
    thresholds: FlowThresholds
    configs: list[FlowMeasurement]  # one per (config, seed)
    groups: list[FlowGroup]  # one per config over seeds
    summary: FlowSummary
    figures: list[str] = field(default_factory=list)  # files written beside results.json (legacy; now [])
    wall_time_s: Num = None
    signal: Signal | None = None  # None when the config measured none


@dataclass
class FlowChunk(Result):
    """One part of a flow grid measured as its own task (``experiments/flow.py``, with an executor).

    Written in the flow folder's ``chunks/`` so a killed grid reuses its finished parts; a part
    whose ``config`` (the grid's config with the chunk's place in it) differs is measured again.
    Not a report input: the FlowResult combines the parts in grid order.
    """

    SCHEMA = "resgrad.flow-chunk"
    VERSION = 1
    EXPERIMENT = "flow-chunk"

    config: dict[str, Any]  # {"flow": the grid's comparable config, "part": "grid" | "signal", "chunk", "chunks"}
    groups: list[int]  # grid groups measured here (indices into the grid), ascending
    configs: list[dict[str, Any]]  # the raw measurements of those groups, seeds in order (non-finite as null)
    signal: dict[str, Any] | None = None  # the "signal" part: measure_signal's output
