"""The learning-rate schedule and the optimizer a :class:`TrainConfig` describes."""

from __future__ import annotations

import torch
from torch import nn

from .config import TrainConfig

__all__ = ["milestone_steps", "lr_factor", "make_optimizer"]


def milestone_steps(config: TrainConfig, total: int) -> list[int]:
    """The steps where lr is multiplied by gamma: fractions of the ``total`` steps actually run.

    So a max_steps run keeps the shape; never step 0 (a one-step run would otherwise run at
    the post-milestone lr).
    """
    return [max(1, round(m * total)) for m in config.milestones]


def lr_factor(config: TrainConfig, marks: list[int], step: int) -> float:
    """lr / config.lr for the 0-based ``step`` about to run: warm-up, then gamma per milestone passed."""
    if step < config.warmup_iters:
        if config.warmup_shape == "linear":
            return (step + 1) / config.warmup_iters
        return config.warmup_lr / config.lr
    return config.gamma ** sum(step >= m for m in marks)


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD with momentum (He et al. 2015 §4.2), or AdamW with decoupled weight decay."""
    if config.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=config.lr, betas=config.betas,
                                 weight_decay=config.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                           weight_decay=config.weight_decay, nesterov=config.nesterov)
