"""What a measurement scores a pretrained model by, on one fixed batch of real text.

- ``lm`` (SmolLM2 and any causal LM): next-token cross-entropy, the mean over predicted
  tokens, and its exponential, the perplexity;
- ``embed`` (all-MiniLM-L6-v2 and any sentence encoder): the batch holds ``B`` sentences and
  then the ``B`` sentences that follow them in the text; the embedding is the attention-masked
  mean of the last hidden state, L2-normalised, as sentence-transformers pools this model; the
  loss is the in-batch-negatives contrastive loss it was trained with (Multiple Negatives
  Ranking, scale 20: cross-entropy of ``20 cos(a_i, b_j)`` against ``j = i``); a lesioned model
  is scored by the mean cosine of its embeddings to the full model's and by retrieval accuracy,
  the share of sentences whose most similar candidate among the ``B`` followers is their own.

A :class:`Scorer` holds the batch and the full model's embeddings, so every lesion is scored
against the same reference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Scorer", "lm_loss", "pooled", "contrastive_loss", "SCALE"]

SCALE = 20.0  # sentence-transformers' MultipleNegativesRankingLoss default scale (1 / temperature 0.05)


def _field(out: Any, name: str) -> Tensor:
    if isinstance(out, Tensor):
        return out
    return out[name] if isinstance(out, dict) else getattr(out, name)


def lm_loss(out: Any, ids: Tensor) -> Tensor:
    """Mean next-token cross-entropy of ``out.logits`` (B, S, V) on ``ids`` (B, S)."""
    logits = _field(out, "logits")
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten().to(logits.device))


def pooled(out: Any, mask: Tensor) -> Tensor:
    """Attention-masked mean of the last hidden state, L2-normalised: (B, E)."""
    h = _field(out, "last_hidden_state")
    m = mask.to(h.device, h.dtype).unsqueeze(-1)
    return F.normalize((h * m).sum(1) / m.sum(1).clamp_min(1), dim=-1)


def contrastive_loss(emb: Tensor) -> Tensor:
    """In-batch negatives over (2B, E): rows ``i < B`` are anchors, ``B + i`` their positives."""
    b = emb.shape[0] // 2
    sim = SCALE * emb[:b] @ emb[b:].T
    return F.cross_entropy(sim, torch.arange(b, device=sim.device))


@dataclass
class Scorer:
    """One fixed batch: ``inputs`` the token ids (B, S), ``kwargs`` the other forward arguments."""

    task: str  # "lm" or "embed"
    inputs: Tensor
    kwargs: dict[str, Any] = field(default_factory=dict)
    reference: Tensor | None = None  # the full model's embeddings (embed)

    def __post_init__(self) -> None:
        if self.task not in ("lm", "embed"):
            raise ValueError(f"task must be 'lm' or 'embed', received {self.task!r}")
        if self.task == "lm":
            # No key/value cache: one forward scores the whole batch, and a model run with layers
            # removed keeps each layer's layer_idx, which would index past a cache of fewer layers.
            self.kwargs.setdefault("use_cache", False)
        if self.task == "embed" and ("attention_mask" not in self.kwargs or self.inputs.shape[0] % 2):
            raise ValueError("an embed batch needs an attention_mask and an even number of rows (B sentences, "
                             "then their B followers)")

    @classmethod
    def of(cls, task: str, batch: Any) -> Scorer:
        """From a :class:`resgrad.pretrained.TextBatch`: an LM's windows, or an encoder's sentences then
        their neighbours in one batch (each unit runs once per loss, as the path tools need)."""
        if task in ("lm", "causal-lm"):
            return cls("lm", batch.ids, {"attention_mask": batch.mask})
        if task not in ("embed", "sentence-encoder"):
            raise ValueError(f"task must be causal-lm or sentence-encoder, received {task!r}")
        return cls("embed", torch.cat([batch.ids, batch.ids_b]), {"attention_mask": torch.cat([batch.mask, batch.mask_b])})

    @property
    def tokens(self) -> int:
        m = self.kwargs.get("attention_mask")
        return int(m.sum()) if m is not None else int(self.inputs.numel())

    def loss(self, out: Any) -> Tensor:
        """The model's own objective on this batch (a scalar with its graph)."""
        if self.task == "lm":
            return lm_loss(out, self.inputs)
        return contrastive_loss(pooled(out, self.kwargs["attention_mask"]))

    def forward(self, model: nn.Module) -> Any:
        return model(self.inputs, **self.kwargs)

    @torch.no_grad()
    def score(self, model: nn.Module) -> dict[str, float]:
        """lm: ``perplexity`` and ``loss``; embed: ``cosine`` to the full model's, ``retrieval``, ``loss``."""
        was = model.training
        model.eval()
        try:
            out = self.forward(model)
        finally:
            model.train(was)
        if self.task == "lm":
            value = float(lm_loss(out, self.inputs))
            return {"loss": value, "perplexity": math.exp(value) if value < 700 else float("inf")}
        emb = pooled(out, self.kwargs["attention_mask"]).double()
        if self.reference is None:
            self.reference = emb
        b = emb.shape[0] // 2
        sim = emb[:b] @ emb[b:].T
        retrieval = float((sim.argmax(1) == torch.arange(b, device=sim.device)).double().mean())
        cosine = float((emb * self.reference.to(emb.device)).sum(-1).mean())
        return {"loss": float(contrastive_loss(emb)), "cosine": cosine, "retrieval": retrieval}

    @property
    def primary(self) -> str:
        """The number a lesion is judged by: perplexity (lm) or cosine to the full model (embed)."""
        return "perplexity" if self.task == "lm" else "cosine"
