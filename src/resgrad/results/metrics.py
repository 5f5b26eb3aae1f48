"""MetricsRow: one line of a training run's ``metrics.jsonl`` (and of a result's ``history``), typed.

Kept as a plain dict (readers index it by name), checked field by field where it is read: a
string where a number was is one line naming the file, the line and the field. Callbacks add
columns of their own (``grad_block_norms``, ...): those are kept as they are.
"""

from __future__ import annotations

from typing import ClassVar

from ..schema import Num, Row

__all__ = ["MetricsRow"]


class MetricsRow(Row):
    """One finished epoch (``train/loop.py`` writes it); errors are fractions, losses per example."""

    REQUIRED: ClassVar[tuple[str, ...]] = ("epoch",)  # older runs may lack the others; present ones are typed

    epoch: int  # 1-based
    train_loss: Num
    train_error: Num
    test_loss: Num
    test_error: Num
    lr: Num  # the lr of the epoch's last step
    seconds: Num  # wall clock of the epoch
    steps: int  # global SGD steps done at the epoch's end
