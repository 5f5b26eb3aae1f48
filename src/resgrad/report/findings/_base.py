"""What every findings module shares: the Finding record and the few ways numbers are worded.

A finding words one verdict record of :mod:`resgrad.verdicts`; every number in its sentence
comes from that record (or the typed record it holds). Findings judge nothing themselves.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from typing import Any

from resgrad.results.flow import FlowGroup

from .._fmt import NA, pow10, sig, times

__all__ = ["Finding", "Answer", "Quote", "finding", "points", "signed", "spread", "ratio", "how", "TWIN"]

TWIN = {"preln": "pre-LN", "postln": "post-LN", "noskip": "no skip"}


@dataclass(frozen=True)
class Quote:
    """One item a sentence names (a net, a pair) and the verdict the sentence gives it.

    ``text`` is the words in the sentence that name it, ``record`` the verdict-bearing record it
    comes from (a FlowGroup), ``says`` the verdicts the sentence allows it. A test checks every
    quote against the results file: the text in the sentence, the record's verdict in ``says``.
    """

    text: str
    record: Any
    says: tuple[str, ...]
    shows_ratio: bool = False  # the text quotes the record's first/last ratio


@dataclass(frozen=True)
class Finding:
    """One sentence of the report and what it rests on.

    ``verdict`` is the record the sentence words; ``relation`` its relation to the cited
    ``paper`` ("agrees", "partly", "contradicts" or None). Read as attributes; ``f["id"]`` and
    ``dict(f)`` also work, as they did when a finding was a dict.
    """

    id: str
    section: str
    sentence: str
    numbers: dict[str, Any]
    paper: str | None = None
    claim: str | None = None
    relation: str | None = None
    verdict: Any = None
    quoted: tuple[Quote, ...] = ()  # the items the sentence names, with the verdicts it gives them

    def keys(self) -> list[str]:
        return [f.name for f in fields(self)]

    def __getitem__(self, key: str) -> Any:
        if key not in self.keys():
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key) if key in self.keys() else default

    def __contains__(self, key: object) -> bool:
        return key in self.keys()

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())


@dataclass(frozen=True)
class Answer(Finding):
    """The study's measured answer: the headline box in parts, its verdict the study's record."""

    lead: str = ""
    verdict_text: str = ""
    evidence: tuple[str, ...] = field(default_factory=tuple)
    hedge: str = ""


def finding(id: str, section: str, sentence: str, numbers: dict[str, Any], verdict: Any = None, *,
            paper: str | None = None, claim: str | None = None, relation: str | None = None,
            quoted: tuple[Quote, ...] | list[Quote] = ()) -> Finding:
    return Finding(id, section, sentence, numbers, paper, claim, relation, verdict, tuple(quoted))


def points(x: float | None) -> str:
    """A change of a fraction as signed percentage points: -0.134 -> -13.4 points."""
    return NA if x is None else f"{signed(100 * x)} points"


def signed(x: float | None) -> str:
    return NA if x is None else ("+" if x > 0 else "") + sig(x)


def spread(x: float | None) -> str:
    """A size of a change of a fraction, unsigned: 0.02 -> 2 points."""
    if x is None:
        return NA
    v = sig(100 * x)
    return f"{v} point{'' if v == '1' else 's'}"


def ratio(g: FlowGroup) -> str:
    """The first/last ratio as ``4.6e7×``, from its log10 where the ratio itself overflowed."""
    if g.ratio_first_last is not None:
        return times(g.ratio_first_last)
    return f"{pow10(g.log10_ratio)}×" if g.log10_ratio is not None else NA


def how(norm: str) -> str:
    return "with BN" if norm == "batch" else "without normalisation" if norm == "none" else norm

