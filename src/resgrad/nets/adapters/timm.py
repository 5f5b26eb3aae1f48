"""Adapters for timm (``timm.models``) residual blocks.

- ``resnet.BasicBlock`` / ``Bottleneck`` (ResNet, ResNeXt, SE-ResNet, ...): branch = the
  convolutions, norms, activations, anti-aliasing, SE and drop-path in timm's order;
  shortcut = ``downsample`` or identity; post = the last activation (He et al. 2015, arXiv
  1512.03385). timm zero-initialises the last BN of each branch (``zero_init_last``); the
  view shares the weights as they are;
- ``convnext.ConvNeXtBlock``: branch = depthwise conv -> norm -> MLP -> layer scale ->
  drop-path; shortcut = the block's ``shortcut`` (identity, or a downsample) (Liu et al.
  2022, arXiv 2201.03545);
- ``vision_transformer.Block`` (pre-LN): ``attn`` = norm1 -> attention -> ls1 ->
  drop_path1 and ``mlp`` = norm2 -> MLP -> ls2 -> drop_path2; the call's ``attn_mask`` and
  ``is_causal`` are captured per call.

timm is imported only by the code that handles its models.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..blocks import Residual
from ._common import Attention, run_units, seq
from ._registry import _builtin

__all__ = ["ConvNeXtBranch", "VitBlockView"]


def _resnet(b: nn.Module) -> Residual:
    # timm resnet.py: BasicBlock conv1 bn1 drop_block act1 aa conv2 bn2 [se] [drop_path];
    # Bottleneck conv1 bn1 act1 conv2 bn2 drop_block act2 aa conv3 bn3 [se] [drop_path].
    if hasattr(b, "conv3"):
        names, post = ["conv1", "bn1", "act1", "conv2", "bn2", "drop_block", "act2", "aa", "conv3", "bn3"], b.act3
    else:
        names, post = ["conv1", "bn1", "drop_block", "act1", "aa", "conv2", "bn2"], b.act2
    names += ["se", "drop_path"]  # either may be None
    branch = seq(**{n: getattr(b, n, None) for n in names})
    # post(shortcut(x) + branch(x)) is a fresh sum, so timm's in-place activation acts on it alone.
    return Residual(branch, shortcut=b.downsample, post=post)


class ConvNeXtBranch(nn.Module):
    """ConvNeXtBlock's residual branch: conv_dw -> norm -> mlp (channels last unless conv_mlp) -> gamma -> drop_path."""

    def __init__(self, b: nn.Module) -> None:
        super().__init__()
        self.conv_dw, self.norm, self.mlp, self.drop_path = b.conv_dw, b.norm, b.mlp, b.drop_path
        self.use_conv_mlp = b.use_conv_mlp
        self.gamma = b.gamma  # the block's own Parameter (layer scale), or None

    def forward(self, x: Tensor) -> Tensor:  # (B, C, H, W)
        x = self.conv_dw(x)
        if self.use_conv_mlp:
            x = self.mlp(self.norm(x))
        else:
            x = self.mlp(self.norm(x.permute(0, 2, 3, 1))).permute(0, 3, 1, 2)
        if self.gamma is not None:
            x = x.mul(self.gamma.reshape(1, -1, 1, 1))
        return self.drop_path(x)


def _convnext(b: nn.Module) -> Residual:
    shortcut = None if isinstance(b.shortcut, nn.Identity) else b.shortcut
    return Residual(ConvNeXtBranch(b), shortcut=shortcut)


class VitBlockView(nn.Module):
    """timm ``vision_transformer.Block`` as two pre-LN units, ``attn`` then ``mlp``."""

    def __init__(self, b: nn.Module) -> None:
        super().__init__()
        self.attn = Residual(Attention(b.norm1, b.attn, seq(ls1=b.ls1, drop_path1=b.drop_path1)))
        self.mlp = Residual(seq(norm2=b.norm2, mlp=b.mlp, ls2=b.ls2, drop_path2=b.drop_path2))

    def forward(self, x: Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False) -> Tensor:
        return run_units((self.attn, self.mlp), x, {"attn_mask": attn_mask, "is_causal": is_causal})


_builtin("timm.models.resnet.BasicBlock", _resnet)
_builtin("timm.models.resnet.Bottleneck", _resnet)
_builtin("timm.models.convnext.ConvNeXtBlock", _convnext)
_builtin("timm.models.vision_transformer.Block", VitBlockView)
