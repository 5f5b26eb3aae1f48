"""The one shape every dataset comes in: tensors in memory, plus an optional augmentation."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = ["DataBundle"]

# augment(x_batch, generator) -> x_batch, applied to training batches only.
Augment = Callable[[Tensor, torch.Generator], Tensor]


@dataclass
class DataBundle:
    """A dataset held as tensors: float32 inputs (normalised), int64 labels.

    ``x_*`` have shape ``(N, *input_shape)``; ``input_shape`` is ``(C, L)`` for signals,
    ``(C, H, W)`` for images, ``(F,)`` for flat features.
    """

    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    num_classes: int
    augment: Augment | None = None  # training batches only (He et al. 2015 §4.2 for CIFAR)
    info: dict = field(default_factory=dict)  # provenance: source, cache file, normalisation

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def num_batches(self, batch_size: int, *, train: bool = True) -> int:
        """How many batches :meth:`batches` yields per pass."""
        n = len(self.x_train if train else self.x_test)
        if train and n > batch_size and n % batch_size == 1:
            n -= 1
        return -(-n // batch_size)

    def batches(
        self, batch_size: int, *, train: bool = True, generator: torch.Generator | None = None
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """Shuffled, augmented training batches (``generator`` makes them reproducible),
        or test batches in order. The last partial batch is kept, except a training batch
        of one example (BatchNorm cannot normalise it in train mode)."""
        x, y = (self.x_train, self.y_train) if train else (self.x_test, self.y_test)
        n = len(x)
        order = torch.randperm(n, generator=generator) if train else torch.arange(n)
        if train and n > batch_size and n % batch_size == 1:
            n -= 1
        for i in range(0, n, batch_size):
            idx = order[i : i + batch_size]
            xb = x[idx]
            if train and self.augment is not None:
                xb = self.augment(xb, generator if generator is not None else torch.default_generator)
            yield xb, y[idx]

    def subset(self, n_train: int | None = None, n_test: int | None = None) -> DataBundle:
        """The first ``n_train``/``n_test`` examples (for quick runs and tests)."""
        return DataBundle(
            self.name, self.x_train[:n_train], self.y_train[:n_train],
            self.x_test[:n_test], self.y_test[:n_test], self.num_classes, self.augment,
            {**self.info, "subset": [n_train, n_test]},
        )
