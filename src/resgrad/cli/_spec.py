"""The CLI side of model specs: ``--input-shape`` and the token options (diagnose, paths, lesion).

The SPEC grammar itself (registry names, ``torchvision:``, ``timm:``, ``hf:``,
``module:factory``, run folders) and the input contracts live in :mod:`resgrad.nets.spec`,
so ``resgrad.build(SPEC)`` from Python and the commands build the same model; its names are
re-exported here for the code that imported them from this module.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

import typer

import resgrad.pretrained  # noqa: F401  (registers the pretrained:NAME and gguf:FILE SPECs)
from resgrad.nets.spec import (  # noqa: F401  (re-exported: cli code and tests import them from here)
    HF_LAYERS,
    HF_VOCAB,
    HF_WIDTH,
    SPEC_HELP,
    ResolvedModel,
    register_run_loader,
    resolve_spec,
    spec_kind,
)
from resgrad.train import load_run

__all__ = ["ResolvedModel", "resolve_spec", "parse_shape", "SPEC_HELP", "TOKEN_HELP", "wants_tokens", "token_inputs",
           "InputShapeOpt"]

register_run_loader(load_run)  # a run folder as SPEC: the trained model (resgrad registers it too; same loader)

INPUT_SHAPE_HELP = "One example's shape, e.g. 3,224,224 (random inputs)."
InputShapeOpt = Annotated[str | None, typer.Option("--input-shape", help=INPUT_SHAPE_HELP)]


def parse_shape(text: str | None) -> tuple[int, ...] | None:
    """``"3,224,224"`` -> ``(3, 224, 224)`` (one example, no batch dimension)."""
    if text is None:
        return None
    compact = text.replace(" ", "")
    shape = tuple(int(p) for p in re.split(r"[,x]", compact)) if re.fullmatch(r"\d+([,x]\d+)*", compact) else ()
    if not shape or any(s < 1 for s in shape):
        raise ValueError(f"--input-shape must be positive integers like 3,224,224 (no batch dim), received {text!r}")
    return shape


# ---- token inputs (diagnose, paths, lesion) ---------------------------------------------

TOKEN_HELP = {
    "vocab": "Token models: random ids < N (hf:ARCH is built with this vocabulary; default 256).",
    "seq_len": "Token models: tokens per sequence (default 16; at most the model's positions).",
    "text": "Token models: cut sequences from this file, one byte = one id (needs a vocabulary >= 256); "
            "pretrained:/gguf:/hf:FOLDER models: their own tokenizer (default: the offline corpus).",
    "layers": "hf:ARCH: transformer layers (default 2).",
    "width": "hf:ARCH: hidden size (default 64; heads of 16).",
}
SEQ_LEN = 16  # tokens per sequence when only --vocab or --text is given


def wants_tokens(rm: ResolvedModel | None, vocab: int | None, seq_len: int | None, text: Path | None) -> bool:
    """Token inputs asked for (any token option) or implied (an hf:ARCH text model)."""
    return vocab is not None or seq_len is not None or text is not None or (
        rm is not None and rm.info.get("inputs") == "input_ids")


def token_inputs(rm: ResolvedModel, *, vocab: int | None, seq_len: int | None, text: Path | None, n: int,
                 seed: int) -> tuple[Any, bool]:
    """(ids ``(m, T)``, causal) for ``rm``'s model, checked; one-line ValueErrors for bad options."""
    from resgrad import tokens

    if vocab is not None and vocab < 1 or seq_len is not None and seq_len < 1 or n < 1:
        raise ValueError(f"--vocab, --seq-len and --batch-size must be >= 1, received {vocab}, {seq_len}, {n}")
    model = rm.model
    if not tokens.is_token_model(model):  # before reading --text: the model is the first thing wrong
        tokens.check_tokens(model, rm.name, tokens.random_ids(1, 1, 1), None, 1)
    T = seq_len or SEQ_LEN
    v = vocab or tokens.model_vocab(model) or HF_VOCAB
    ids = tokens.text_ids(text, T, n, vocab or tokens.model_vocab(model)) if text is not None else \
        tokens.random_ids(v, T, n, seed)
    tokens.check_tokens(model, rm.name, ids, vocab, T)
    return ids, tokens.is_causal(model)
