"""What the path tools share: finding the blocks, calling the loss, keeping the model as it was."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..nets.adapters import SUPPORTED
from ..nets.blocks import Block, Residual, blocks, residual_blocks

__all__ = ["LossFn", "chain", "call_loss", "preserved", "as_input", "normalisations", "has_batchnorm", "mode_phrase"]

# loss(output) -> scalar, or loss(output, targets) -> scalar when targets are given.
LossFn = Callable[..., Tensor]


def chain(model: nn.Module) -> tuple[list[Residual], list[Block]]:
    """(Residual blocks, all blocks) of ``model`` in forward order; an error when it has none."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, received {type(model).__name__}")
    every = blocks(model)
    if not every:
        raise ValueError(
            f"{type(model).__name__} has no resgrad blocks (Residual/Plain), so it has no paths to "
            f"analyse; view it through resgrad.adapt(model) (supports {SUPPORTED}) or build one "
            "with resgrad.build"
        )
    busy = [i for i, b in enumerate(every) if b.lesioned or b.route is not None]
    if busy:
        raise ValueError(
            f"blocks {busy} have gates set (lesion/route); leave the `with resgrad.gates(...)` "
            "block before measuring paths"
        )
    return residual_blocks(model), every


def call_loss(loss: LossFn | None, out: Tensor, targets: Tensor | None) -> Tensor:
    """Evaluate the loss; default: summed cross-entropy against ``targets``."""
    if loss is None:
        if targets is None:
            raise ValueError("give a loss (callable(output) -> scalar) or targets for the default cross-entropy")
        value = F.cross_entropy(out, targets, reduction="sum")
    else:
        value = loss(out) if targets is None else loss(out, targets)
    if not isinstance(value, Tensor) or value.numel() != 1:
        got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise ValueError(f"the loss must return a scalar tensor, received {got}; reduce it (sum or mean)")
    return value.reshape(())


def as_input(model: nn.Module, inputs: Tensor) -> Tensor:
    """``inputs`` on the model's device, in its floating dtype (float64 models get float64)."""
    if not isinstance(inputs, Tensor):
        raise TypeError(f"inputs must be a tensor (B, ...), received {type(inputs).__name__}")
    p = next((t for t in model.parameters() if t.is_floating_point()), None)
    if p is None:
        return inputs
    x = inputs.to(p.device)
    return x.to(p.dtype) if x.is_floating_point() else x


# Normalisation layers by how they treat a batch: BatchNorm mixes the examples of a batch in
# train mode (Ioffe & Szegedy 2015); these normalise each example (or token) on its own.
_PER_EXAMPLE_NORMS = ("LayerNorm", "RMSNorm", "GroupNorm", "InstanceNorm")


def normalisations(model: nn.Module) -> list[str]:
    """The normalisation layer types ``model`` holds, by class name, in order of first use."""
    seen: dict[str, None] = {}
    for m in model.modules():
        name = type(m).__name__
        if isinstance(m, nn.modules.batchnorm._BatchNorm) or any(k in name for k in _PER_EXAMPLE_NORMS):
            seen.setdefault(name, None)
    return list(seen)


def has_batchnorm(model: nn.Module) -> bool:
    """Whether ``model`` holds a BatchNorm layer (its train mode mixes the examples of a batch)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def mode_phrase(model: nn.Module, training: bool) -> str:
    """How the measurement ran, naming what the model has: ``BatchNorm eval mode`` for a
    He et al. net, ``eval mode; GPT2Block... has LayerNorm, no BatchNorm`` for GPT-2."""
    mode = "train" if training else "eval"
    if has_batchnorm(model):
        return f"BatchNorm {mode} mode"
    norms = normalisations(model)
    has = f"{', '.join(norms)}, no BatchNorm" if norms else "no normalisation layer"
    return f"{mode} mode; {type(model).__name__} has {has}"


@contextmanager
def preserved(model: nn.Module, training: bool | None = None) -> Iterator[nn.Module]:
    """Set train/eval mode (None: as is) and restore modes and buffers on exit.

    A measurement must not change the model: a train-mode forward updates BatchNorm's
    running statistics, so every buffer is put back as it was.
    """
    modes = [(m, m.training) for m in model.modules()]
    saved = [(b, b.detach().clone()) for b in model.buffers()]
    try:
        if training is not None:
            model.train(training)
        yield model
    finally:
        for m, t in modes:
            m.training = t
        with torch.no_grad():
            for b, v in saved:
                b.copy_(v)
