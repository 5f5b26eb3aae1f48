"""DesignsResult: residual designs side by side, at initialisation and trained (``experiments/designs.py``).

At initialisation, per design and depth: the per-unit weight-gradient norms and the
residual-stream gradient (as the Transformer study measures them), Amax of the stream-mixing
matrices where a design has them (the mHC paper's Fig. 3 and 7), a Signal Propagation Plot
(Brock et al. 2021 Fig. 1) and the token cosine across depth (Noci et al. 2022). Trained: a
character-level LM per Transformer design (two depths, seeds) and MNIST-1D (or CIFAR-10) per CNN
design: final validation loss / test error with a t-interval over seeds, steps to a target
loss, gradient spikes, divergence. Norms are floats, None where not finite.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..schema import Num, Record, Result

__all__ = ["DesignsResult", "DesignInit", "DesignRun", "DesignCell", "Stat", "DesignInfo"]


@dataclass
class DesignInfo(Record):
    """What a design is and what its paper claims (``resgrad.nets.designs.DESIGNS``, or the built-in twins)."""

    name: str
    family: str  # "transformer" or "cnn"
    paper: str
    arxiv: str
    claim: str
    title: str = ""  # for tables: "DeepNorm"
    streams: int = 1  # residual streams (hyper-connections: 4)
    params: dict[str, int] = field(default_factory=dict)  # parameters at each trained depth ("6": ...)


@dataclass
class DesignInit(Record):
    """One design at one depth at initialisation (means over the init seeds)."""

    design: str
    family: str
    depth: int  # layers (Transformer: 2 units each) or the CNN's depth
    param_norms: list[Num]  # per unit: the norm of the gradient of its weights (LayerNorm gains left out)
    stream_norms: list[Num]  # ‖∂L/∂h‖ at each unit's input, then after the last
    growth: Num  # last / first unit pair's (Transformer layer's) weight-gradient norm
    stream_ratio: Num  # stream_norms[0] / stream_norms[-1]
    amax_forward: Num  # the mHC paper's Amax (None: the design mixes no streams)
    amax_backward: Num
    sq_mean: list[Num]  # SPP: average channel squared mean of each unit's output
    variance: list[Num]  # SPP: average channel variance of each unit's output
    branch_variance: list[Num]  # SPP: the residual branch output's average channel variance
    token_cosine: list[Num]  # Transformer: mean pairwise token cosine entering unit 0, then after each unit


@dataclass
class Stat(Record):
    """Mean, sd and t-interval over seeds (finite values only; n counts every seed)."""

    mean: Num
    std: Num
    ci_low: Num
    ci_high: Num
    level: float
    n: int
    n_finite: int


@dataclass
class DesignRun(Record):
    """One (design, depth, seed, lr) training run."""

    design: str
    family: str
    depth: int
    seed: int
    lr: float
    model: str  # the registry name it was built from
    params: int
    run_dir: str
    final: dict[str, Num]  # train_loss, train_error, test_loss, test_error (None after a divergence)
    curve: list[Num]  # the validation (test-split) loss after each epoch
    steps: int  # training steps taken
    spikes: list[int]  # steps whose gradient norm exceeded SPIKE_K x the running median
    steps_to_target: int | None  # steps until the smoothed training loss reached the cell's target (None: never)
    diverged: bool
    diverged_step: int | None
    loss_trace: list[Num] = field(default_factory=list)  # the smoothed training loss, about 100 points
    amax: list[Num] = field(default_factory=list)  # [forward, backward] Amax of the trained net (stream designs)


@dataclass
class DesignCell(Record):
    """One (design, depth) over its seeds, at the design's chosen lr."""

    design: str
    family: str
    depth: int
    lr: float
    metric: str  # "test_loss" (LM: validation loss, nats per character) or "test_error" (CNN)
    final: Stat  # the metric over seeds
    target: Num  # the target training loss of this depth (LM) or None
    steps_to_target: Stat  # over the seeds that reached it
    reached: int  # seeds that reached the target
    spikes: Stat  # spike counts over seeds
    diverged: int  # seeds whose loss went non-finite
    n_seeds: int


@dataclass
class DesignsResult(Result):
    """Residual designs side by side: at initialisation and trained over seeds."""

    SCHEMA = "resgrad.designs"
    VERSION = 1
    EXPERIMENT = "designs"

    config: dict[str, Any]  # the DesignsConfig as a dict
    environment: dict[str, Any]
    designs: list[DesignInfo]
    init: list[DesignInit]
    runs: list[DesignRun]
    cells: list[DesignCell]
    data: dict[str, str] = field(default_factory=dict)  # "transformer"/"cnn" -> dataset name
    notes: list[str] = field(default_factory=list)
    timing: dict[str, float] = field(default_factory=dict)
