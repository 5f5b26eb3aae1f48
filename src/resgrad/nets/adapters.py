"""Views of foreign models as resgrad Residual blocks, sharing the original parameters.

``adapt(model)`` returns a new module tree whose residual units are
``Residual(branch, shortcut, post)`` (DESIGN.md, "The core contract") built from the
*same* layer objects as the original: no parameter or buffer is copied, so the view
computes what the original computes and every path tool, lesion and gate applies to it.
The original model is not modified (its containers are shallow-copied, its layers
shared; switching the view to eval mode therefore also switches the shared layers).

Supported:

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

from .blocks import Residual, blocks

__all__ = ["adapt", "SUPPORTED", "EncoderLayerView", "EncoderView"]

SUPPORTED = (
    "torchvision BasicBlock and Bottleneck (ResNet, ResNeXt, Wide ResNet), "
    "nn.TransformerEncoderLayer (norm_first True or False) and nn.TransformerEncoder"
)


def _torchvision_blocks() -> tuple[type, ...]:
    try:  # torchvision is an optional extra; without it no such block can exist
        from torchvision.models.resnet import BasicBlock, Bottleneck
    except ImportError:
        return ()
    return (BasicBlock, Bottleneck)


def _shallow(m: nn.Module) -> nn.Module:
    """A new module object with the same attributes; its child/parameter dicts are copies,
    so replacing a child in the view leaves the original alone."""
    new = m.__class__.__new__(m.__class__)
    new.__dict__.update({k: v.copy() if isinstance(v, (dict, set)) else v for k, v in m.__dict__.items()})
    return new


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


def _adapt(m: nn.Module, memo: dict[int, nn.Module]) -> tuple[nn.Module, int]:
    """(view of ``m``, number of units adapted inside it)."""
    if id(m) in memo:  # a module registered twice stays one module in the view
        return memo[id(m)], 0
    tv = _torchvision_blocks()
    n = 0
    if tv and isinstance(m, tv):
        view, n = _resnet_block(m), 1
    elif isinstance(m, nn.TransformerEncoderLayer):
        view, n = EncoderLayerView(m), 1
    elif isinstance(m, nn.TransformerEncoder):
        layers = [_adapt(layer, memo)[0] for layer in m.layers]
        view, n = EncoderView(m, layers), len(layers)
    else:
        children = {}
        for name, child in m.named_children():
            v, k = _adapt(child, memo)
            if k:
                children[name], n = v, n + k
        if n:
            view = _shallow(m)
            for name, v in children.items():
                view._modules[name] = v
        else:
            view = m
    memo[id(m)] = view
    return view, n


def adapt(model: nn.Module) -> nn.Module:
    """A view of ``model`` whose residual units are resgrad Residual blocks (shared weights).

    A model already built from resgrad blocks is returned as is; one with no supported
    residual unit raises NotImplementedError naming what is supported.
    """
    if isinstance(model, type) or not isinstance(model, nn.Module):
        raise TypeError(
            f"adapt takes an nn.Module instance, received {model!r}; instantiate the model first"
        )
    view, n = _adapt(model, {})
    if n == 0:
        if blocks(model):
            return model
        raise NotImplementedError(
            f"resgrad.adapt found no residual unit it supports in {type(model).__name__}; it supports "
            f"{SUPPORTED}; wrap other units as resgrad.Residual(branch, shortcut, post)"
        )
    return view
