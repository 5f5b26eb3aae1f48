"""Adapters for Hugging Face ``transformers`` layers: one Residual unit per sublayer.

Each layer becomes two units, ``attn`` then ``mlp`` (an L-layer model has 2L), built
from the layer's own modules:

- GPT-2 (pre-LN): ``attn`` = ln_1 -> attention; ``mlp`` = ln_2 -> MLP. The norm opens
  the branch and the skip is a clean identity (Xiong et al. 2020, arXiv 2002.04745, Fig. 1b);
- Llama, Mistral, Qwen2 (pre-RMSNorm, rotary positions; Touvron et al. 2023, arXiv
  2302.13971, §2.2): ``attn`` = input_layernorm -> self_attn; ``mlp`` =
  post_attention_layernorm -> gated MLP;
- BERT (post-LN, the original Transformer's order): ``attn`` = self-attention -> dense
  -> dropout with ``post`` = the LayerNorm after the sum; ``mlp`` = intermediate -> dense
  -> dropout, ``post`` = LayerNorm. The norm is on the skip path, as it is in BERT
  (Xiong et al. 2020, Fig. 1a), and the path analysis treats it so;
- ViT (pre-LN): ``attn`` = layernorm_before -> attention -> dropout; ``mlp`` =
  layernorm_after -> MLP -> dropout.

The view of a layer takes the original's call (its forward signature is bound
argument by argument), so the model around it is unchanged. What the attention needs
besides its input (attention mask, rotary ``position_embeddings``, ``position_ids``,
a cache) is captured for the duration of each call, so each branch is a function of its
unit's input alone, as the path decomposition requires. Cross-attention layers are not
adapted.

``output_hidden_states`` / ``output_attentions`` work on the view: transformers records them
through forward hooks it installs lazily, once per model, on instances of the layer and
attention classes. ``adapt`` installs them on the original first (as its first such call
would; they do nothing unless asked), the view's layers take the layer's hook (a view's
class derives from the layer's class) and share the attention modules and their hooks, so
neither model records anything twice.
transformers is imported only by the code that handles its models.
"""

from __future__ import annotations

import inspect
import sys
from typing import Any

from torch import Tensor, nn

from ..blocks import Residual
from ._common import Attention, run_units, seq
from ._registry import _PREPARE, _builtin

__all__ = ["LayerView", "GPT2BlockView", "LlamaLayerView", "BertLayerView", "ViTLayerView"]


class LayerView(nn.Module):
    """Base of the layer views: units ``attn`` then ``mlp``; each call binds the original
    forward's signature and hands the attention its keyword arguments for that call.

    Subclasses give ``_units(layer)`` and ``_context(args)``: the attention's keyword
    arguments from the bound arguments (hidden states removed, defaults filled in).
    """

    _signature: inspect.Signature  # of the original layer class's forward

    def _init_view(self, layer: nn.Module) -> None:
        nn.Module.__init__(self)
        # Plain attributes the model around the layer may read (attention_type, layer_idx, ...).
        for k, v in layer.__dict__.items():
            if not k.startswith("_") and k != "training" and not isinstance(v, nn.Module):
                self.__dict__[k] = v
        self.training = layer.training
        self.attn, self.mlp = self._units(layer)

    def _units(self, layer: nn.Module) -> tuple[Residual, Residual]:
        raise NotImplementedError

    def _context(self, args: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def forward(self, *args: Any, **kwargs: Any) -> Tensor:
        if "past_key_values" in kwargs and "past_key_values" not in self._signature.parameters:
            kwargs["cache"] = kwargs.pop("past_key_values")  # transformers' deprecated name
        bound = self._signature.bind(self, *args, **kwargs)
        a = dict(bound.arguments)
        a.pop("self")
        for p in self._signature.parameters.values():
            if p.kind is p.VAR_KEYWORD:
                a.update(a.pop(p.name, {}))
            elif p.name not in a and p.default is not p.empty:
                a[p.name] = p.default
        x = a.pop(list(self._signature.parameters)[1])  # after self: the hidden states
        return run_units((self.attn, self.mlp), x, self._context(a))


class GPT2BlockView(LayerView):
    """``GPT2Block``: pre-LN attention and MLP units."""

    def _units(self, b: nn.Module) -> tuple[Residual, Residual]:
        if hasattr(b, "crossattention"):
            raise NotImplementedError(
                "GPT2Block with cross-attention (add_cross_attention=True) is not adapted; "
                "register your own adapter with resgrad.register_adapter(GPT2Block, fn)"
            )
        return Residual(Attention(b.ln_1, b.attn)), Residual(seq(ln_2=b.ln_2, mlp=b.mlp))

    def _context(self, a: dict[str, Any]) -> dict[str, Any]:
        if a.pop("encoder_hidden_states", None) is not None:
            raise NotImplementedError("the adapted GPT2Block has no cross-attention; encoder_hidden_states is not accepted")
        a.pop("encoder_attention_mask", None)
        return a  # cache, attention_mask, use_cache and the rest, as GPT2Block passes them


class LlamaLayerView(LayerView):
    """Llama / Mistral / Qwen2 decoder layer: pre-RMSNorm attention (rotary positions) and gated MLP."""

    def _units(self, b: nn.Module) -> tuple[Residual, Residual]:
        return (
            Residual(Attention(b.input_layernorm, b.self_attn)),
            Residual(seq(post_attention_layernorm=b.post_attention_layernorm, mlp=b.mlp)),
        )

    def _context(self, a: dict[str, Any]) -> dict[str, Any]:
        return a  # attention_mask, position_ids, cache, use_cache, position_embeddings, ...


class BertLayerView(LayerView):
    """``BertLayer``: post-LN, each LayerNorm in its unit's ``post`` (on the skip path)."""

    def _units(self, b: nn.Module) -> tuple[Residual, Residual]:
        if getattr(b, "add_cross_attention", False) or hasattr(b, "crossattention"):
            raise NotImplementedError(
                "BertLayer with cross-attention is not adapted; register your own adapter with "
                "resgrad.register_adapter(BertLayer, fn)"
            )
        so, out = b.attention.output, b.output
        # BertSelfOutput: LayerNorm(dropout(dense(attn)) + x); BertOutput likewise for the MLP.
        attn = Residual(Attention(None, b.attention.self, seq(dense=so.dense, dropout=so.dropout)), post=so.LayerNorm)
        # apply_chunking_to_forward only splits the sequence to save memory: same values unchunked.
        mlp = Residual(seq(intermediate=b.intermediate, dense=out.dense, dropout=out.dropout), post=out.LayerNorm)
        return attn, mlp

    def _context(self, a: dict[str, Any]) -> dict[str, Any]:
        if a.pop("encoder_hidden_states", None) is not None and self.is_decoder:
            raise NotImplementedError("the adapted BertLayer has no cross-attention; encoder_hidden_states is not accepted")
        a.pop("encoder_attention_mask", None)
        # As BertAttention.forward calls its self-attention.
        return {"encoder_hidden_states": None, **a}


class ViTLayerView(LayerView):
    """``ViTLayer``: pre-LN attention and MLP units, each ending in the layer's dropout."""

    def _units(self, b: nn.Module) -> tuple[Residual, Residual]:
        return (
            Residual(Attention(b.layernorm_before, b.attention, b.dropout)),
            Residual(seq(layernorm_after=b.layernorm_after, mlp=b.mlp, dropout=b.dropout)),
        )

    def _context(self, a: dict[str, Any]) -> dict[str, Any]:
        return a  # attention_mask and the rest


_VIEW_CLASSES: dict[type, type] = {}


def _adapter(family: type[LayerView]):
    """fn(layer) -> view whose class derives from ``family`` and the layer's own class."""

    def fn(layer: nn.Module) -> nn.Module:
        cls = type(layer)
        view_cls = _VIEW_CLASSES.get(cls)
        if view_cls is None:
            # Deriving from the layer class keeps isinstance checks (transformers' output
            # capture of hidden states) true; the family's methods come first in the MRO.
            view_cls = type(f"{cls.__name__}View", (family, cls), {"__module__": __name__})
            view_cls._signature = inspect.signature(cls.forward)
            _VIEW_CLASSES[cls] = view_cls
        view = view_cls.__new__(view_cls)
        view._init_view(layer)
        for key, hook in layer._forward_hooks.items():  # transformers' hidden-state capture (see above)
            if getattr(hook, "__name__", "") == "output_capturing_hook":
                view._forward_hooks[key] = hook
        return view

    return fn


def _install_output_capture(model: nn.Module) -> None:
    """transformers' output-capturing hooks on the original, once, before its layers are viewed."""
    if "transformers" not in sys.modules:  # no transformers model can be inside
        return
    try:
        from transformers import PreTrainedModel
        from transformers.utils.output_capturing import maybe_install_capturing_hooks
    except ImportError:  # another transformers version: nothing to settle
        return
    # The innermost models (LlamaModel inside LlamaForCausalLM): the ones whose forward captures.
    # An outer model's install would re-install on them, so only these, and only where no
    # capturing hook is there yet.
    pretrained = [m for m in model.modules() if isinstance(m, PreTrainedModel)]
    for m in pretrained:
        inner = any(isinstance(c, PreTrainedModel) for c in m.modules() if c is not m)
        hooked = any(getattr(h, "__name__", "") == "output_capturing_hook"
                     for c in m.modules() for h in c._forward_hooks.values())
        if not inner and not hooked:
            maybe_install_capturing_hooks(m)


_PREPARE.append(_install_output_capture)

_M = "transformers.models"
_builtin(f"{_M}.gpt2.modeling_gpt2.GPT2Block", _adapter(GPT2BlockView))
_builtin(f"{_M}.bert.modeling_bert.BertLayer", _adapter(BertLayerView))
_builtin(f"{_M}.vit.modeling_vit.ViTLayer", _adapter(ViTLayerView))
for _arch, _cls in (("llama", "Llama"), ("mistral", "Mistral"), ("qwen2", "Qwen2")):
    _builtin(f"{_M}.{_arch}.modeling_{_arch}.{_cls}DecoderLayer", _adapter(LlamaLayerView))
