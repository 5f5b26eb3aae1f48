"""The offline corpus and --text FILE: the same text every time, provenance recorded, one-line errors."""

from __future__ import annotations

import hashlib

import pytest

from resgrad.data import text
from resgrad.data.corpus import STDLIB, corpus


def test_offline_corpus_is_the_standard_library_topics_in_key_order():
    from pydoc_data.topics import topics

    c = corpus()
    assert c.name == STDLIB
    assert c.text == "\n\n".join(topics[k].strip() for k in sorted(topics))
    assert c.chars > 100_000  # the language reference: hundreds of KB of English on every CPython
    assert c.sha256 == hashlib.sha256(c.text.encode()).hexdigest()
    assert corpus().sha256 == c.sha256


def test_a_user_file_is_read_as_utf8_with_its_checksum(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("Résumé of the residual stream.\n", encoding="utf-8")
    c = corpus(str(p))
    assert c.text == "Résumé of the residual stream.\n"
    assert c.sha256 == hashlib.sha256(p.read_bytes()).hexdigest()
    assert c.info() == {"name": str(p.resolve()), "chars": len(c.text), "sha256": c.sha256}


@pytest.mark.parametrize("content, match", [(b"\x00\x01binary\x00", "is not text"), (b"\xff\xfe\xfa" * 10, "not"),
                                            (b"  \n", "empty")])
def test_bad_text_files_are_one_line(tmp_path, content, match):
    p = tmp_path / "bad.txt"
    p.write_bytes(content)
    with pytest.raises(ValueError, match=match) as e:
        corpus(str(p))
    assert "\n" not in str(e.value) and "--text" in str(e.value)
    with pytest.raises(FileNotFoundError, match="not found"):
        corpus(str(tmp_path / "missing.txt"))


def test_char_level_data_on_the_offline_corpus_matches_its_bytes():
    b = text(None, seq_len=64)
    raw = corpus().text.encode()
    assert b.name == f"text:{STDLIB}" and b.info["sha256"] == hashlib.sha256(raw).hexdigest()
    chars = b.info["chars"]
    decoded = bytes(ord(chars[i]) for i in b.x_train[0].tolist())
    assert decoded == raw[:64]
