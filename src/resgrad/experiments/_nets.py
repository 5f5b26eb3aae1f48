"""The nets the flow grid and the signal measurement build: one grid point by its settings."""

from __future__ import annotations

import math
from collections.abc import Callable

from torch import nn

from ..nets.he2015 import he_net
from ..nets.mlp import ACTIVATIONS, MLP

__all__ = ["FAMILIES", "build_net"]

FAMILIES = ("mlp", "he2015")


def _he_n(blocks: int) -> int:
    return max(1, round(blocks / 3))


def build_net(family: str, arch: str, norm: str, act: str, init: str, depth: int,
              input_shape: tuple[int, ...], num_classes: int, width: int = 64) -> nn.Module:
    """One grid point; ``depth`` in blocks (he2015: 3 stages of round(depth/3) blocks)."""
    residual = arch == "residual"
    if family == "mlp":
        return MLP(depth, width, residual=residual, activation=act, norm=norm, init=init,
                   in_features=math.prod(input_shape), num_classes=num_classes)
    if len(input_shape) not in (2, 3):
        raise ValueError(f"the he2015 family needs inputs (C, L) or (C, H, W), received {input_shape}")
    n = _he_n(depth)
    net = he_net(6 * n + 2, residual=residual, unit="post", shortcut="A", dims=len(input_shape) - 1,
                 in_channels=input_shape[0], num_classes=num_classes)
    if act != "relu":
        _swap(net, lambda m: isinstance(m, nn.ReLU), lambda m: ACTIVATIONS[act]())
    if norm == "none":
        _swap(net, lambda m: isinstance(m, nn.modules.batchnorm._BatchNorm), lambda m: nn.Identity())
    if init == "xavier":
        gain = nn.init.calculate_gain(act if act != "gelu" else "relu")
        for m in net.modules():
            if isinstance(m, (nn.Conv1d, nn.Conv2d)):
                nn.init.xavier_normal_(m.weight, gain=gain)
    return net


def _swap(root: nn.Module, match: Callable[[nn.Module], bool], make: Callable[[nn.Module], nn.Module]) -> None:
    for _, parent in list(root.named_modules()):
        for cname, child in list(parent.named_children()):
            if match(child):
                setattr(parent, cname, make(child))


