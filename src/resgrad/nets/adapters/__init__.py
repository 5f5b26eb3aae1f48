"""Views of foreign models as resgrad Residual blocks, sharing the original parameters.

``adapt(model)`` returns a new module tree whose residual units are
``Residual(branch, shortcut, post)`` (``y = post(shortcut(x) + branch(x))``, the contract
every resgrad tool relies on) built from the *same* layer objects as the original: no
parameter or buffer is copied, so the view computes what the original computes and every
path tool, lesion and gate applies to it. Its ``state_dict`` and ``load_state_dict`` use
the original's keys (``_names``), so a checkpoint saved from the view (``save_pretrained``
included) loads into the original class, and the other way round.
The original model is not modified (its containers are shallow-copied, its layers
shared; switching the view to eval mode therefore also switches the shared layers).

Which class is viewed how is a registry (``register_adapter(cls, fn)``); one module per
family: ``_torch`` (torchvision ResNets, ``nn.TransformerEncoder``), ``hf`` (Hugging
Face GPT-2, BERT, Llama/Mistral/Qwen2, ViT) and ``timm`` (ResNet/ResNeXt, ConvNeXt, ViT).
The optional packages are never imported to adapt a model that does not use them.
``locate_units(model)`` says where each unit's input and output appear in the original's
own forward, so a probe can hook the unchanged model (``_sites``).
"""

from . import _torch, hf, timm  # noqa: F401  (each registers its adapters)
from ._registry import SUPPORTED, adapt, register_adapter, registered
from ._sites import UnitSite, locate_units
from ._torch import EncoderLayerView, EncoderView

__all__ = ["adapt", "register_adapter", "registered", "SUPPORTED", "EncoderLayerView", "EncoderView",
           "UnitSite", "locate_units"]
