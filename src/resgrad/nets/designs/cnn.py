"""Normalisation-free He et al. 2015 CIFAR ResNets: Fixup, SkipInit, NF-ResNet (dims 1 and 2).

The same net as :class:`~resgrad.nets.he2015.HeNet` (a 3x3 stem, three stages of ``n`` basic
blocks with 16/32/64 filters, stride 2 at stages 2 and 3, global pooling, a linear head), with
every BatchNorm removed and the design's own parts instead; every block is a resgrad
:class:`~resgrad.nets.blocks.Residual` (branch, shortcut, post), so the path tools apply.

- ``fixup``: Zhang, Dauphin, Ma 2019 (arXiv 1901.09321), §3 and the authors' CIFAR code: a scalar
  bias before each conv, the ReLU and the head, a scalar multiplier after the branch; the branch's
  last conv and the head start at zero, its first conv is He-initialised times ``L^(-1/(2m-2))``
  (``L`` residual branches, ``m = 2`` layers each: ``L^(-1/2)``). The downsampling shortcut (option
  A) reads ``x + bias1a`` as in that code.
- ``skipinit``: De and Smith 2020 (arXiv 2002.10444), §4: the branch times a learnable scalar
  starting at 0 (the convs keep no bias, as in the BN net).
- ``nf``: Brock, De, Smith 2021 (arXiv 2101.08692), §4-5: ``h + alpha f(h / beta)``, alpha = 0.2,
  ``beta`` the expected standard deviation of ``h`` (``Var`` grows by ``alpha^2`` per block and is
  reset after each stage's first block, as the authors' code), pre-activation blocks with the ReLU
  scaled by ``gamma = sqrt(2 / (1 - 1/pi))`` and Scaled Weight Standardisation on every conv; the
  downsampling shortcut is a WS 1x1 conv on the activated, downscaled input (the paper's transition
  block), so NF has those extra weights (see :func:`resgrad.nets.designs.param_delta`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..blocks import Residual, Scale
from ..he2015 import ShortcutA, _conv

__all__ = ["FreeHeNet", "free_he_net", "WSConv1d", "WSConv2d", "GammaReLU", "FREE_DESIGNS",
           "NF_ALPHA", "NF_GAMMA", "ws_weight"]

FREE_DESIGNS = ("fixup", "skipinit", "nf")
NF_ALPHA = 0.2  # Brock et al. 2021a §5: alpha = 0.2
NF_GAMMA = math.sqrt(2.0 / (1.0 - 1.0 / math.pi))  # Brock et al. 2021a §4.1: the ReLU's gain (1.7139588...)
WS_EPS = 1e-4  # the authors' floor on var * fan_in


def ws_weight(weight: Tensor, gain: Tensor, eps: float = WS_EPS) -> Tensor:
    """Scaled WS: ``gain * (W - mean) / sqrt(max(var * fan_in, eps))``, mean and (biased) var over each filter."""
    dims = tuple(range(1, weight.dim()))
    fan_in = weight[0].numel()
    mean = weight.mean(dims, keepdim=True)
    var = weight.var(dims, keepdim=True, unbiased=False)
    return (weight - mean) * torch.rsqrt(torch.clamp(var * fan_in, min=eps)) * gain


class _WS:
    def _ws_setup(self) -> None:
        self.gain = nn.Parameter(torch.ones(self.out_channels, *([1] * (self.weight.dim() - 1))))

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, ws_weight(self.weight, self.gain), self.bias)


class WSConv1d(_WS, nn.Conv1d):
    """``nn.Conv1d`` with Scaled Weight Standardisation and a learnable gain per filter (Brock et al. 2021a)."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self._ws_setup()


class WSConv2d(_WS, nn.Conv2d):
    """``nn.Conv2d`` with Scaled Weight Standardisation and a learnable gain per filter (Brock et al. 2021a)."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self._ws_setup()


def _ws(dims: int, cin: int, cout: int, k: int, stride: int = 1) -> nn.Module:
    cls = WSConv1d if dims == 1 else WSConv2d
    return cls(cin, cout, k, stride=stride, padding=k // 2, bias=True)


class GammaReLU(nn.Module):
    """``gamma * relu(x)``: a ReLU that keeps unit variance for unit-Gaussian inputs (Brock et al. 2021a §4.1)."""

    def __init__(self, gamma: float = NF_GAMMA) -> None:
        super().__init__()
        self.gamma = gamma

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x) * self.gamma


class _Bias(nn.Module):
    """Add a scalar bias, learnable, starting at 0 (Fixup's biases)."""

    def __init__(self) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(()))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.bias


class FixupBranch(nn.Module):
    """``scale * conv2(relu(conv1(x + b1a) + b1b) + b2a) + b2b`` (Zhang et al. 2019, the CIFAR code)."""

    def __init__(self, dims: int, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.bias1a, self.bias1b, self.bias2a, self.bias2b = _Bias(), _Bias(), _Bias(), _Bias()
        self.conv1 = _conv(dims, cin, cout, 3, stride)
        self.conv2 = _conv(dims, cout, cout, 3)
        self.scale = Scale(1.0, learnable=True)

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(self.bias1b(self.conv1(self.bias1a(x))))
        return self.bias2b(self.scale(self.conv2(self.bias2a(h))))


class _BiasedShortcut(nn.Module):
    """Option A on ``x + bias1a``: the bias is the branch's, held unregistered (stored once)."""

    def __init__(self, bias: _Bias, shortcut: nn.Module) -> None:
        super().__init__()
        self._bias = (bias,)
        self.shortcut = shortcut

    def forward(self, x: Tensor) -> Tensor:
        return self.shortcut(self._bias[0](x))


def _fixup_block(dims: int, cin: int, cout: int, stride: int) -> Residual:
    br = FixupBranch(dims, cin, cout, stride)
    sc: nn.Module = nn.Identity()
    if stride > 1 or cin != cout:
        sc = _BiasedShortcut(br.bias1a, ShortcutA(cin, cout, stride, dims))
    return Residual(br, shortcut=sc, post=nn.ReLU())


def _skipinit_block(dims: int, cin: int, cout: int, stride: int) -> Residual:
    br = nn.Sequential(_conv(dims, cin, cout, 3, stride), nn.ReLU(inplace=True), _conv(dims, cout, cout, 3),
                       Scale(0.0, learnable=True))
    sc = nn.Identity() if stride == 1 and cin == cout else ShortcutA(cin, cout, stride, dims)
    return Residual(br, shortcut=sc, post=nn.ReLU())


def _nf_block(dims: int, cin: int, cout: int, stride: int, beta: float) -> Residual:
    # The first ReLU is out of place: the shortcut reads the same input.
    br = nn.Sequential(GammaReLU(), Scale(beta, learnable=False), _ws(dims, cin, cout, 3, stride),
                       GammaReLU(), _ws(dims, cout, cout, 3), Scale(NF_ALPHA, learnable=False))
    sc: nn.Module = nn.Identity()
    if stride > 1 or cin != cout:
        sc = nn.Sequential(GammaReLU(), Scale(beta, learnable=False), _ws(dims, cin, cout, 1, stride))
    return Residual(br, shortcut=sc)


class FreeHeNet(nn.Module):
    """A normalisation-free He et al. CIFAR ResNet: ``design`` is ``"fixup"``, ``"skipinit"`` or ``"nf"``."""

    def __init__(
        self,
        n: int,
        *,
        design: str,
        dims: int = 2,
        in_channels: int = 3,
        num_classes: int = 10,
        widths: tuple[int, int, int] = (16, 32, 64),
    ) -> None:
        super().__init__()
        if design not in FREE_DESIGNS:
            raise ValueError(f"design must be one of {', '.join(FREE_DESIGNS)}, received {design!r}")
        if dims not in (1, 2):
            raise ValueError(f"dims must be 1 (signals) or 2 (images), received {dims}")
        self.dims, self.design = dims, design
        c0 = widths[0]
        if design == "nf":
            self.stem: nn.Module = _ws(dims, in_channels, c0, 3)
        elif design == "fixup":
            self.stem = nn.Sequential(_conv(dims, in_channels, c0, 3), _Bias(), nn.ReLU(inplace=True))
        else:
            self.stem = nn.Sequential(_conv(dims, in_channels, c0, 3), nn.ReLU(inplace=True))
        stages: list[nn.Module] = []
        cin, var = c0, 1.0
        for s, w in enumerate(widths):
            layer: list[nn.Module] = []
            for j in range(n):
                stride = 2 if (s > 0 and j == 0) else 1
                if design == "fixup":
                    layer.append(_fixup_block(dims, cin, w, stride))
                elif design == "skipinit":
                    layer.append(_skipinit_block(dims, cin, w, stride))
                else:
                    layer.append(_nf_block(dims, cin, w, stride, 1.0 / math.sqrt(var)))
                    # The authors' code: reset after a stage's first block, then grow by alpha^2.
                    var = (1.0 if j == 0 else var) + NF_ALPHA**2
                cin = w
            stages.append(nn.Sequential(*layer))
        self.stages = nn.Sequential(*stages)
        self.final = GammaReLU() if design == "nf" else nn.Identity()
        self.pool = nn.AdaptiveAvgPool1d(1) if dims == 1 else nn.AdaptiveAvgPool2d(1)
        self.head_bias = _Bias() if design == "fixup" else nn.Identity()
        self.fc = nn.Linear(cin, num_classes)
        self._init(3 * n)

    def _init(self, branches: int) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv1d, nn.Conv2d)) and not isinstance(m, (WSConv1d, WSConv2d)):
                # He init, fan_out (HeNet's): Fixup's formula before its depth factor.
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (WSConv1d, WSConv2d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="linear")  # WS removes the scale
                nn.init.zeros_(m.bias)
        if self.design == "fixup":
            for m in self.modules():
                if isinstance(m, FixupBranch):
                    with torch.no_grad():
                        m.conv1.weight.mul_(branches ** -0.5)  # L^(-1/(2m-2)), m = 2 (Zhang et al. 2019 §3)
                    nn.init.zeros_(m.conv2.weight)
            nn.init.zeros_(self.fc.weight)
            nn.init.zeros_(self.fc.bias)

    def forward(self, x: Tensor) -> Tensor:  # (B, C, L) or (B, C, H, W) -> (B, classes)
        if x.dim() != self.dims + 2:
            want = "(B, C, L)" if self.dims == 1 else "(B, C, H, W)"
            raise ValueError(f"{type(self).__name__} with dims={self.dims} expects input {want}, "
                             f"received shape {tuple(x.shape)}")
        x = self.final(self.stages(self.stem(x)))
        return self.fc(self.head_bias(self.pool(x).flatten(1)))


def free_he_net(depth: int, *, design: str, **kwargs) -> FreeHeNet:
    """A :class:`FreeHeNet` of ``depth = 6n + 2`` layers."""
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < 8 or (depth - 2) % 6:
        raise ValueError(f"depth must be 6n+2 (e.g. 20, 32, 44, 56, 110), received {depth!r}")
    if "block" in kwargs or "unit" in kwargs or "shortcut" in kwargs:
        bad = sorted(k for k in ("block", "unit", "shortcut") if k in kwargs)
        raise ValueError(f"the {design} nets are basic post/pre-act blocks as their papers build them; "
                         f"they take no {', '.join(bad)}")
    return FreeHeNet((depth - 2) // 6, design=design, **kwargs)
