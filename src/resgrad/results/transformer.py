"""TransformerResult: pre-LN vs post-LN vs no-skip Transformer twins (``experiments/transformer.py``).

Gradient flow at initialisation across depth (Xiong et al. 2020, arXiv 2002.04745, Fig. 3),
training with and without learning-rate warm-up, the ensemble view of the trained pre-LN
net over its 2L units (a nested :class:`EnsembleResult`), and layer deletion and
reordering (Gromov et al. 2024; Men et al. 2024; Sun et al. 2024). Errors are fractions;
norms are floats, None where not finite. Unit ``i`` is layer ``i // 2``'s attention (even
``i``) or MLP (odd ``i``) sublayer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ..schema import Num, Record, Result
from .degradation import FinalErrors, GradProfile
from .ensemble import EnsembleResult
from .metrics import MetricsRow

__all__ = ["TransformerResult", "FlowRow", "TransformerFlow", "TransformerRun", "TrainCell", "Consecutive",
           "LayerReorder", "LayerLesion"]

Kind = Literal["preln", "postln", "noskip"]


@dataclass
class FlowRow(Record):
    """One twin at one depth at initialisation, averaged over the flow seeds."""

    kind: Kind
    depth: int  # layers (2 units each)
    param_norms: list[Num]  # per unit: norm of the gradient of the unit's parameters
    layer_norms: list[Num]  # per layer: sqrt(attention² + MLP²) of the above
    stream_norms: list[Num]  # norm of the residual-stream gradient at each unit's input, then after the last
    growth: Num  # layer_norms[-1] / layer_norms[0]: > 1 grows toward the output (Xiong Fig. 3, post-LN)
    stream_ratio: Num  # stream_norms[0] / stream_norms[-1]: < 1 vanishes toward the input
    per_seed_growth: list[Num]


@dataclass
class TransformerFlow(Record):
    depths: list[int]
    seeds: list[int]
    batch: int  # training examples per measured step
    rows: list[FlowRow]
    seconds: float


@dataclass
class TransformerRun(Record):
    """One (twin, warm-up, seed) training run."""

    kind: Kind
    warmup: bool
    seed: int
    model: str  # registry name
    params: int
    run_dir: str
    history: list[MetricsRow]  # metrics.jsonl rows without gradient columns
    final: FinalErrors
    grad: list[GradProfile]  # block-input gradient norms on each epoch's first step
    diverged: bool  # a non-finite final loss


@dataclass
class TrainCell(Record):
    kind: Kind
    warmup: bool
    train_error: Num  # mean over seeds (finite ones)
    test_error: Num
    train_error_std: Num
    test_error_std: Num
    n_seeds: int
    diverged: int  # seeds whose loss went non-finite


@dataclass
class Consecutive(Record):
    """``k`` consecutive layers removed, at every start position (Gromov et al. 2024)."""

    k: int
    errors: list[Num]  # test error removing layers start..start+k-1, per start
    best: Num  # the lowest over starts (an oracle choice)
    mean: Num
    angular_start: int  # Gromov's choice: smallest angular distance between layer start's input and start+k's
    angular_error: Num  # the error of that choice


@dataclass
class LayerReorder(Record):
    """The middle layers (all but the first and the last) run in another order (Sun et al. 2024)."""

    layers: list[int]  # the layers moved
    reversed: Num  # test error with the middle layers reversed
    shuffled: list[Num]  # test error after each random permutation of them
    shuffled_mean: Num


@dataclass
class LayerLesion(Record):
    """Layer-level lesions of one trained twin (a layer: its attention and MLP units together)."""

    kind: Kind
    model: str
    layers: int
    base: Num  # test error with every layer
    single: list[Num]  # test error with layer l removed
    consecutive: list[Consecutive]
    reorder: LayerReorder | None  # None with fewer than 4 layers (no middle to reorder)
    chance: Num  # error of always predicting the most frequent test label


@dataclass
class TransformerResult(Result):
    """Pre-LN, post-LN and no-skip Transformer twins, at initialisation and trained."""

    SCHEMA = "resgrad.transformer"
    VERSION = 1
    EXPERIMENT = "transformer"

    config: dict[str, Any]  # the TransformerConfig as a dict
    environment: dict[str, Any]
    data: str  # dataset name
    task: Literal["classify", "lm"]
    layers: int  # depth of the trained twins
    params: int  # parameters of each twin (identical)
    flow: TransformerFlow
    runs: list[TransformerRun]
    cells: list[TrainCell]
    ensemble: EnsembleResult | None  # the trained pre-LN net (and its no-skip twin): paths and unit lesions
    lesions: dict[str, LayerLesion]  # by kind
    reference: dict[str, Any]  # the papers' claims (experiments.transformer.REFERENCE)
    notes: list[str] = field(default_factory=list)
    timing: dict[str, float] = field(default_factory=dict)
