"""Helpers shared by the integration tests."""

from __future__ import annotations

from torch import nn


def hooks_left(model: nn.Module) -> list[str]:
    left = []
    for name, m in model.named_modules():
        for attr in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"):
            if getattr(m, attr, None):
                left.append(f"{name or '<root>'}.{attr}")
    return left
