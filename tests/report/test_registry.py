"""A new experiment reaches the report through its own files and one registration line.

Everything a made-up experiment needs is in this file: its Result type (a new schema name), its
verdicts, findings and section, and one ``register(Part(...))``. No report module is edited: what
is reportable, and which parts a study-like result holds, follow from the registration (the
study's field is found by its type). The real quick study is the flow stage it sits beside.
"""

from __future__ import annotations

import re
import types
from dataclasses import dataclass
from typing import Any

import pytest

from resgrad import schema
from resgrad.report import findings, to_html
from resgrad.report import registry as R
from resgrad.report._read import Sections, as_result, sections
from resgrad.report.findings import Finding
from resgrad.report.page import section_findings
from resgrad.results import ResultError
from resgrad.results.flow import FlowResult


@dataclass
class TinyResult(schema.Result):
    """The new experiment's result: a few measured widths."""

    SCHEMA = "test.tiny"
    VERSION = 1
    EXPERIMENT = "tiny"

    config: dict[str, Any]
    environment: dict[str, Any]
    widths: list[float]


@dataclass
class TinyStudy(schema.Result):
    """A study-like result: holds a registered part (flow) and the new one, found by their types."""

    SCHEMA = "test.tinystudy"
    VERSION = 1
    EXPERIMENT = "tinystudy"

    config: dict[str, Any]
    environment: dict[str, Any]
    flow: FlowResult
    tiny: TinyResult | None = None


@dataclass(frozen=True)
class WidthVerdict:
    mean: float
    wide: bool


def _width_verdict(r: TinyResult) -> WidthVerdict:
    m = sum(r.widths) / len(r.widths)
    return WidthVerdict(m, m > 1.0)


VERDICTS = types.ModuleType("tiny_verdicts")
VERDICTS.width_verdict = _width_verdict  # type: ignore[attr-defined]


def _findings(r: TinyResult, s: Sections) -> list[Finding]:
    assert s.tiny is r  # the part reaches its own result through the Sections, as the real ones do
    v = VERDICTS.width_verdict(r)
    return [Finding("tiny.width", "tiny", f"The mean width is {v.mean:.4f}, {'wide' if v.wide else 'narrow'}.",
                    {"mean": v.mean}, verdict=v)]


def _section(r: TinyResult | None, found: list[Finding]) -> str:
    assert r is not None
    return f"<p class='tiny'>{len(r.widths)} widths measured, largest {max(r.widths):.4f}.</p>" + \
        section_findings(found, "tiny")


@pytest.fixture
def tiny_part():
    """The new experiment's one registration line (removed again afterwards, so that no other test sees it)."""
    part = R.register(R.Part("tiny", TinyResult, "Tiny widths", 15, VERDICTS, _findings, _section, core=False))
    yield part
    R._PARTS.pop("tiny")


@pytest.fixture(scope="module", autouse=True)
def _forget_schemas():
    yield
    for name in (TinyResult.SCHEMA, TinyStudy.SCHEMA):
        schema._REGISTRY.pop(name, None)


WIDTHS = [0.5, 2.25, 1.75]
MEAN = sum(WIDTHS) / len(WIDTHS)  # 1.5: "wide"


def _tiny() -> TinyResult:
    return TinyResult(config={"n": 3}, environment={"host": "test"}, widths=list(WIDTHS))


def _section_of(page: str, sid: str) -> str:
    m = re.search(rf'<section id="{sid}"><h2>(\d+)\. ([^<]*)</h2>\n(.*?)\n</section>', page, re.S)
    assert m, f"no section {sid}"
    return m.group(0)


def test_a_study_like_result_shows_the_new_part_beside_the_registered_ones(tiny_part, study):
    s = TinyStudy(config={"k": 1}, environment={"host": "test"}, flow=study.flow, tiny=_tiny())
    view = sections(s)
    assert view.flow is study.flow and view.tiny is s.tiny and view.degradation is None and view.ensemble is None
    page = to_html(s)
    assert page == to_html(s.to_json())  # the parsed JSON is validated by its new schema name, same page
    sec = _section_of(page, "tiny")
    assert "<h2>3. Tiny widths</h2>" in sec  # order 15: after flow (10), before the missing degradation (20)
    assert "3 widths measured, largest 2.2500." in sec
    sentence = f"The mean width is {MEAN:.4f}, wide."
    assert sentence in sec and sentence in _section_of(page, "findings")
    ids = re.findall(r'<section id="([a-z]+)">', page)
    assert ids == ["question", "flow", "tiny", "degradation", "ensemble", "findings", "setup", "references"]
    assert '<li><a href="#tiny">Tiny widths</a></li>' in page
    assert "tiny config" in _section_of(page, "setup")
    assert "(missing)" in page and "not measured: degradation, ensemble" in page  # core parts still listed
    # The flow part's findings are those of the real study, beside the new one.
    found = findings(s)
    tiny_found = [f for f in found if f.section == "tiny"]
    assert [f.id for f in tiny_found] == ["tiny.width"] and tiny_found[0].numbers["mean"] == pytest.approx(MEAN)
    assert {f.id for f in found if f.section == "flow"} == {f.id for f in findings(study.flow) if f.section == "flow"}


def test_the_new_part_alone_gets_its_own_page(tiny_part):
    page = to_html(_tiny())
    ids = re.findall(r'<section id="([a-z]+)">', page)
    assert ids == ["tiny", "findings", "setup", "references"]  # a non-core part alone: no question, no missing
    assert f"The mean width is {MEAN:.4f}, wide." in _section_of(page, "tiny")
    assert "experiment tiny" in page


def test_without_the_registration_nothing_of_it_is_reported(study, study_html):
    # Not registered: the new type alone has no report (the one-line error lists what has one) ...
    with pytest.raises(ResultError, match=r"test\.tiny result has no report; pass a study, .*flow, degradation, "
                                          r"ensemble, transformer or pretrained result"):
        as_result(_tiny())
    with pytest.raises(AttributeError, match="no report part 'tiny'"):
        _ = sections(study).tiny
    # ... and a study-like result that holds it shows only its registered parts.
    s = TinyStudy(config={}, environment={}, flow=study.flow, tiny=_tiny())
    assert 'id="tiny"' not in to_html(s) and "flow" in sections(s).held()


def test_a_registration_leaves_the_other_reports_as_they_were(study):
    before = to_html(study)
    part = R.register(R.Part("tiny", TinyResult, "Tiny widths", 15, VERDICTS, _findings, _section, core=False))
    try:
        assert sections(study).tiny is None  # registered, not held
        assert to_html(study) == before
        # What has a report is read from the registrations: the one-line error now names the new part.
        with pytest.raises(ResultError, match=r"resgrad\.diagnose result has no report; pass a study, tinystudy, "
                                              r"flow, tiny, degradation, ensemble, transformer or pretrained result"):  # by page order
            as_result(_not_reportable())
    finally:
        R._PARTS.pop(part.key)


def _not_reportable() -> schema.Result:
    from resgrad.results.diagnose import DiagnoseResult

    return DiagnoseResult(spec="x", kind="registry", model="M", parameters=1, input_shape=[1], num_classes=None,
                          data="random", batch_size=1, steps=1, seed=0, losses=[], thresholds={}, layers=[],
                          blocks=None, records=[], environment={})
