"""The He et al. CIFAR family: depth 6n+2 (9n+2 bottleneck), plain and residual twins.

He, Zhang, Ren, Sun 2015 (arXiv 1512.03385) §4.2: a 3x3 conv, three stages of n blocks
with 16/32/64 filters, stride 2 at the start of stages 2 and 3, global average pooling,
a 10-way FC. Option A shortcuts (subsample + zero-pad, no parameters) keep plain and
residual parameter counts equal. Pre-activation units (BN-ReLU-conv) are from He et al.
2016 (arXiv 1603.05027). ``dims=1`` gives the same nets for signals (MNIST-1D).
"""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

from .blocks import Block, Plain, Residual

__all__ = ["HeNet", "ShortcutA", "he_net", "valid_depths"]

Shortcut = Literal["A", "B"]
Unit = Literal["post", "pre"]
BlockKind = Literal["basic", "bottleneck"]


def _conv(dims: int, cin: int, cout: int, k: int, stride: int = 1) -> nn.Module:
    conv = nn.Conv1d if dims == 1 else nn.Conv2d
    return conv(cin, cout, k, stride=stride, padding=k // 2, bias=False)


def _bn(dims: int, c: int) -> nn.Module:
    return nn.BatchNorm1d(c) if dims == 1 else nn.BatchNorm2d(c)


class ShortcutA(nn.Module):
    """Option A: subsample by ``stride`` and zero-pad the new channels (no parameters)."""

    def __init__(self, cin: int, cout: int, stride: int, dims: int) -> None:
        super().__init__()
        if cout < cin:
            raise ValueError(f"option A can only add channels, received {cin} -> {cout}")
        self.cin, self.cout, self.stride, self.dims = cin, cout, stride, dims

    def forward(self, x: Tensor) -> Tensor:  # (B, C, L) or (B, C, H, W)
        if self.stride > 1:
            x = x[..., :: self.stride] if self.dims == 1 else x[..., :: self.stride, :: self.stride]
        pad = self.cout - self.cin
        if pad:
            # F.pad pads trailing dims first: (L) or (W, H) pairs, then (C).
            x = F.pad(x, (0, 0) * self.dims + (pad // 2, pad - pad // 2))
        return x

    def extra_repr(self) -> str:
        return f"{self.cin}->{self.cout}, stride={self.stride}"


def _relu() -> nn.Module:
    # In place: inside a branch (and the stem) a ReLU always follows a fresh BN output, so
    # nothing else holds the value it overwrites. The block's ``post`` ReLU stays out of
    # place: its input is the sum that hooks and the path decomposition address.
    return nn.ReLU(inplace=True)


def _shortcut(cin: int, cout: int, stride: int, dims: int, option: Shortcut, unit: Unit) -> nn.Module:
    if cin == cout and stride == 1:
        return nn.Identity()
    if option == "A":
        return ShortcutA(cin, cout, stride, dims)
    proj = _conv(dims, cin, cout, 1, stride)
    # Post-act option B is conv+BN (He 2015 §3.3); pre-act projections have no BN (He 2016).
    return nn.Sequential(proj, _bn(dims, cout)) if unit == "post" else proj


def _branch(
    dims: int, cin: int, cout: int, stride: int, unit: Unit, kind: BlockKind
) -> nn.Sequential:
    if kind == "basic":
        if unit == "post":
            return nn.Sequential(
                _conv(dims, cin, cout, 3, stride), _bn(dims, cout), _relu(),
                _conv(dims, cout, cout, 3), _bn(dims, cout),
            )
        return nn.Sequential(
            _bn(dims, cin), _relu(), _conv(dims, cin, cout, 3, stride),
            _bn(dims, cout), _relu(), _conv(dims, cout, cout, 3),
        )
    mid = cout // 4
    if unit == "post":
        return nn.Sequential(
            _conv(dims, cin, mid, 1), _bn(dims, mid), _relu(),
            _conv(dims, mid, mid, 3, stride), _bn(dims, mid), _relu(),
            _conv(dims, mid, cout, 1), _bn(dims, cout),
        )
    return nn.Sequential(
        _bn(dims, cin), _relu(), _conv(dims, cin, mid, 1),
        _bn(dims, mid), _relu(), _conv(dims, mid, mid, 3, stride),
        _bn(dims, mid), _relu(), _conv(dims, mid, cout, 1),
    )


class HeNet(nn.Module):
    """stem -> stages of blocks -> (final BN-ReLU for pre-act) -> pool -> fc."""

    def __init__(
        self,
        n: int,
        *,
        residual: bool = True,
        dims: int = 2,
        in_channels: int = 3,
        num_classes: int = 10,
        shortcut: Shortcut = "A",
        unit: Unit = "post",
        block: BlockKind = "basic",
        widths: tuple[int, int, int] = (16, 32, 64),
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        if dims not in (1, 2):
            raise ValueError(f"dims must be 1 (signals) or 2 (images), received {dims}")
        if shortcut not in ("A", "B"):
            raise ValueError(f"shortcut must be 'A' or 'B', received {shortcut!r}")
        if unit not in ("post", "pre"):
            raise ValueError(f"unit must be 'post' or 'pre', received {unit!r}")
        if block not in ("basic", "bottleneck"):
            raise ValueError(f"block must be 'basic' or 'bottleneck', received {block!r}")
        expansion = 4 if block == "bottleneck" else 1
        kind = Residual if residual else Plain
        self.dims = dims
        stem_c = widths[0]
        stem: list[nn.Module] = [_conv(dims, in_channels, stem_c, 3)]
        if unit == "post":
            stem += [_bn(dims, stem_c), _relu()]
        self.stem = nn.Sequential(*stem)

        stages: list[nn.Module] = []
        cin = stem_c
        for s, w in enumerate(widths):
            cout = w * expansion
            layer: list[Block] = []
            for j in range(n):
                stride = 2 if (s > 0 and j == 0) else 1
                layer.append(
                    kind(
                        _branch(dims, cin, cout, stride, unit, block),
                        shortcut=_shortcut(cin, cout, stride, dims, shortcut, unit),
                        post=nn.ReLU() if unit == "post" else nn.Identity(),
                    )
                )
                cin = cout
            stages.append(nn.Sequential(*layer))
        self.stages = nn.Sequential(*stages)
        self.final = nn.Sequential(_bn(dims, cin), _relu()) if unit == "pre" else nn.Identity()
        self.pool = nn.AdaptiveAvgPool1d(1) if dims == 1 else nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

        for m in self.modules():
            if isinstance(m, (nn.Conv1d, nn.Conv2d)):
                # He init (He et al. 2015, "Delving deep into rectifiers"), torchvision's mode.
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            # Zero the last BN of each branch (Goyal et al. 2017): blocks start as identities.
            for b in self.modules():
                if isinstance(b, Block):
                    last = [m for m in b.branch if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))]
                    if last and unit == "post":
                        nn.init.zeros_(last[-1].weight)
                    elif unit == "pre":
                        convs = [m for m in b.branch if isinstance(m, (nn.Conv1d, nn.Conv2d))]
                        nn.init.zeros_(convs[-1].weight)

    def forward(self, x: Tensor) -> Tensor:  # (B, C, L) or (B, C, H, W) -> (B, classes)
        if x.dim() != self.dims + 2:
            want = "(B, C, L)" if self.dims == 1 else "(B, C, H, W)"
            raise ValueError(
                f"{type(self).__name__} with dims={self.dims} expects input {want}, "
                f"received shape {tuple(x.shape)}"
            )
        x = self.final(self.stages(self.stem(x)))
        return self.fc(self.pool(x).flatten(1))


def valid_depths(block: BlockKind = "basic", up_to: int = 1202) -> list[int]:
    """Depths the family accepts: 6n+2 (basic) or 9n+2 (bottleneck)."""
    per = 6 if block == "basic" else 9
    return [per * n + 2 for n in range(1, (up_to - 2) // per + 1)]


def he_net(depth: int, *, block: BlockKind = "basic", **kwargs) -> HeNet:
    """Build a He-family net of ``depth`` layers (6n+2 basic, 9n+2 bottleneck)."""
    per = 6 if block == "basic" else 9
    if not isinstance(depth, int) or depth < per + 2 or (depth - 2) % per:
        examples = ", ".join(map(str, valid_depths(block, 120)[:8]))
        raise ValueError(
            f"depth must be {per}n+2 for {block} blocks (e.g. {examples}, ...), received {depth!r}"
        )
    return HeNet((depth - 2) // per, block=block, **kwargs)
