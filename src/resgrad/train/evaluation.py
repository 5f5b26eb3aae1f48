"""Test loss and error: :func:`evaluate`, and the sharded evaluation ``fit`` runs after each epoch."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import distributed
from ..data import DataBundle
from .config import TrainConfig
from .device import autocast, model_device

__all__ = ["evaluate"]


@torch.no_grad()
def evaluate(
    model: nn.Module, data: DataBundle, *, batch_size: int = 1000, device: str | torch.device | None = None
) -> dict[str, float]:
    """Mean cross-entropy and error (fraction wrong) on the test split, in eval mode.

    ``device``: where to run (default: where the model's parameters are). The model's
    train/eval mode is restored afterwards.
    """
    dev = torch.device(device) if device is not None else model_device(model)
    return _evaluate(model, data, batch_size, dev, distributed.Dist())


def _evaluate_on(
    model: nn.Module, data: DataBundle, batch_size: int, dev: torch.device, ddp: distributed.Dist,
    config: TrainConfig,
) -> dict[str, float]:
    """:func:`evaluate` inside fit: under torchrun sharded over ranks (below), in the run's precision
    and memory format (so the test numbers are those of the model as it trains)."""
    ddp.sync_buffers(model)
    return _evaluate(model, data, batch_size, dev, ddp, config.amp, config.channels_last)


@torch.no_grad()
def _evaluate(
    model: nn.Module, data: DataBundle, batch_size: int, dev: torch.device, ddp: distributed.Dist,
    amp: str | None = None, channels_last: bool = False,
) -> dict[str, float]:
    # Under torchrun the test batches are dealt round-robin to the ranks (every rank holds
    # rank 0's weights and BN statistics, see Dist.sync_buffers) and the sums are all-reduced,
    # so every rank gets the same numbers; single-process up to the order of the float64 sums.
    # Scored labels: one per example for a classifier, one per position for token targets
    # ((B, T) labels against (B, V, T) logits, resgrad.tokens.TokenView).
    n = data.y_test.numel()
    if n == 0:
        raise ValueError(f"dataset {data.name!r} has no test examples to evaluate")
    acc = torch.float32 if dev.type == "mps" else torch.float64
    loss_sum = torch.zeros((), dtype=acc, device=dev)
    wrong = torch.zeros((), dtype=torch.long, device=dev)
    was_training = model.training
    model.eval()
    try:
        for i, (xb, yb) in enumerate(data.batches(batch_size, train=False)):
            if i % ddp.world != ddp.rank:
                continue
            xb, yb = xb.to(dev, non_blocking=True), yb.to(dev, non_blocking=True)
            if channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            with autocast(amp, dev):
                logits = model(xb)
            loss_sum += F.cross_entropy(logits.float() if amp else logits, yb, reduction="sum").to(acc)
            wrong += (logits.argmax(1) != yb).sum()
    finally:
        model.train(was_training)
    sums = torch.stack([loss_sum, wrong.to(acc)])
    loss, n_wrong = ddp.all_sum_(sums).tolist()
    return {"loss": loss / n, "error": n_wrong / n}
