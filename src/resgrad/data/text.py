"""A local text file as next-character prediction: the character-level language model's data.

``text("corpus.txt", seq_len=32)``: the file's bytes, mapped to a compact vocabulary (the
distinct bytes, sorted), cut into consecutive windows of ``seq_len + 1``; x is a window's
first ``seq_len`` ids, y the next id at every position (``(N, seq_len)`` int64 both), so a
model returns class-major logits ``(N, vocab, seq_len)`` as the rest of resgrad expects.
The last ``test_fraction`` of the file is the test split (text that follows the training
text, never overlapping it). Nothing is downloaded: the file is the user's.
"""

from __future__ import annotations

import codecs
import hashlib
from pathlib import Path

import torch

from .._checks import is_int
from .bundle import DataBundle

__all__ = ["text", "MIN_WINDOWS", "not_text"]

MIN_WINDOWS = 8  # fewer training windows than this is not a training set
# Bytes that no text encoding of 8 bits per unit uses for text: the C0 controls other than
# backspace, tab, newline, vertical tab, form feed, carriage return and escape (ANSI colours), and DEL.
_CONTROL = bytes([*range(0x01, 0x08), *range(0x0E, 0x1B), *range(0x1C, 0x20), 0x7F])
_TEXT = bytes(b for b in range(256) if b not in _CONTROL and b != 0)
# A text file holds no NUL and almost no other control byte; a binary one (an archive, an image, a
# checkpoint) has them everywhere. 1% leaves room for a stray control character in real text.
CONTROL_SHARE = 0.01
# Not UTF-8 and more than 30% of bytes >= 0x80: binary (Perl's -T test uses the same share); text
# in Latin-1 or another 8-bit encoding has a few accented letters among ASCII.
HIGH_SHARE = 0.30


def not_text(raw: bytes) -> str | None:
    """Why ``raw`` is not text (a short reason), or None when it reads as text."""
    if not raw:
        return None
    nul = raw.count(0)
    if nul:
        utf16 = " (UTF-16 text? save it as UTF-8)" if nul * 3 >= len(raw) else ""
        return f"it holds {nul} NUL byte(s) in {len(raw)}{utf16}"
    ctrl = len(raw.translate(None, _TEXT))
    if ctrl > CONTROL_SHARE * len(raw):
        return f"{ctrl / len(raw):.0%} of its {len(raw)} bytes are control characters"
    try:  # not final: a file cut inside a multi-byte character is still UTF-8
        codecs.getincrementaldecoder("utf-8")().decode(raw, final=False)
    except UnicodeDecodeError:
        high = len(raw.translate(None, bytes(range(0x80))))
        if high > HIGH_SHARE * len(raw):
            return f"it is not UTF-8 and {high / len(raw):.0%} of its bytes are >= 0x80"
    return None


def text(path: str | None = None, *, seq_len: int = 32, test_fraction: float = 0.1) -> DataBundle:
    """Next-character prediction on the text file at ``path``, or on the offline corpus
    (``pydoc_data.topics``, see resgrad.data.corpus) when ``path`` is None."""
    if path is None:
        from .corpus import STDLIB, corpus

        raw = corpus().text.encode()
        return _windows(raw, STDLIB, STDLIB, seq_len, test_fraction)
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"text file {path!r} not found; give the path of a local text file")
    if not is_int(seq_len) or seq_len < 2:
        raise ValueError(f"seq_len must be an integer >= 2, received {seq_len!r}")
    if not 0.0 < float(test_fraction) < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), received {test_fraction!r}")
    raw = p.read_bytes()
    why = not_text(raw)
    if why is not None:
        raise ValueError(f"text file {path!r} is not text: {why}; give a plain text file (UTF-8 or another "
                         "8-bit encoding)")
    return _windows(raw, path, str(p.resolve()), seq_len, test_fraction, name=p.name)


def _windows(raw: bytes, path: str, where: str, seq_len: int, test_fraction: float, *,
             name: str | None = None) -> DataBundle:
    if not is_int(seq_len) or seq_len < 2:
        raise ValueError(f"seq_len must be an integer >= 2, received {seq_len!r}")
    if not 0.0 < float(test_fraction) < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), received {test_fraction!r}")
    chars = sorted(set(raw))
    lut = torch.zeros(256, dtype=torch.int64)
    lut[torch.tensor(chars, dtype=torch.int64)] = torch.arange(len(chars))
    ids = lut[torch.frombuffer(bytearray(raw), dtype=torch.uint8).to(torch.int64)] if raw else torch.zeros(0, dtype=torch.int64)
    cut = int(len(ids) * (1 - float(test_fraction)))

    def windows(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m = (len(a) - 1) // seq_len
        w = a[: m * seq_len + 1]
        x = w[:-1].reshape(m, seq_len) if m else torch.zeros(0, seq_len, dtype=torch.int64)
        y = w[1:].reshape(m, seq_len) if m else torch.zeros(0, seq_len, dtype=torch.int64)
        return x, y

    xtr, ytr = windows(ids[:cut])
    xte, yte = windows(ids[cut:])
    if len(xtr) < MIN_WINDOWS or len(xte) < 1 or len(chars) < 2:
        need = (MIN_WINDOWS + 1) * (seq_len + 1) / (1 - float(test_fraction))
        raise ValueError(f"text file {path!r} holds {len(raw)} bytes ({len(chars)} distinct): too short for "
                         f"{MIN_WINDOWS} training windows of seq_len {seq_len} and a test split; give a text of at "
                         f"least ~{int(need)} bytes or a shorter seq_len")
    return DataBundle(f"text:{name or path}", xtr, ytr, xte, yte, len(chars),
                      info={"path": where, "bytes": len(raw), "sha256": hashlib.sha256(raw).hexdigest(),
                            "seq_len": seq_len, "test_fraction": float(test_fraction), "vocab": len(chars),
                            "chars": "".join(map(chr, chars)), "inputs": "token ids", "causal": True})
