"""PretrainedResult: the seed's question asked of real pretrained models on real text (``experiments/pretrained.py``).

One :class:`ModelReport` per model: gradient flow and the branch Jacobians per unit (unit ``i``
is layer ``i // 2``'s attention, even ``i``, or MLP, odd ``i``), the residual stream per
layer (norms, Gromov et al.'s angular distances, ShortGPT's Block Influence), the gradient
split by path length over all 2L units, and whole layers removed or reordered. A lesion's
score is ``{"loss", "perplexity"}`` for a language model and ``{"loss", "cosine",
"retrieval"}`` for a sentence encoder (cosine to the full model's embeddings; retrieval
accuracy on neighbouring-sentence pairs). Norms are floats, None where not finite.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ..schema import Num, Record, Result

__all__ = ["PretrainedResult", "ModelReport", "Flow", "StreamView", "PathView", "Removal", "Consecutive",
           "Reorder", "Skipped"]

Score = dict[str, Num]


@dataclass
class Flow(Record):
    """One recorded forward and backward of the model's own loss (eval mode)."""

    param_norms: list[Num]  # per unit: ||dL/dW|| of its weights (norm layers left out)
    stream_norms: list[Num]  # ||dL/dh|| at each unit's input, then after the last unit (2L + 1)
    stream_ratio: Num  # stream_norms[0] / stream_norms[-1]: < 1 vanishes toward the input, > 1 grows
    param_growth: Num  # last layer's weight-gradient norm / the first's (Xiong et al. Fig. 3's slope)
    jacobian: list[Num]  # per unit: mean ||J_F^T u|| / ||u|| over Gaussian probes, the branch's RMS gain
    jacobian_std: list[Num]
    cosine: list[Num]  # per unit: mean over tokens of cos(input, output)
    skip_norms: list[Num]  # the skip's part of the gradient at the unit's input
    branch_norms: list[Num]  # the branch's part
    branch_share: list[Num]  # branch / (skip + branch)
    loss: Num
    probes: int


@dataclass
class StreamView(Record):
    norms: list[Num]  # mean token norm of the residual stream at each layer's input, then after the last
    rms: list[Num]  # root mean square of its entries
    growth: Num  # norms[-1] / norms[0]
    angular: list[list[Num]]  # (L+1)^2: angular distance between layer l's input and layer m's (Gromov eq. 7)
    block_influence: list[Num]  # per layer: 1 - mean cos(input, output) (Men et al. 2024 eq. 1)


@dataclass
class PathView(Record):
    exact: dict[str, Any]  # resgrad.paths.Decomposition.to_dict(): norms per length, rel_error, effective window
    sampled: dict[str, Any] | None  # resgrad.paths.Sampled.to_dict(), or None when not sampled
    passes: Num  # backward-pass equivalents of the exact decomposition, counted: (n + 1) / 2 + 1
    measured_passes: Num  # its time, less the forward, over one plain backward's
    forward_seconds: Num
    backward_seconds: Num


@dataclass
class Consecutive(Record):
    """``k`` consecutive layers removed, the start chosen three ways."""

    k: int
    fraction: float  # k / L
    scores: list[Score]  # per start
    oracle_start: int  # the best start (tried all)
    angular_start: int  # smallest angular distance between layer s's input and s+k's (Gromov et al.)
    influence_start: int  # smallest summed Block Influence over the window (ShortGPT, kept consecutive)
    oracle: Score
    angular: Score
    influence: Score


@dataclass
class Reorder(Record):
    layers: list[int]  # the middle layers (all but the first and the last)
    skipped: Score  # all of them removed
    reversed: Score
    shuffled: list[Score]


@dataclass
class Removal(Record):
    layers: int
    primary: str  # the score a lesion is judged by: "perplexity" or "cosine"
    full: Score
    single: list[Score]  # layer l removed
    consecutive: list[Consecutive]
    reorder: Reorder | None  # None with fewer than 4 layers


@dataclass
class Skipped(Record):
    spec: str
    reason: str  # one line: why (the wheel is not installed, and the pip command)


@dataclass
class ModelReport(Record):
    spec: str
    task: Literal["causal-lm", "sentence-encoder"]
    norm: str  # "pre" (pre-LN/RMSNorm) or "post" (post-LN)
    layers: int
    units: int
    params: int
    info: dict[str, Any]  # provenance: file, sha256, wheel, version, quantisation
    batch: dict[str, Any]  # the text: corpus name/sha256, seq_len, rows, tokens
    flow: Flow
    stream: StreamView
    paths: PathView | None
    removal: Removal | None
    seconds: dict[str, float]


@dataclass
class PretrainedResult(Result):
    SCHEMA = "resgrad.pretrained"
    VERSION = 1
    EXPERIMENT = "pretrained"

    config: dict[str, Any]  # the PretrainedConfig as a dict
    environment: dict[str, Any]
    corpus: dict[str, Any]  # name, chars, sha256
    models: list[ModelReport]
    skipped: list[Skipped]  # specs not measured (missing wheels), each with its one line
    reference: dict[str, Any]  # the papers' claims and figures
    notes: list[str] = field(default_factory=list)
    timing: dict[str, float] = field(default_factory=dict)
