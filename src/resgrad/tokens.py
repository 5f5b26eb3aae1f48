"""Token inputs for language models, shared by ``resgrad diagnose``, ``paths`` and ``lesion``.

Inputs are token ids, either random (``random_ids``: uniform over ``[0, vocab)``, seeded) or
cut from a text file (``text_ids``): the tokenisation is **bytes** -- each byte of the file
(UTF-8 as stored) is one id in ``[0, 256)`` -- and the file is cut into consecutive,
non-overlapping sequences of ``seq_len`` bytes. A byte id must be ``< vocab`` (a vocabulary of
256 or more holds every byte).

The loss is the model's own when it gives one: a Hugging Face model is called with
``labels=input_ids`` and its ``.loss`` read (a causal LM shifts the labels itself: next-token
cross-entropy; a masked LM scores every position against its own id). Otherwise it is the mean
cross-entropy over the logits (``.logits``, the first element of a tuple, or the tensor) against
the next token (causal) or the same token (not causal) -- the same number, checked against
``.loss`` in tests/cli/test_tokens.py.

``TokenView(model)`` is that model as the path tools expect it: ids ``(B, T)`` in, class-major
logits ``(B, V, T')`` out (``T' = T - 1`` for a causal LM: the positions that have a next token),
so ``F.cross_entropy(view(ids), targets(ids))`` and ``argmax(1)`` work as for a classifier.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["BYTE_VOCAB", "random_ids", "text_ids", "is_token_model", "is_causal", "max_positions", "model_vocab",
           "check_tokens", "TokenView", "LogitsView", "targets", "logits_of", "own_loss", "token_bundle"]

BYTE_VOCAB = 256  # ids the byte tokenisation of --text can produce


def random_ids(vocab: int, seq_len: int, n: int, seed: int = 0) -> Tensor:
    """``(n, seq_len)`` int64 ids drawn uniformly from ``[0, vocab)`` with ``seed``."""
    if vocab < 1 or seq_len < 1 or n < 1:
        raise ValueError(f"vocab, seq_len and the batch size must be >= 1, received {vocab}, {seq_len}, {n}")
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (n, seq_len), generator=g)


def text_ids(path: str | Path, seq_len: int, n: int, vocab: int | None = None) -> Tensor:
    """``(m, seq_len)`` byte ids (``m <= n``) cut consecutively from the file at ``path``."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"--text {path}: no such file; pass a text file to cut token sequences from")
    data = p.read_bytes()
    from .data.text import not_text

    why = not_text(data)
    if why is not None:
        raise ValueError(f"--text {path} is not text: {why}; give a plain text file (its bytes are the token ids)")
    if len(data) < seq_len:
        raise ValueError(f"--text {path} holds {len(data)} bytes, fewer than one sequence of --seq-len {seq_len}; "
                         "give a longer file or a shorter --seq-len")
    m = min(n, len(data) // seq_len)
    ids = torch.frombuffer(bytearray(data[: m * seq_len]), dtype=torch.uint8).to(torch.int64).view(m, seq_len)
    top = int(ids.max())
    if vocab is not None and top >= vocab:
        raise ValueError(f"--text {path} has byte ids up to {top} (byte tokenisation) but the vocabulary is {vocab}; "
                         f"pass --vocab {BYTE_VOCAB} (or more), or a text of bytes < {vocab}")
    return ids


def _config(model: nn.Module) -> Any:
    return getattr(model, "config", None)


def is_token_model(model: nn.Module) -> bool:
    """Whether the model takes token ids: it has an embedding table."""
    return any(isinstance(m, nn.Embedding) for m in model.modules())


def is_causal(model: nn.Module) -> bool:
    """A causal LM (predicts the next token)? HF: ``can_generate()``; other models: yes."""
    can = getattr(model, "can_generate", None)
    if callable(can) and _config(model) is not None:
        return bool(can())
    return True


def max_positions(model: nn.Module) -> int | None:
    """The longest sequence the model has positions for (HF config), or None when unknown."""
    c = _config(model)
    for key in ("max_position_embeddings", "n_positions"):
        v = getattr(c, key, None)
        if isinstance(v, int) and v > 0:
            return v
    return None


def model_vocab(model: nn.Module) -> int | None:
    """The model's vocabulary size: its config's, else the largest embedding's, else None."""
    v = getattr(_config(model), "vocab_size", None)
    if isinstance(v, int) and v > 0:
        return v
    sizes = [m.num_embeddings for m in model.modules() if isinstance(m, nn.Embedding)]
    return max(sizes) if sizes else None


def check_tokens(model: nn.Module, name: str, ids: Tensor, vocab: int | None, seq_len: int) -> None:
    """One-line ValueErrors for token inputs the model cannot take."""
    if not is_token_model(model):
        raise ValueError(f"{name} has no embedding layer, so it takes float inputs, not token ids; drop "
                         "--vocab/--seq-len/--text and pass --input-shape or --data")
    need = model_vocab(model)
    if vocab is not None and need is not None and vocab > need:
        raise ValueError(f"--vocab {vocab} is larger than {name}'s vocabulary of {need}; pass --vocab {need} or less")
    top = int(ids.max()) if ids.numel() else -1
    if need is not None and top >= need:
        raise ValueError(f"token ids go up to {top} but {name}'s vocabulary has {need}; "
                         f"build it with --vocab {top + 1} or more (hf:ARCH) or use ids < {need}")
    pos = max_positions(model)
    if pos is not None and seq_len > pos:
        raise ValueError(f"--seq-len {seq_len} is longer than {name}'s {pos} positions; pass --seq-len {pos} or less")


def logits_of(out: Any) -> Tensor:
    """The logits of a model's output: ``.logits``, a tuple's first tensor, or the tensor."""
    if isinstance(out, Tensor):
        return out
    lg = getattr(out, "logits", None)
    if isinstance(lg, Tensor):
        return lg
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], Tensor):
        return out[0]
    raise ValueError(f"the model returned {type(out).__name__} with no logits; token tools need (B, T, V) logits")


def _call(model: nn.Module, ids: Tensor, **kw: Any) -> Any:
    return model(input_ids=ids, **kw) if _config(model) is not None else model(ids, **kw)


def targets(ids: Tensor, causal: bool) -> Tensor:
    """What each scored position predicts: the next id (causal) or its own id."""
    return ids[:, 1:] if causal else ids


class LogitsView(nn.Module):
    """``model`` with its output reduced to the logits tensor (an HF image classifier returns
    ``ImageClassifierOutput``; the path tools need a tensor)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, **kw: Any) -> Tensor:
        return logits_of(self.model(x, **kw))


class TokenView(nn.Module):
    """``model`` as ids ``(B, T)`` -> class-major logits ``(B, V, T')`` (see the module docstring)."""

    def __init__(self, model: nn.Module, causal: bool | None = None) -> None:
        super().__init__()
        self.model = model
        self.causal = is_causal(model) if causal is None else causal

    def forward(self, ids: Tensor, **kw: Any) -> Tensor:
        lg = logits_of(_call(self.model, ids, **kw))
        if self.causal:
            lg = lg[:, :-1]
        return lg.transpose(1, 2)


def own_loss(model: nn.Module, ids: Tensor, causal: bool | None = None, **kw: Any) -> Tensor:
    """The model's own mean loss on ``ids`` (``labels=ids``, ``.loss``), else cross-entropy over its logits."""
    causal = is_causal(model) if causal is None else causal
    if _config(model) is not None:
        out = model(input_ids=ids, labels=ids, **kw)
        loss = getattr(out, "loss", None)
        if isinstance(loss, Tensor):
            return loss
    else:
        out = model(ids, **kw)
    lg = logits_of(out)
    if causal:
        lg = lg[:, :-1]
    return F.cross_entropy(lg.transpose(1, 2).float(), targets(ids, causal))


def token_bundle(ids: Tensor, vocab: int, causal: bool, name: str) -> Any:
    """The ids as a DataBundle for the path tools: x = ids, y = ``targets(ids)``, ``vocab`` classes."""
    from .data import DataBundle

    y = targets(ids, causal)
    return DataBundle(name=name, x_train=ids, y_train=y, x_test=ids, y_test=y, num_classes=vocab,
                      info={"inputs": "token ids", "causal": causal})
