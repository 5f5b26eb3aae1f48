"""A pretrained model's own training objective on real text: the batches, the loss, the perplexity.

- causal LM (SmolLM2): ``batches`` cuts the tokenised corpus into non-overlapping windows of
  ``seq_len`` tokens (``n`` of them, drawn by ``seed``); ``loss`` is the mean next-token
  cross-entropy over every position that has a next token, ``perplexity`` its exponential.
- sentence encoder (all-MiniLM-L6-v2): ``batches`` takes ``n`` pairs of neighbouring sentences
  of one paragraph (disjoint pairs, drawn by ``seed``; each truncated to ``seq_len`` tokens);
  ``loss`` is the loss the model was trained with, sentence-transformers'
  MultipleNegativesRankingLoss: mean pooling over the attention mask, L2-normalised embeddings,
  cosine scores times 20, cross-entropy of each first sentence against its own neighbour with
  the batch's other neighbours as negatives (Henderson et al. 2017, arXiv 1705.00652; the
  all-MiniLM-L6-v2 model card). Both sentences of every pair go through the model in one
  forward (a batch of ``2n``), so each residual unit runs once per loss, as the path tools need.
  ``perplexity`` is the exponential of that loss (its effective number of candidates).

``ObjectiveView`` is a model as resgrad's path and lesion tools take it: a packed batch tensor in,
logits out, so that their summed cross-entropy against ``targets(batch)`` is ``n`` (or the number
of scored tokens) times :func:`loss` and their error rate is the next-token error or the
neighbour-retrieval error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.corpus import Corpus
from .load import Pretrained, PretrainedError

__all__ = ["TextBatch", "batches", "loss", "perplexity", "embed", "ObjectiveView", "targets", "SCALE",
           "sentence_pairs", "side_by_side_scores", "mean_pool"]

SCALE = 20.0  # MultipleNegativesRankingLoss's default scale (sentence-transformers), used to train MiniLM
MIN_WORDS = 3  # a "sentence" of fewer words (a heading, a code token) is not a sentence to pair


@dataclass
class TextBatch:
    """Token ids and attention masks ``(n, T)``; for a sentence encoder also the neighbours ``ids_b``/``mask_b``."""

    ids: Tensor
    mask: Tensor
    task: str
    ids_b: Tensor | None = None
    mask_b: Tensor | None = None
    info: dict[str, Any] = field(default_factory=dict)  # the corpus's name/sha256, seq_len, tokens, seed

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    @property
    def seq_len(self) -> int:
        return int(self.ids.shape[1])

    def to(self, device: torch.device | str) -> TextBatch:
        def mv(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device)

        return TextBatch(self.ids.to(device), self.mask.to(device), self.task, mv(self.ids_b), mv(self.mask_b),
                         dict(self.info))

    def packed(self) -> Tensor:
        """One int64 tensor ``(n, k, T)`` for tools that take a tensor batch (``unpack`` reads it).

        Rows: ids, mask (LM); ids, mask, ids_b, mask_b, and a row holding each pair's index in
        this batch and the batch size (encoder), so any slice of it still knows its neighbours."""
        rows = [self.ids, self.mask]
        if self.task == "sentence-encoder":
            assert self.ids_b is not None and self.mask_b is not None
            index = torch.zeros_like(self.ids)
            index[:, 0] = torch.arange(len(self), device=self.ids.device)
            index[:, 1] = len(self)
            rows += [self.ids_b, self.mask_b, index]
        return torch.stack(rows, 1).long()

    @staticmethod
    def unpack(x: Tensor | TextBatch, task: str | None = None) -> TextBatch:
        """The batch a :meth:`packed` tensor (or a slice of one) holds."""
        if isinstance(x, TextBatch):
            return x
        if not isinstance(x, Tensor) or x.dim() != 3 or x.shape[1] not in (2, 5):
            raise ValueError(f"a packed text batch is an int tensor (n, 2 or 5, T), received "
                             f"{tuple(getattr(x, 'shape', ()))}")
        if x.shape[1] == 2:
            return TextBatch(x[:, 0], x[:, 1], task or "causal-lm")
        return TextBatch(x[:, 0], x[:, 1], task or "sentence-encoder", x[:, 2], x[:, 3],
                         {"index": x[:, 4, 0], "of": int(x[0, 4, 1]) if len(x) else 0})


# ---- batches ------------------------------------------------------------------------------

_TOKENS: dict[tuple[int, str], Tensor] = {}  # (tokenizer id, corpus sha256) -> the corpus's token ids


def _token_ids(pre: Pretrained, corpus: Corpus) -> Tensor:
    key = (id(pre.tokenizer), corpus.sha256)
    if key not in _TOKENS:
        ids = pre.tokenizer(corpus.text, add_special_tokens=False, verbose=False)["input_ids"]
        if len(_TOKENS) > 4:
            _TOKENS.clear()
        _TOKENS[key] = torch.tensor(ids, dtype=torch.long)
    return _TOKENS[key]


def _check(seq_len: int, n: int) -> None:
    for name, v, lo in (("seq_len", seq_len, 2), ("n", n, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f"{name} must be an integer >= {lo}, received {v!r}")


def batches(pre: Pretrained, corpus: Corpus, *, seq_len: int, n: int, seed: int = 0) -> TextBatch:
    """``n`` examples of ``corpus`` for ``pre``'s objective (see the module docstring), drawn by ``seed``.

    Fewer than ``n`` when the text holds fewer; a text with no full window of ``seq_len`` tokens
    (LM), or fewer than two pairs of neighbouring sentences (encoder), is a one-line error."""
    _check(seq_len, n)
    if pre.max_length is not None and seq_len > pre.max_length:
        raise PretrainedError(f"--seq-len {seq_len} is longer than {pre.name}'s {pre.max_length} positions; "
                              f"pass --seq-len {pre.max_length} or less")
    g = torch.Generator().manual_seed(int(seed))
    info = {"corpus": corpus.info(), "seq_len": seq_len, "seed": seed}
    if pre.task == "sentence-encoder":
        return _pairs(pre, corpus, seq_len, n, g, info)
    ids = _token_ids(pre, corpus)
    windows = len(ids) // seq_len
    if windows < 1:
        raise PretrainedError(f"the text {corpus.name} holds {len(ids)} tokens of {pre.name}'s tokenizer, fewer "
                              f"than one sequence of --seq-len {seq_len}; give a longer text or a shorter --seq-len")
    pick = torch.randperm(windows, generator=g)[: min(n, windows)].sort().values
    x = ids[: windows * seq_len].view(windows, seq_len)[pick]
    info.update(tokens=int(len(ids)), windows=int(windows), picked=pick.tolist())
    return TextBatch(x.clone(), torch.ones_like(x), "causal-lm", info=info)


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z(\"'`])")


def sentence_pairs(text: str) -> list[tuple[str, str]]:
    """Disjoint pairs of neighbouring sentences, each pair inside one paragraph (blank-line separated)."""
    pairs = []
    for para in re.split(r"\n\s*\n", text):
        flat = " ".join(para.split())
        sents = [s for s in _SENTENCE_END.split(flat) if len(s.split()) >= MIN_WORDS and re.search(r"[a-z]", s)]
        pairs.extend((sents[i], sents[i + 1]) for i in range(0, len(sents) - 1, 2))
    return pairs


def _pairs(pre: Pretrained, corpus: Corpus, seq_len: int, n: int, g: torch.Generator,
           info: dict[str, Any]) -> TextBatch:
    pairs = sentence_pairs(corpus.text)
    if len(pairs) < 2:
        raise PretrainedError(f"the text {corpus.name} holds {len(pairs)} pair(s) of neighbouring sentences (of "
                              f"{MIN_WORDS}+ words, in one paragraph); the contrastive loss needs 2 or more: give "
                              "a longer text")
    pick = torch.randperm(len(pairs), generator=g)[: min(n, len(pairs))].sort().values.tolist()
    if len(pick) < 2:
        pick = [0, 1]
    a = [pairs[i][0] for i in pick]
    b = [pairs[i][1] for i in pick]
    enc = pre.tokenizer(a + b, padding=True, truncation=True, max_length=seq_len, return_tensors="pt")
    ids, mask = enc["input_ids"].long(), enc["attention_mask"].long()
    m = len(pick)
    info.update(pairs=len(pairs), picked=pick)
    return TextBatch(ids[:m], mask[:m], "sentence-encoder", ids[m:], mask[m:], info=info)


# ---- the objective ------------------------------------------------------------------------

def _hidden(out: Any) -> Tensor:
    h = getattr(out, "last_hidden_state", None)
    if isinstance(h, Tensor):
        return h
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], Tensor):
        return out[0]
    if isinstance(out, Tensor):
        return out
    raise ValueError(f"the encoder returned {type(out).__name__} with no hidden states")


def _logits(out: Any) -> Tensor:
    lg = getattr(out, "logits", None)
    if isinstance(lg, Tensor):
        return lg
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], Tensor):
        return out[0]
    if isinstance(out, Tensor):
        return out
    raise ValueError(f"the language model returned {type(out).__name__} with no logits")


def mean_pool(hidden: Tensor, mask: Tensor) -> Tensor:
    """sentence-transformers' mean pooling: the average of the token states the mask keeps."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


def embed(pre: Pretrained, ids: Tensor, mask: Tensor, model: nn.Module | None = None) -> Tensor:
    """L2-normalised mean-pooled sentence embeddings ``(n, hidden)`` (what sentence-transformers returns)."""
    m = pre.model if model is None else model
    return F.normalize(mean_pool(_hidden(m(input_ids=ids, attention_mask=mask)), mask), dim=-1)


def _pair_scores(pre: Pretrained, batch: TextBatch, model: nn.Module | None) -> tuple[Tensor, Tensor]:
    """(SCALE x cosine of every first sentence with every neighbour ``(n, n)``, and the embeddings' index)."""
    assert batch.ids_b is not None and batch.mask_b is not None
    n = len(batch)
    ids, mask = torch.cat([batch.ids, batch.ids_b]), torch.cat([batch.mask, batch.mask_b])
    e = embed(pre, ids, mask, model)
    return SCALE * e[:n] @ e[n:].T, torch.arange(n, device=e.device)


def _lm_logits(pre: Pretrained, batch: TextBatch, model: nn.Module | None) -> Tensor:
    m = pre.model if model is None else model
    return _logits(m(input_ids=batch.ids, attention_mask=batch.mask))


def targets(batch: TextBatch) -> Tensor:
    """What :class:`ObjectiveView` scores each row against: the next tokens (-100 where masked out) for the
    LM; each pair's index in the batch for the encoder."""
    if batch.task == "sentence-encoder":
        return batch.info["index"] if "index" in batch.info else torch.arange(len(batch), device=batch.ids.device)
    y = batch.ids[:, 1:].clone()
    y[(batch.mask[:, 1:] == 0) | (batch.mask[:, :-1] == 0)] = -100
    return y


def loss(pre: Pretrained, batch: TextBatch | Tensor, model: nn.Module | None = None) -> Tensor:
    """The model's own training loss on ``batch`` (a scalar): next-token cross-entropy (LM), or the
    in-batch contrastive loss over neighbouring-sentence pairs (encoder). ``model``: an edited or
    adapted copy to call instead of ``pre.model`` (same call signature)."""
    batch = TextBatch.unpack(batch, pre.task)
    if batch.task == "sentence-encoder":
        scores, labels = _pair_scores(pre, batch, model)
        return F.cross_entropy(scores.float(), labels)
    lg = _lm_logits(pre, batch, model)[:, :-1]
    # Rows of (positions, vocabulary), the softmax over the last, contiguous dimension, as transformers'
    # own loss does: over SmolLM2's 49,152 classes a softmax along a strided dimension (class-major
    # (B, V, T)) is 3.5e-5 off in float32 (measured on the pinned licence text).
    return F.cross_entropy(lg.reshape(-1, lg.shape[-1]).float(), targets(batch).reshape(-1), ignore_index=-100)


def perplexity(pre: Pretrained, batch: TextBatch | Tensor, model: nn.Module | None = None) -> float:
    """``exp(loss)``, without gradients: the LM's perplexity per token; for the encoder, the effective
    number of in-batch candidates its contrastive loss leaves (1 is perfect retrieval, ``n`` chance)."""
    with torch.no_grad():
        return float(torch.exp(loss(pre, batch, model).double()))


def side_by_side_scores(batch: TextBatch, model: nn.Module) -> Tensor:
    """:func:`loss`'s ``(n, n)`` scores from ONE row per pair: each pair's two sentences side by side in
    a sequence of ``2T``, a block-diagonal attention mask keeping each sentence to itself and each
    half's positions counted from 0, so every half computes what it computes alone (the test checks
    it against the separate forward). The path tools need this: one example row per pair, so a
    sampled path (one per example) and the recorded unit inputs line up with the batch."""
    assert batch.ids_b is not None and batch.mask_b is not None
    n, t = batch.ids.shape
    p = next((q for q in model.parameters() if q.is_floating_point()), None)
    dtype = p.dtype if p is not None else torch.float32
    dev = batch.ids.device
    half = torch.arange(2 * t, device=dev) >= t
    keys = torch.cat([batch.mask, batch.mask_b], 1).bool()  # (n, 2t) real tokens
    allowed = (half[:, None] == half[None, :])[None] & keys[:, None, :]  # (n, 2t queries, 2t keys)
    mask4 = torch.zeros(n, 1, 2 * t, 2 * t, dtype=dtype, device=dev).masked_fill(
        ~allowed[:, None], torch.finfo(dtype).min)
    pos = torch.arange(t, device=dev).repeat(2)[None].expand(n, -1)
    h = _hidden(model(input_ids=torch.cat([batch.ids, batch.ids_b], 1), attention_mask=mask4, position_ids=pos))
    ea = F.normalize(mean_pool(h[:, :t], batch.mask), dim=-1)
    eb = F.normalize(mean_pool(h[:, t:], batch.mask_b), dim=-1)
    return SCALE * ea @ eb.T


class ObjectiveView(nn.Module):
    """``model`` (default ``pre.view``, the adapted model) as the path and lesion tools take it.

    In: a packed batch ``(B, k, T)`` (:meth:`TextBatch.packed`, or a slice of one). Out: class-major
    next-token logits ``(B, V, T-1)`` (LM), or ``(B, N)`` scores (encoder: column ``j`` is the
    score against pair ``j``'s neighbour, -inf for pairs not in this slice, so negatives are the
    slice's own; the two sentences of a pair run side by side in one row, see
    :func:`side_by_side_scores`). Against :func:`targets` of the whole batch, the summed
    cross-entropy is the objective's sum and ``argmax(1)`` is the predicted next token or the
    retrieved neighbour."""

    def __init__(self, pre: Pretrained, model: nn.Module | None = None) -> None:
        super().__init__()
        self.model = pre.view if model is None else model
        self.task = pre.task
        self._pre = [pre]  # not a submodule: the view already holds the shared layers
        # Eval mode, as the model was loaded: a tool that saves and restores this module's own flag
        # (model.train(was)) would otherwise put the shared layers, dropout included, in train mode.
        self.eval()

    def forward(self, x: Tensor) -> Tensor:
        pre = self._pre[0]
        batch = TextBatch.unpack(x, self.task)
        if self.task != "sentence-encoder":
            return _lm_logits(pre, batch, self.model)[:, :-1].transpose(1, 2)
        scores = side_by_side_scores(batch, self.model)
        index, total = batch.info["index"], max(batch.info["of"], int(batch.info["index"].max()) + 1)
        out = scores.new_full((len(batch), total), float("-inf"))
        return out.index_copy(1, index, scores)
