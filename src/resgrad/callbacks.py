"""Training callbacks with Lightning's hook names, so a Lightning callback is a thin subclass.

Every hook is a no-op here; probes and experiments override the ones they need, so an
optional Lightning callback can be a thin subclass. ``fit`` calls, in order:
``on_train_start``, then per step ``on_after_backward`` and ``on_before_optimizer_step``,
``on_train_epoch_end`` per epoch, ``on_train_end`` — or ``on_exception`` if training
raised (a non-finite loss, Ctrl-C), so a callback can release its hooks either way. ``state_dict``/``load_state_dict``
are saved in and restored from the run's checkpoint, so a resumed run continues them.
"""

from __future__ import annotations

from typing import Any

from torch import nn
from torch.optim import Optimizer

__all__ = ["Callback"]


class Callback:
    """Base class: override the hooks you need."""

    def on_train_start(self, model: nn.Module) -> None: ...

    def on_after_backward(self, model: nn.Module, step: int) -> None: ...

    def on_before_optimizer_step(self, model: nn.Module, optimizer: Optimizer, step: int) -> None: ...

    def on_train_epoch_end(self, model: nn.Module, epoch: int, metrics: dict[str, Any]) -> None: ...

    def on_train_end(self, model: nn.Module) -> None: ...

    def on_exception(self, model: nn.Module, exception: BaseException) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...
