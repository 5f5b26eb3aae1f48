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

The designs of issue 21 are further kinds (:data:`DESIGN_KINDS`), built here from the same
attention and MLP ops, in the same order, so a seed gives every kind the same op weights
(DeepNorm re-initialises its own). Each sublayer stays one Residual unit; the pieces pre-LN lacks
are in ``nets/designs/`` (units.py, hyper.py), cited there:

- ``deepnorm``: ``LN(alpha x + F(x))``, the skip a fixed :class:`~resgrad.nets.blocks.Scale`,
  beta-scaled init (Wang et al. 2022, arXiv 2203.00555);
- ``periln``: ``x + LN_out(F(LN(x)))`` (Kim et al. 2025, arXiv 2502.02732);
- ``lns``: ``x + F(LN(x) / sqrt(l))``, ``l`` the layer from 1 (Sun et al. 2025, arXiv 2502.05795);
- ``mixln``: post-LN units in the first ``floor(layers / 4)`` layers, pre-LN after (Li et al.
  2024, arXiv 2412.13795, alpha = 0.25: fewer than 4 layers are all pre-LN);
- ``rezero``: ``x + a F(x)``, ``a = 0`` at init, no LayerNorm, no final norm (Bachlechner et al.
  2020, arXiv 2003.04887);
- ``dyt``: pre-LN with every LayerNorm (the final one too) a DyT (Zhu et al. 2025, arXiv 2503.10622);
- ``hc``, ``hc-dynamic``: four streams, static or dynamic hyper-connections (Zhu et al. 2024,
  arXiv 2409.19606); ``mhc``: their mixing doubly stochastic (DeepSeek-AI 2025, arXiv 2512.24880).
  The input is copied to the streams before the first unit and summed after the last.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .blocks import Plain, Residual, Scale
from .designs.hyper import HCConnections, MHCConnections, StreamBranch, StreamExpand, StreamMix, StreamSum
from .designs.units import DyT, GatedSublayer, NormedSublayer, deepnorm_constants, deepnorm_init

__all__ = ["Transformer", "KINDS", "DESIGN_KINDS", "ALL_KINDS", "STREAMS", "SelfAttention", "Sublayer"]

KINDS = ("preln", "postln", "noskip")  # the three twins the Transformer experiment compares
DESIGN_KINDS = ("deepnorm", "periln", "lns", "mixln", "rezero", "dyt", "hc", "hc-dynamic", "mhc")
ALL_KINDS = KINDS + DESIGN_KINDS
STREAMS = 4  # residual streams of the hyper-connection kinds (n = 4: Zhu et al. 2024 §4; DeepSeek-AI 2025 §5)
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


def _unit(kind: str, op: nn.Module, d_model: int, layer: int, layers: int, index: int) -> nn.Module:
    """One sublayer unit of ``kind``; ``layer`` counts from 0, ``index`` is the unit's place in the chain."""
    if kind == "rezero":
        return Residual(GatedSublayer(op))
    norm: nn.Module = DyT(d_model) if kind == "dyt" else nn.LayerNorm(d_model)
    if kind == "postln":
        return Residual(Sublayer(norm, op, norm_first=False), post=_PostNorm(norm))
    if kind == "preln" or kind == "dyt":
        return Residual(Sublayer(norm, op, norm_first=True))
    if kind == "noskip":
        return Plain(Sublayer(norm, op, norm_first=True))
    if kind == "deepnorm":
        alpha = deepnorm_constants(layers)[0]
        return Residual(Sublayer(norm, op, norm_first=False), shortcut=Scale(alpha, learnable=False),
                        post=_PostNorm(norm))
    if kind == "periln":
        return Residual(NormedSublayer(norm, op, out_norm=nn.LayerNorm(d_model)))
    if kind == "lns":
        return Residual(NormedSublayer(norm, op, scale=1.0 / math.sqrt(layer + 1)))
    if kind in ("hc", "hc-dynamic"):
        conn: nn.Module = HCConnections(STREAMS, d_model, index, dynamic=kind == "hc-dynamic")
    else:  # mhc
        conn = MHCConnections(STREAMS, d_model)
    return Residual(StreamBranch(Sublayer(norm, op, norm_first=True), conn), shortcut=StreamMix(conn))


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
        if kind not in ALL_KINDS:
            raise ValueError(f"kind must be one of {', '.join(ALL_KINDS)}, received {kind!r}")
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
        for layer in range(layers):
            ops = (SelfAttention(d_model, n_heads, causal=task == "lm"), _mlp(d_model, mlp_ratio))
            for j, op in enumerate(ops):
                unit_kind = kind
                if kind == "mixln":  # Li et al. 2024: post-LN in the first floor(alpha L) layers, alpha = 0.25
                    unit_kind = "postln" if layer < layers // 4 else "preln"
                units.append(_unit(unit_kind, op, d_model, layer, layers, 2 * layer + j))
            if kind == "deepnorm":
                deepnorm_init(ops[0], ops[1], deepnorm_constants(layers)[1])
        self.blocks = nn.Sequential(*units)
        self.streams = STREAMS if kind in ("hc", "hc-dynamic", "mhc") else 1
        if self.streams > 1:
            self.expand, self.reduce = StreamExpand(self.streams), StreamSum()
        self.norm = nn.Identity() if kind == "rezero" else DyT(d_model) if kind == "dyt" else nn.LayerNorm(d_model)
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
        h = h + self.pos[: h.shape[1]]
        h = self.norm(self.reduce(self.blocks(self.expand(h))) if self.streams > 1 else self.blocks(h))
        return self.head(h.mean(1)) if self.task == "classify" else self.head(h).transpose(1, 2)
