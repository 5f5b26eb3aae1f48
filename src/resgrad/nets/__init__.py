"""What is measured: Residual/Plain blocks, the MLP and He et al. families, a registry."""

from .adapters import adapt, register_adapter
from .blocks import Block, Plain, Residual, Scale, blocks, gates, residual_blocks
from .he2015 import HeNet, ShortcutA, he_net, valid_depths
from .mlp import MLP
from .registry import build, build_for, describe, family_of, list_models, register_model

__all__ = [
    "Block", "Plain", "Residual", "Scale", "blocks", "gates", "residual_blocks",
    "HeNet", "ShortcutA", "he_net", "valid_depths", "MLP",
    "build", "build_for", "describe", "family_of", "list_models", "register_model",
    "adapt", "register_adapter",
]
