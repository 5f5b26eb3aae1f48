"""What each experiment contributes to the report, registered once by its section module.

A :class:`Part` names the Result type, its key (the section's id, and how the findings and
sections reach it: ``s.flow``), the verdicts module that judges it, its findings and its HTML
section. ``to_html`` and ``findings`` loop over the registered parts by their ``order`` (the page's
order of sections); neither names an experiment. What the report reads follows from these
registrations (report/_read.py): a part's Result alone, or a study-like Result whose fields'
types are parts' Result types (a StudyResult's ``flow: FlowResult``...). A new experiment adds
its Result type, its section module ending in ``register(Part(...))``, and one import line in
report/sections/__init__.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

__all__ = ["Part", "register", "parts"]


@dataclass(frozen=True)
class Part:
    """One experiment's share of the report."""

    key: str  # the section id, and the name findings reach it by (s.flow); a study's field holding it is found by type
    type: type  # its Result type
    title: str  # the section's heading
    order: int  # where its section sits on the page among the parts (lower first)
    verdicts: ModuleType  # the module of resgrad.verdicts its findings word the records of
    findings: Callable[[Any, Any], list[Any]]  # (result, Sections) -> its findings
    section: Callable[[Any, list[Any]], str]  # (result or None, every finding) -> the section's HTML body
    core: bool = True  # one of the study's three kinds of evidence: listed (as missing) even when absent
    timing: Callable[[Any], dict[str, Any]] | None = None  # the part's own wall times, when it is the result alone
    headline: Callable[[list[Any]], str] | None = None  # the answer box when it is the result alone (non-core)
    papers: tuple[str, ...] = ()  # reference keys cited only where this part is shown


_PARTS: dict[str, Part] = {}


def register(part: Part) -> Part:
    """Add ``part`` (a second registration of the same key replaces the first)."""
    _PARTS[part.key] = part
    return part


def parts() -> list[Part]:
    """Every registered part, by ``order`` (importing report/sections registers them)."""
    from . import sections  # noqa: F401  - the registrations

    return sorted(_PARTS.values(), key=lambda p: p.order)
