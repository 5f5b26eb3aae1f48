"""The Transformer designs' pieces that pre-LN does not have (nets/transformer.py assembles the units).

- :class:`DyT`: ``gamma * tanh(alpha x) + beta``, alpha starting at 0.5 (Zhu et al. 2025, arXiv
  2503.10622, Eq. 1 and §3: alpha0 = 0.5 for non-LLM sizes), in place of every LayerNorm;
- :class:`NormedSublayer`: ``out_norm(op(norm(x) * scale))``: Peri-LN's output norm (Kim et al.
  2025, arXiv 2502.02732, Eq. 3: the LayerNorm on the sublayer output, before the addition) and
  LayerNorm Scaling's ``1/sqrt(l)`` (Sun et al. 2025, arXiv 2502.05795, Eq. 9: layer ``l`` counts
  from 1, both sublayers of a layer share it);
- :class:`GatedSublayer`: ReZero's ``a * op(x)``, ``a`` a learned scalar starting at 0 (Bachlechner
  et al. 2020, arXiv 2003.04887, Eq. 4), no norm;
- :func:`deepnorm_constants` and :func:`deepnorm_init`: DeepNorm's alpha and beta and its
  beta-scaled Xavier initialisation (Wang et al. 2022, arXiv 2203.00555, Fig. 2 and Table 1).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..blocks import Scale

__all__ = ["DyT", "NormedSublayer", "GatedSublayer", "deepnorm_constants", "deepnorm_init", "DYT_ALPHA0"]

DYT_ALPHA0 = 0.5  # Zhu et al. 2025 §3 ("alpha0 = 0.5 ... non-LLM models")


class DyT(nn.Module):
    """Dynamic Tanh: ``weight * tanh(alpha * x) + bias`` over the last dim (Zhu et al. 2025, Eq. 1)."""

    def __init__(self, d_model: int, alpha0: float = DYT_ALPHA0) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.tensor(float(alpha0)))
        self.weight = nn.Parameter(torch.ones(d_model))
        self.bias = nn.Parameter(torch.zeros(d_model))

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(self.alpha * x) * self.weight + self.bias

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, alpha0={float(self.alpha):g}"


class NormedSublayer(nn.Module):
    """``out_norm(op(norm(x) * scale))``: pre-LN's branch with an output norm and/or a fixed scale."""

    def __init__(self, norm: nn.Module, op: nn.Module, *, scale: float = 1.0, out_norm: nn.Module | None = None) -> None:
        super().__init__()
        self.norm, self.op = norm, op
        self.out_norm = out_norm if out_norm is not None else nn.Identity()
        self.scale = float(scale)

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm(x)
        if self.scale != 1.0:
            h = h * self.scale
        return self.out_norm(self.op(h))

    def extra_repr(self) -> str:
        return f"scale={self.scale:.6g}" if self.scale != 1.0 else ""


class GatedSublayer(nn.Module):
    """``gate(op(x))`` with ``gate`` a learned scalar starting at 0: ReZero's branch, no norm."""

    def __init__(self, op: nn.Module, init: float = 0.0) -> None:
        super().__init__()
        self.op = op
        self.gate = Scale(init, learnable=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.gate(self.op(x))


def deepnorm_constants(layers: int) -> tuple[float, float]:
    """``(alpha, beta)`` for an encoder-only or decoder-only stack of ``layers`` layers.

    Wang et al. 2022 Table 1: alpha = (2N)^(1/4), beta = (8N)^(-1/4) for both (N encoder or M
    decoder layers); the encoder-decoder constants do not apply to these one-stack nets.
    """
    return (2 * layers) ** 0.25, (8 * layers) ** -0.25


def _xavier_normal(w: Tensor, gain: float) -> None:
    fan_out, fan_in = w.shape
    with torch.no_grad():
        w.normal_(0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)))


def deepnorm_init(attn: nn.Module, mlp: nn.Sequential, beta: float) -> None:
    """Wang et al. 2022 Fig. 2: Xavier-normal with gain beta for the value, output and FFN weights, gain 1 for q, k.

    ``attn.qkv`` is one fused ``(3d, d)`` weight: each ``(d, d)`` block is initialised as the
    paper's separate projection (fans of ``d``); biases keep PyTorch's default.
    """
    d = attn.out.weight.shape[0]
    q, k, v = attn.qkv.weight.split(d, dim=0)
    _xavier_normal(q, 1.0)
    _xavier_normal(k, 1.0)
    _xavier_normal(v, beta)
    _xavier_normal(attn.out.weight, beta)
    for m in mlp:
        if isinstance(m, nn.Linear):
            _xavier_normal(m.weight, beta)
