"""What is measured: Residual/Plain blocks, the MLP and He et al. families, a registry, model specs.

``build`` is :func:`resgrad.nets.spec.build`: a registry name (``build("resnet56")``,
``build("resnet", depth=74)``) or any SPEC the commands take (``build("timm:resnet18")``).
"""

from .adapters import adapt, register_adapter
from .blocks import Block, Plain, Residual, Scale, blocks, gates, residual_blocks
from .he2015 import HeNet, ShortcutA, he_net, valid_depths
from .mlp import MLP
from .registry import InputContract, build_for, contract_of, describe, family_of, list_models, register_model
from .spec import ResolvedModel, build, resolve_spec

__all__ = [
    "Block", "Plain", "Residual", "Scale", "blocks", "gates", "residual_blocks",
    "HeNet", "ShortcutA", "he_net", "valid_depths", "MLP",
    "build", "build_for", "describe", "family_of", "list_models", "register_model",
    "InputContract", "contract_of", "ResolvedModel", "resolve_spec",
    "adapt", "register_adapter",
]
