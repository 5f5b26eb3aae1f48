"""English text that is on every machine: the offline corpus, or the user's own file.

``corpus()`` is the standard library's ``pydoc_data.topics`` (the Python language reference's
topics, about 465 KB of English prose and code, joined in sorted key order so it is the same text
on every run of one Python); ``corpus("notes.txt")`` reads the user's UTF-8 file instead. Nothing
is downloaded. The text differs between Python releases, so every result records the corpus's
``name``, ``chars`` and ``sha256`` (a figure measured on 3.11 and one on 3.12 may not be comparable).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Corpus", "corpus", "STDLIB"]

STDLIB = "pydoc_data.topics"  # the name a result records for the offline corpus


@dataclass(frozen=True)
class Corpus:
    """A text and where it came from: ``name`` (a path or ``pydoc_data.topics``), its sha256."""

    name: str
    text: str
    sha256: str

    @property
    def chars(self) -> int:
        return len(self.text)

    def info(self) -> dict[str, object]:
        """What a result records of its text (provenance, not the text itself)."""
        return {"name": self.name, "chars": self.chars, "sha256": self.sha256}


def corpus(path: str | None = None) -> Corpus:
    """The offline corpus (``path=None``) or the UTF-8 text file at ``path``; one-line errors."""
    if path is None:
        from pydoc_data.topics import topics  # the standard library's own data: always present

        text = "\n\n".join(topics[k].strip() for k in sorted(topics))
        return Corpus(STDLIB, text, hashlib.sha256(text.encode()).hexdigest())
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"text file {path!r} not found; give the path of a local UTF-8 text file (--text)")
    raw = p.read_bytes()
    from .text import not_text

    why = not_text(raw)
    if why is not None:
        raise ValueError(f"text file {path!r} is not text: {why}; give a plain UTF-8 text file (--text)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"text file {path!r} is not UTF-8 (byte {e.start}); save it as UTF-8 (--text)") from None
    if not text.strip():
        raise ValueError(f"text file {path!r} is empty; give a text file with some English in it (--text)")
    return Corpus(str(p.resolve()), text, hashlib.sha256(raw).hexdigest())
