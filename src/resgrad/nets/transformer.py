"""Small Transformers built from resgrad's own Residual/Plain units, as three twins.

Each layer is two units (attention sublayer, MLP sublayer), so an ``L``-layer net has
``2L`` blocks in one flat chain (the path tools see a simple chain of units):

- ``preln``: ``x + F(LN(x))`` with a final LN before the head (Xiong et al. 2020,
  arXiv 2002.04745, Fig. 1b);
- ``postln``: ``LN(x + F(x))``, the norm after the addition, on the skip path
  (Vaswani et al. 2017; Xiong et al. 2020 Fig. 1a);
- ``noskip``: ``F(LN(x))`` (Plain units, norm placed as in pre-LN).

The three have identical ``state_dict`` keys and parameter counts: a sublayer's LayerNorm
is always registered as ``branch.norm``; in the post-LN twin the branch skips it and the
block's ``post`` applies that same module after the sum (``post`` holds it unregistered,
so it is stored once). The final LN is kept in all three so the keys match; in post-LN
it follows the last sublayer's LN and only adds an affine map.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .blocks import Plain, Residual

__all__ = ["Transformer", "KINDS", "SelfAttention", "Sublayer"]

KINDS = ("preln", "postln", "noskip")
Task = Literal["classify", "lm"]


class SelfAttention(nn.Module):
    """Multi-head self-attention over ``(B, T, d)`` through ``scaled_dot_product_attention``."""

    def __init__(self, d_model: int, n_heads: int, causal: bool) -> None:
        super().__init__()
        self.n_heads, self.causal = n_heads, causal
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        return self.out(y.transpose(1, 2).reshape(b, t, d))


def _mlp(d_model: int, ratio: int) -> nn.Module:
    return nn.Sequential(nn.Linear(d_model, ratio * d_model), nn.GELU(), nn.Linear(ratio * d_model, d_model))


class Sublayer(nn.Module):
    """``op(norm(x))`` (pre-LN, no skip) or ``op(x)`` (post-LN: the norm runs in ``post``)."""

    def __init__(self, norm: nn.LayerNorm, op: nn.Module, norm_first: bool) -> None:
        super().__init__()
        self.norm, self.op, self.norm_first = norm, op, norm_first

    def forward(self, x: Tensor) -> Tensor:
        return self.op(self.norm(x) if self.norm_first else x)


class _PostNorm(nn.Module):
    """Applies a LayerNorm registered elsewhere (the branch's), so keys match the twins."""

    def __init__(self, norm: nn.LayerNorm) -> None:
        super().__init__()
        self._norm = (norm,)  # a tuple: not a registered submodule, no second state_dict entry

    def forward(self, x: Tensor) -> Tensor:
        return self._norm[0](x)


class Transformer(nn.Module):
    """Embedding + positions -> ``2 * layers`` units -> final LN -> head.

    ``task="classify"``: inputs ``(B, length)`` or ``(B, 1, length)`` cut into ``length //
    patch`` patches, linearly embedded, mean-pooled before the head. ``task="lm"``: integer
    tokens ``(B, T)`` (``T <= context``), causal attention, class-major logits ``(B, vocab, T)``
    (what ``F.cross_entropy`` takes with next-token targets ``(B, T)``, as in resgrad.data.text).
    """

    def __init__(
        self,
        layers: int = 4,
        *,
        kind: str = "preln",
        d_model: int = 32,
        n_heads: int = 4,
        mlp_ratio: int = 4,
        task: Task = "classify",
        length: int = 40,
        patch: int = 4,
        num_classes: int = 10,
        vocab: int = 64,
        context: int = 32,
    ) -> None:
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, received {kind!r}")
        if task not in ("classify", "lm"):
            raise ValueError(f"task must be 'classify' or 'lm', received {task!r}")
        if not isinstance(layers, int) or layers < 1:
            raise ValueError(f"layers must be an integer >= 1, received {layers!r}")
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        if task == "classify" and (length % patch or patch < 1):
            raise ValueError(f"length ({length}) must be a multiple of patch ({patch})")
        self.kind, self.task, self.patch = kind, task, patch
        if task == "classify":
            self.embed: nn.Module = nn.Linear(patch, d_model)
            t, out = length // patch, num_classes
        else:
            self.embed = nn.Embedding(vocab, d_model)
            t, out = context, vocab
        self.pos = nn.Parameter(torch.randn(t, d_model) * 0.02)
        units: list[nn.Module] = []
        for _ in range(layers):
            for op in (SelfAttention(d_model, n_heads, causal=task == "lm"), _mlp(d_model, mlp_ratio)):
                norm = nn.LayerNorm(d_model)
                if kind == "postln":
                    units.append(Residual(Sublayer(norm, op, norm_first=False), post=_PostNorm(norm)))
                elif kind == "preln":
                    units.append(Residual(Sublayer(norm, op, norm_first=True)))
                else:
                    units.append(Plain(Sublayer(norm, op, norm_first=True)))
        self.blocks = nn.Sequential(*units)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, out)

    def forward(self, x: Tensor) -> Tensor:
        if self.task == "classify":
            h = self.embed(x.reshape(x.shape[0], -1, self.patch))  # (B, T, d)
        else:
            if x.dim() != 2 or x.shape[1] > self.pos.shape[0]:
                raise ValueError(
                    f"an LM takes tokens (B, T<={self.pos.shape[0]}), received shape {tuple(x.shape)}"
                )
            h = self.embed(x)
        h = self.norm(self.blocks(h + self.pos[: h.shape[1]]))
        return self.head(h.mean(1)) if self.task == "classify" else self.head(h).transpose(1, 2)
