"""Seeded Gaussian classes of any shape: for tests and smoke runs, no files needed."""

from __future__ import annotations

import torch

from .bundle import DataBundle

__all__ = ["synthetic"]


def synthetic(
    shape: tuple[int, ...] = (1, 40),
    *,
    num_classes: int = 10,
    n_train: int = 1000,
    n_test: int = 200,
    separation: float = 1.0,
    seed: int = 0,
) -> DataBundle:
    """Each class is a unit Gaussian around its own random mean (scaled by ``separation``)."""
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, received {num_classes}")
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(num_classes, *shape, generator=g) * separation

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(num_classes, (n,), generator=g)
        return means[y] + torch.randn(n, *shape, generator=g), y

    xtr, ytr = draw(n_train)
    xte, yte = draw(n_test)
    return DataBundle("synthetic", xtr, ytr, xte, yte, num_classes,
                      info={"shape": list(shape), "seed": seed, "separation": separation})
