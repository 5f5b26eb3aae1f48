"""Adapters for torchvision ResNets and PyTorch's own Transformer encoder.

- torchvision ``BasicBlock`` / ``Bottleneck`` (ResNet, ResNeXt, Wide ResNet):
  branch = conv1..bn2 (bn3), shortcut = ``downsample`` or identity, post = ReLU
  (He et al. 2015, arXiv 1512.03385, Fig. 2/5);
- ``nn.TransformerEncoderLayer``: two residual blocks per layer, self-attention then
  feed-forward. Pre-norm (``norm_first=True``): the LayerNorm opens each branch;
  post-norm: it is the block's ``post`` (Xiong et al. 2020, arXiv 2002.04745, Fig. 1);
- ``nn.TransformerEncoder``: its layers as above, then its final norm. The view always
  takes the standard (not the nested-tensor fast) path.
"""

from __future__ import annotations

from collections import OrderedDict

import torch.nn.functional as F
from torch import Tensor, nn

from ..blocks import Residual
from ._registry import _builtin

__all__ = ["EncoderLayerView", "EncoderView"]


def _resnet_block(b: nn.Module) -> Residual:
    # torchvision: out = bn2(conv2(relu(bn1(conv1(x))))) [+ relu, conv3, bn3]; out += identity; relu.
    names = ["conv1", "bn1", "relu", "conv2", "bn2"]
    if hasattr(b, "conv3"):
        names += ["relu", "conv3", "bn3"]
    layers = OrderedDict()
    for i, name in enumerate(names):
        layers[name if name not in layers else f"{name}{i}"] = getattr(b, name)
    shortcut = b.downsample if b.downsample is not None else None
    # A fresh (not in-place) ReLU: same function, and the recorded sum stays intact.
    return Residual(nn.Sequential(layers), shortcut=shortcut, post=nn.ReLU())


class _SelfAttention(nn.Module):
    """Branch: [norm] -> self-attention -> dropout, with the layer's masks for this call."""

    def __init__(self, norm: nn.Module, self_attn: nn.MultiheadAttention, dropout: nn.Module) -> None:
        super().__init__()
        self.norm, self.self_attn, self.dropout = norm, self_attn, dropout
        self.context: tuple = (None, None, False)  # (attn_mask, key_padding_mask, is_causal)

    def forward(self, x: Tensor) -> Tensor:  # (B, S, E) batch_first, else (S, B, E)
        h = self.norm(x)
        mask, kpm, causal = self.context
        out = self.self_attn(h, h, h, attn_mask=mask, key_padding_mask=kpm, need_weights=False, is_causal=causal)[0]
        return self.dropout(out)


class _FeedForward(nn.Module):
    """Branch: [norm] -> linear1 -> activation -> dropout -> linear2 -> dropout2."""

    def __init__(self, layer: nn.TransformerEncoderLayer, norm: nn.Module) -> None:
        super().__init__()
        self.norm, self.linear1, self.dropout = norm, layer.linear1, layer.dropout
        self.linear2, self.dropout2 = layer.linear2, layer.dropout2
        self.activation = layer.activation  # a module, or a function such as F.relu

    def forward(self, x: Tensor) -> Tensor:
        h = self.linear1(self.norm(x))
        return self.dropout2(self.linear2(self.dropout(self.activation(h))))


class EncoderLayerView(nn.Module):
    """An ``nn.TransformerEncoderLayer`` as two Residual blocks: ``attn`` then ``ff``."""

    def __init__(self, layer: nn.TransformerEncoderLayer) -> None:
        super().__init__()
        pre = layer.norm_first
        self.norm_first = pre
        self.attn = Residual(
            _SelfAttention(layer.norm1 if pre else nn.Identity(), layer.self_attn, layer.dropout1),
            post=None if pre else layer.norm1,
        )
        self.ff = Residual(_FeedForward(layer, layer.norm2 if pre else nn.Identity()), post=None if pre else layer.norm2)

    def forward(
        self,
        src: Tensor,
        src_mask: Tensor | None = None,
        src_key_padding_mask: Tensor | None = None,
        is_causal: bool = False,
    ) -> Tensor:
        # The same mask canonicalisation as nn.TransformerEncoderLayer.forward.
        src_key_padding_mask = F._canonical_mask(
            mask=src_key_padding_mask, mask_name="src_key_padding_mask",
            other_type=F._none_or_dtype(src_mask), other_name="src_mask", target_type=src.dtype,
        )
        src_mask = F._canonical_mask(
            mask=src_mask, mask_name="src_mask", other_type=None, other_name="",
            target_type=src.dtype, check_other=False,
        )
        branch = self.attn.branch
        branch.context = (src_mask, src_key_padding_mask, is_causal)
        try:
            x = self.attn(src)
        finally:
            branch.context = (None, None, False)
        return self.ff(x)


class EncoderView(nn.Module):
    """An ``nn.TransformerEncoder``: its layers as :class:`EncoderLayerView`, then its norm."""

    def __init__(self, encoder: nn.TransformerEncoder, layers: list[nn.Module]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.norm = encoder.norm

    def forward(
        self,
        src: Tensor,
        mask: Tensor | None = None,
        src_key_padding_mask: Tensor | None = None,
        is_causal: bool | None = None,
    ) -> Tensor:
        from torch.nn.modules.transformer import _detect_is_causal_mask, _get_seq_len

        src_key_padding_mask = F._canonical_mask(
            mask=src_key_padding_mask, mask_name="src_key_padding_mask",
            other_type=F._none_or_dtype(mask), other_name="mask", target_type=src.dtype,
        )
        mask = F._canonical_mask(
            mask=mask, mask_name="mask", other_type=None, other_name="",
            target_type=src.dtype, check_other=False,
        )
        first = self.layers[0]
        batch_first = first.attn.branch.self_attn.batch_first if isinstance(first, EncoderLayerView) else True
        causal = _detect_is_causal_mask(mask, is_causal, _get_seq_len(src, batch_first))
        out = src
        for layer in self.layers:
            out = layer(out, src_mask=mask, is_causal=causal, src_key_padding_mask=src_key_padding_mask)
        return self.norm(out) if self.norm is not None else out


def _encoder(m: nn.TransformerEncoder) -> EncoderView:
    memo: dict[int, nn.Module] = {}  # a layer object listed twice stays one view
    layers = [memo.setdefault(id(layer), EncoderLayerView(layer)) for layer in m.layers]
    return EncoderView(m, layers)


# Registered by class name: torchvision is an optional extra and is not imported here.
for _cls in ("BasicBlock", "Bottleneck"):
    _builtin(f"torchvision.models.resnet.{_cls}", _resnet_block)
_builtin("torch.nn.modules.transformer.TransformerEncoderLayer", EncoderLayerView)
_builtin("torch.nn.modules.transformer.TransformerEncoder", _encoder)
