"""EnsembleResult: the ensemble view of a trained residual net and its plain twin (Veit et al. 2016).

``experiments/ensemble.py`` writes it; parts that were not run are None. Errors are
fractions; norms are floats. A WINDOW (:class:`Window`) is the shortest range of path
lengths holding ``mass`` of the gradient magnitude.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..schema import Num, Record, Result

__all__ = ["EnsembleResult", "Window", "ModelInfo", "ExactPaths", "ExactPlain", "SampledPaths", "Effective",
           "LesionBlock", "Lesion", "Deletion", "ReorderTrial", "Reorder", "ShortPath"]


@dataclass
class Window(Record):
    lo: int
    hi: int
    mass: float  # share of the magnitude asked for
    held: Num  # share actually inside [lo, hi]
    share_of_paths: Num  # of all 2^n paths
    n: int


@dataclass
class ModelInfo(Record):
    name: str | None
    source: str  # "object", "run", "trained" or "initialisation"
    run_dir: str | None
    params: int
    blocks: int
    residual_blocks: int
    test_error: Num = None


@dataclass
class ExactPaths(Record):
    """The gradient at the first block's input split by path length (resgrad.paths.decompose)."""

    n: int
    lengths: list[int]
    counts: list[int]
    norms: list[Num]  # ‖g_k‖ over the batch
    example_norms: list[Num]  # mean over examples of ‖g_k[b]‖
    total_norm: Num
    rel_error: Num  # ‖Σ_k g_k − autograd‖ / ‖autograd‖
    batchnorm: str  # "eval" or "train"
    examples: int
    dtype: str
    seconds: float
    effective: Window
    vjp: str | None = None  # how the VJPs ran ("batched" or "loop")
    input_norms: list[Num] | None = None


@dataclass
class ExactPlain(Record):
    n: int
    norm: Num
    example_norm: Num
    examples: int


@dataclass
class SampledPaths(Record):
    """Veit et al.'s sampled single-path magnitudes (resgrad.paths.sample)."""

    n: int
    lengths: list[int]
    counts: list[int]
    mean: list[Num]
    std: list[Num]
    q10: list[Num]
    median: list[Num]
    q90: list[Num]
    total: list[Num]  # count x mean
    samples: int  # per length
    examples: int
    method: str
    batchnorm: str
    seconds: float
    note: str
    effective: Window | None = None


@dataclass
class Effective(Record):
    mass: float
    exact: Window
    sampled: Window | None
    explanation: str


@dataclass
class LesionBlock(Record):
    block: int
    stage: int
    kind: str  # "residual" or "plain"
    downsample: bool
    error: float
    delta: float  # error - baseline


@dataclass
class Lesion(Record):
    model: str | None
    baseline: float
    blocks: list[LesionBlock]


@dataclass
class Deletion(Record):
    model: str | None
    k: list[int]
    mean: list[Num]
    std: list[Num]
    errors: list[list[float]]  # per k, per trial
    trials: int


@dataclass
class ReorderTrial(Record):
    tau: float
    error: float


@dataclass
class Reorder(Record):
    model: str | None
    swaps: list[int]
    kendall_tau: list[Num]  # mean per number of swaps
    mean: list[Num]
    std: list[Num]
    trials: list[list[ReorderTrial]]
    plain: Reorder | None = None


@dataclass
class ShortPath(Record):
    active_blocks: int
    n: int
    test_error: float  # all blocks on, BatchNorm statistics re-estimated with all blocks
    test_error_as_trained: float
    bn_recalibrated: bool
    full_test_error: Num
    epochs: int
    run_dir: str | None


@dataclass
class EnsembleResult(Result):
    """Paths, lesions and reordering of one residual net (Veit et al. 2016, arXiv 1605.06431)."""

    SCHEMA = "resgrad.ensemble"
    VERSION = 1
    EXPERIMENT = "ensemble"

    config: dict[str, Any]  # the EnsembleConfig as a dict
    environment: dict[str, Any]
    model: str | None  # the residual net's display name
    plain_model: str | None
    data: str  # dataset name
    models: dict[str, ModelInfo]  # "residual" and, with a twin, "plain"
    n: int | None = None  # residual blocks (set when paths were measured)
    lengths: list[int] | None = None
    counts: list[int] | None = None
    path_fraction: list[float] | None = None
    exact: ExactPaths | None = None
    exact_plain: ExactPlain | None = None
    sampled: SampledPaths | None = None
    effective: Effective | None = None
    reference: dict[str, Any] | None = None  # Veit et al.'s figures (experiments.ensemble.VEIT2016)
    lesion: dict[str, Lesion] | None = None  # "residual" / "plain"
    deletion: dict[str, Deletion] | None = None
    reorder: Reorder | None = None
    short_path: ShortPath | None = None
    notes: list[str] = field(default_factory=list)
    timing: dict[str, float] = field(default_factory=dict)
