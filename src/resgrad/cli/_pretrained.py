"""The CLI side of pretrained SPECs (``pretrained:NAME``, ``gguf:FILE``, ``hf:FOLDER`` with a tokenizer):
real text in, the model's own objective as the loss, for ``resgrad diagnose``, ``paths`` and ``lesion``.

``--text FILE`` is tokenised by the model's own tokenizer (default: the offline corpus,
``pydoc_data.topics``); ``--seq-len`` is the window (LM) or the most tokens per sentence
(encoder); ``--batch-size`` the windows or neighbouring-sentence pairs. The token options of the
byte-id form (``--vocab``, ``--layers``, ``--width``) and ``--input-shape``/``--data`` do not
apply and are refused in one line.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._common import UsageError

if TYPE_CHECKING:
    from torch import nn

    from resgrad.data import DataBundle
    from resgrad.pretrained import Pretrained, TextBatch

__all__ = ["is_pretrained", "text_batch", "bundle_of", "tools_model", "SEQ_LEN", "refuse"]

SEQ_LEN = 64  # tokens per window (LM) or per sentence (encoder) when --seq-len is not given


def is_pretrained(spec: str) -> bool:
    from resgrad.pretrained import is_pretrained_spec

    return is_pretrained_spec(spec)


def refuse(spec: str, *, vocab: int | None = None, layers: int | None = None, width: int | None = None,
           input_shape: Any = None, data: str | None = None) -> None:
    """One line for the options that do not apply to a pretrained model."""
    given = [f for f, v in (("--vocab", vocab), ("--layers", layers), ("--width", width),
                            ("--input-shape", input_shape), ("--data", data)) if v is not None]
    if given:
        raise UsageError(f"{spec} is a pretrained model measured on real text with its own tokenizer: drop "
                         f"{', '.join(given)} (use --text FILE, --seq-len and --batch-size)")


def text_batch(spec: str, text: Path | None, seq_len: int | None, n: int, seed: int) -> tuple[Pretrained, TextBatch]:
    """(the loaded model, ``n`` examples of the text for its objective); one-line errors."""
    from resgrad.data.corpus import corpus
    from resgrad.pretrained import batches, load

    if seq_len is not None and seq_len < 2 or n < 1:
        raise UsageError(f"--seq-len must be >= 2 and --batch-size >= 1, received {seq_len} and {n}")
    c = corpus(None if text is None else str(text))  # before the (slow) load: a bad --text is one line now
    pre = load(spec)
    return pre, batches(pre, c, seq_len=seq_len or SEQ_LEN, n=n, seed=seed)


def bundle_of(pre: Pretrained, batch: TextBatch) -> DataBundle:
    """The batch as a DataBundle for the tools: x = the packed batch, y = what ObjectiveView scores against."""
    from resgrad.data import DataBundle
    from resgrad.pretrained import targets

    x, y = batch.packed(), targets(batch)
    classes = pre.info.get("vocab_size") if pre.task == "causal-lm" else len(batch)
    corpus = batch.info.get("corpus") or {}
    name = f"{Path(str(corpus.get('name', 'text'))).name}x{batch.seq_len}"
    return DataBundle(name=name, x_train=x, y_train=y, x_test=x, y_test=y, num_classes=int(classes or 1),
                      info={"inputs": "token ids", "task": pre.task, "objective": _objective(pre),
                            **{k: v for k, v in batch.info.items() if k != "picked"}})


def _objective(pre: Pretrained) -> str:
    if pre.task == "sentence-encoder":
        return "in-batch contrastive loss over neighbouring-sentence pairs (mean pooling, cosine x 20)"
    return "next-token cross-entropy"


def tokens_record(pre: Pretrained, batch: TextBatch, text: Path | None) -> dict[str, Any]:
    """What a diagnose config records of the text and the objective."""
    return {"vocab": pre.info.get("vocab_size"), "seq_len": batch.seq_len, "text": None if text is None else str(text),
            "causal": pre.task == "causal-lm", "tokenisation": "the model's tokenizer", "task": pre.task,
            "objective": _objective(pre), "examples": len(batch), "corpus": batch.info.get("corpus"),
            "mode": "eval (dropout off)"}


def tools_model(pre: Pretrained) -> nn.Module:
    """The adapted model behind the model's objective, as paths and lesion take it."""
    from resgrad.pretrained import ObjectiveView

    return ObjectiveView(pre)
