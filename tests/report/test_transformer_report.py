"""The report's Transformer section: verdicts on synthetic records, and the section rendered from a
real quick TransformerResult (``data/transformer-quick.json``), alone, inside a study, and through
``resgrad report``; a study without the stage renders without it.

``transformer-quick.json`` is a real ``experiments.transformer.run`` results.json: the quick preset
with ``layers=4`` (so the middle layers can be reordered) and ``flow_depths=(2, 4, 8)`` (MNIST-1D,
CPU). Regenerate::

    from dataclasses import replace
    from resgrad.experiments import transformer as T
    T.run(replace(T.preset("quick"), layers=4, flow_depths=(2, 4, 8)), DIR)   # copy DIR/results.json
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import shutil
import xml.etree.ElementTree as ET
from html import escape
from pathlib import Path

import pytest
from typer.testing import CliRunner

from resgrad import verdicts as V
from resgrad.cli import app
from resgrad.report import findings, render_run, to_html
from resgrad.report._fmt import pct, sig
from resgrad.results import StudyResult, TransformerResult, load
from resgrad.results.transformer import Consecutive, FlowRow, LayerLesion, LayerReorder, TrainCell

DATA = Path(__file__).parent / "data"
TRANSFORMER = DATA / "transformer-quick.json"
_DATA_URI = re.compile(r"data:image/svg\+xml;base64,[A-Za-z0-9+/=]+")
_SECTION_IDS = re.compile(r'<section id="([^"]+)"><h2>(\d+)\. ')
TRANSFORMER_ARXIV = ("2002.04745", "2004.08249", "2403.17887", "2403.03853", "2407.09298")


def _svgs(html: str) -> list[str]:
    return [base64.b64decode(m.group(0).split(",", 1)[1]).decode() for m in _DATA_URI.finditer(html)]


def _section(html: str, sid: str) -> str:
    start = html.index(f'<section id="{sid}">')
    return html[start:html.index("</section>", start)]


@pytest.fixture
def tr() -> TransformerResult:
    r = load(TRANSFORMER)
    assert isinstance(r, TransformerResult)
    return r


@pytest.fixture(scope="module")
def tr_html() -> str:
    return to_html(load(TRANSFORMER))


# -- verdicts on synthetic records ----------------------------------------------------------


def _row(kind: str, depth: int, growth: float | None, seeds: list[float | None] | None = None) -> FlowRow:
    norms = [1.0] * depth
    return FlowRow(kind=kind, depth=depth, param_norms=[1.0] * (2 * depth), layer_norms=norms,
                   stream_norms=[1.0] * (2 * depth + 1), growth=growth, stream_ratio=1.0,
                   per_seed_growth=seeds if seeds is not None else [growth])


def test_growth_verdict_agrees_partly_contradicts():
    def rows(post, pre, noskip=50.0):
        return [_row(k, d, g) for d, (a, b) in zip((2, 4, 8), zip(post, pre, strict=True), strict=True)
                for k, g in (("postln", a), ("preln", b), ("noskip", noskip))]

    v = V.growth_verdict(rows([0.9, 2.0, 3.0], [1.0, 1.1, 0.9]))
    assert (v.depth, v.postln, v.preln, v.noskip, v.onset) == (8, 3.0, 0.9, 50.0, 4)
    assert (v.postln_trend, v.preln_trend, v.relation) == ("toward the output", "level", "agrees")
    v = V.growth_verdict(rows([2.0, 0.9, 3.0], [1.0, 0.5, 0.2]))  # grows, but pre-LN falls 5x: not level
    assert (v.onset, v.preln_trend, v.relation) == (8, "toward the input", "partly")
    v = V.growth_verdict(rows([1.0, 1.2, 1.4], [1.0, 1.0, 1.0]))  # 1.4 < GROWTH_TOWARD_OUTPUT
    assert (v.postln_trend, v.onset, v.relation) == ("level", None, "contradicts")
    v = V.growth_verdict(rows([3.0, 3.0, 3.0], [4.0, 5.0, 6.0]))  # pre-LN grows more: no contrast
    assert v.relation == "contradicts"
    assert V.growth_verdict(rows([1.0, 1.0, None], [1.0, 1.0, 1.0])).relation is None
    assert V.growth_verdict([_row("postln", 8, 3.0), _row("noskip", 8, 3.0)]) is None  # no pre-LN to compare


def test_stream_verdict_uses_the_flow_rule():
    def rows(pre, noskip):
        out = [_row("preln", 4, 1.0), _row("noskip", 4, 1.0)]  # a shallower depth is not judged
        for kind, ratio in (("preln", pre), ("noskip", noskip)):
            out.append(dataclasses.replace(_row(kind, 64, 1.0), stream_ratio=ratio))
        return out

    v = V.stream_verdict(rows(8.0, 2e-5))
    assert v.depth == 64 and v.label == {"preln": "healthy", "noskip": "vanishing"} and v.relation == "agrees"
    v = V.stream_verdict(rows(10 ** -(V.FLOW_THRESHOLD_DECADES + 0.1), 0.5))
    assert v.label == {"preln": "vanishing", "noskip": "healthy"} and v.relation == "contradicts"
    assert V.stream_verdict(rows(300.0, None)).label == {"preln": "exploding", "noskip": "non-finite"}
    assert V.stream_verdict(rows(None, 1.0)).relation is None and V.stream_verdict([]) is None


def _cell(kind: str, warmup: bool, test: float | None, std: float = 0.0, diverged: int = 0, n: int = 3) -> TrainCell:
    return TrainCell(kind=kind, warmup=warmup, train_error=test, test_error=test, train_error_std=std,
                     test_error_std=std, n_seeds=n, diverged=diverged)


def test_warmup_verdict_fails_or_trains_fine():
    v = V.warmup_verdict([_cell("postln", False, 0.85), _cell("postln", True, 0.2)], "postln")
    assert v.failed and v.relation == "agrees" and v.difference == pytest.approx(0.65)
    v = V.warmup_verdict([_cell("postln", False, 0.21), _cell("postln", True, 0.2)], "postln")
    assert v.failed is False and v.relation == "contradicts" and v.margin == V.WARMUP_TOLERANCE
    # A 10-point gap inside two seed sds of the difference (2 * hypot(0.06, 0.06) = 0.17) is not a failure.
    v = V.warmup_verdict([_cell("postln", False, 0.30, 0.06), _cell("postln", True, 0.2, 0.06)], "postln")
    assert v.margin == pytest.approx(2 * (2 * 0.06**2) ** 0.5) and v.failed is False
    # Every seed diverged without warm-up (no finite error): a failure all the same.
    v = V.warmup_verdict([_cell("postln", False, None, diverged=3), _cell("postln", True, 0.2)], "postln")
    assert v.failed and v.cold is None and v.cold_diverged == 3 and v.relation == "agrees"
    pre = V.warmup_verdict([_cell("preln", False, 0.2), _cell("preln", True, 0.21)], "preln")
    assert pre.failed is False and pre.relation == "agrees"
    pre = V.warmup_verdict([_cell("preln", False, 0.5), _cell("preln", True, 0.2)], "preln")
    assert pre.failed and pre.relation == "contradicts"
    assert V.warmup_verdict([_cell("noskip", False, 0.9), _cell("noskip", True, 0.2)], "noskip").relation is None
    assert V.warmup_verdict([_cell("postln", False, 0.2)], "postln") is None


def test_trains_verdict_against_chance():
    cells = [_cell("noskip", False, 0.6), _cell("noskip", True, 0.5)]
    v = V.trains_verdict(cells, "noskip", chance=0.9)
    assert v.trained and v.error == 0.5 and v.warmup is True and v.below_chance == pytest.approx(0.4)
    v = V.trains_verdict([_cell("noskip", False, 0.87), _cell("noskip", True, 0.88)], "noskip", chance=0.9)
    assert v.trained is False and v.error == 0.87
    assert V.trains_verdict([_cell("noskip", False, None)], "noskip", 0.9).trained is None
    assert V.trains_verdict(cells, "noskip", None).trained is None  # no chance recorded: not judged
    assert V.trains_verdict(cells, "preln", 0.9) is None


def _lesion(base: float, best: list[float], angular: list[float], single: list[float] | None = None,
            reorder: tuple[float, float] | None = None, chance: float = 0.9) -> LayerLesion:
    n = len(best) + 1
    cons = [Consecutive(k=k, errors=[b, a], best=b, mean=(a + b) / 2, angular_start=0, angular_error=a)
            for k, (b, a) in enumerate(zip(best, angular, strict=True), 1)]
    ro = None if reorder is None else LayerReorder(layers=list(range(1, n - 1)), reversed=reorder[0],
                                                   shuffled=[reorder[1]] * 2, shuffled_mean=reorder[1])
    return LayerLesion(kind="preln", model="preln-x", layers=n, base=base,
                       single=single if single is not None else [best[0]] * n, consecutive=cons, reorder=ro,
                       chance=chance)


def test_removal_verdict_counts_layers_within_tolerance():
    les = _lesion(0.10, best=[0.10, 0.11, 0.12, 0.25, 0.5, 0.7, 0.9], angular=[0.10, 0.13, 0.125, 0.3, 0.5, 0.9, 0.9])
    v = V.removal_verdict(les)
    assert (v.layers, v.removable_best, v.removable_angular) == (8, 3, 1)  # 0.12 <= 0.10 + 0.02 < 0.13
    assert v.share == pytest.approx(3 / 8) and v.relation == "agrees"  # >= REMOVABLE_SHARE
    assert v.matches == (1, 3, 5, 7) and v.angular_relation == "partly"  # within ANGULAR_MATCH there, not at 2, 4, 6
    v = V.removal_verdict(_lesion(0.10, best=[0.11, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7], angular=[0.11] + [0.9] * 6))
    assert v.removable_best == 1 and v.relation == "partly"  # 1 of 8 < 25%
    v = V.removal_verdict(_lesion(0.10, best=[0.2, 0.11, 0.3], angular=[0.2, 0.11, 0.3]))
    assert v.removable_best == 0 and v.relation == "contradicts"  # k = 2 alone does not count
    assert v.angular_relation == "agrees"
    single = [0.1, 0.5, 0.11, 0.13]
    v = V.removal_verdict(_lesion(0.10, best=[0.11, 0.2, 0.3], angular=[0.11] * 3, single=single))
    assert (v.single_within, v.single_worst, v.single_worst_layer) == (2, 0.5, 1)
    v = V.removal_verdict(_lesion(0.87, best=[0.87, 0.88, 0.89], angular=[0.87] * 3))  # at chance: nothing to lose
    assert not v.trained and v.relation is None and v.angular_relation is None


def test_painters_verdict_graceful_or_not():
    def les(rev, shf, single=None):
        return _lesion(0.1, best=[0.1] * 5, angular=[0.1] * 5, reorder=(rev, shf), single=single)

    v = V.painters_verdict(les(0.3, 0.2))  # 25% and 12.5% of the way from 0.1 to chance 0.9
    assert v.reversed_share == pytest.approx(0.25) and v.shuffled_share == pytest.approx(0.125)
    assert v.relation == "agrees" and v.layers == (1, 2, 3, 4)
    assert V.painters_verdict(les(0.8, 0.2)).relation == "partly"
    assert V.painters_verdict(les(0.8, 0.7)).relation == "contradicts"
    v = V.painters_verdict(les(0.2, 0.2, single=[0.6, 0.1, 0.2, 0.1, 0.1, 0.3]))
    assert v.ends_special and v.first_last == (0.6, 0.3) and v.middle_worst == 0.2
    assert V.painters_verdict(les(0.2, 0.2, single=[0.1, 0.5, 0.1, 0.1, 0.1, 0.1])).ends_special is False
    assert V.painters_verdict(dataclasses.replace(les(0.2, 0.2), base=0.88)).relation is None
    assert V.painters_verdict(_lesion(0.1, best=[0.1, 0.2], angular=[0.1, 0.2])) is None  # no reordering


# -- findings ------------------------------------------------------------------------------


def test_findings_word_the_verdicts_with_their_numbers(tr):
    found = {f["id"]: f for f in findings(tr)}
    g = found["transformer.growth"]
    rows = {(r.kind, r.depth): r for r in tr.flow.rows}
    deep = max(r.depth for r in tr.flow.rows)
    for kind in ("preln", "postln", "noskip"):
        assert f"{sig(rows[(kind, deep)].growth)}×" in g["sentence"]
    assert g["relation"] == V.growth_verdict(tr.flow.rows).relation and "2002.04745" in g["paper"]
    st = found["transformer.stream"]
    for kind in ("preln", "postln", "noskip"):
        assert f"{sig(rows[(kind, deep)].stream_ratio)}×" in st["sentence"]
    cells = {(c.kind, c.warmup): c for c in tr.cells}
    w = found["transformer.warmup.postln"]
    assert pct(cells[("postln", False)].test_error) in w["sentence"]
    assert pct(cells[("postln", True)].test_error) in w["sentence"]
    for kind in ("preln", "postln", "noskip"):
        assert f"transformer.removal.{kind}" in found
        assert f"transformer.reorder.{kind}" in found
        assert pct(tr.lesions[kind].base) in found[f"transformer.removal.{kind}"]["sentence"]
    assert found["transformer.removal.noskip"]["paper"] is None  # the LLM papers are about residual nets
    # The nested ensemble through the existing window verdict, under the transformer's ids.
    win = found["transformer.ensemble.window.exact"]
    assert win["section"] == "transformer" and isinstance(win["verdict"], V.WindowVerdict)
    assert win["verdict"].n == tr.ensemble.n == 2 * tr.layers
    assert not any(f["section"] == "ensemble" for f in found.values())
    assert "answer" not in found  # a transformer run alone has no flow/degradation/ensemble answer


def test_postln_failing_without_warmup_is_said(tr):
    cells = [dataclasses.replace(c, test_error=0.85 if not c.warmup else 0.2) if c.kind == "postln" else c
             for c in tr.cells]
    f = {f["id"]: f for f in findings(dataclasses.replace(tr, cells=cells))}["transformer.warmup.postln"]
    assert "post-LN fails without warm-up here" in f["sentence"] and f["relation"] == "agrees"
    assert "85%" in f["sentence"] and "20%" in f["sentence"]
    # Near chance the comparison is flagged as saying little.
    cells = [dataclasses.replace(c, test_error=0.88) for c in tr.cells]
    f = {f["id"]: f for f in findings(dataclasses.replace(tr, cells=cells))}
    assert "trained fine without warm-up" in f["transformer.warmup.postln"]["sentence"]
    assert "barely trained" in f["transformer.warmup.postln"]["sentence"]
    assert "it does not train" in f["transformer.noskip"]["sentence"]


# -- the HTML ------------------------------------------------------------------------------


def test_transformer_alone_renders_its_section_with_its_numbers(tr, tr_html):
    html = tr_html
    assert [m.group(1) for m in _SECTION_IDS.finditer(html)] == ["transformer", "findings", "setup", "references"]
    assert "Not measured: this results file" not in html and "not measured:" not in html
    sec = _section(html, "transformer")
    raw = json.loads(TRANSFORMER.read_text())  # the numbers as written, independent of the typed reading
    for row in raw["flow"]["rows"]:
        assert f"{sig(row['growth'])}×" in sec and f"{sig(row['stream_ratio'])}×" in sec
    for c in raw["cells"]:
        assert pct(c["test_error"]) in sec and pct(c["train_error"]) in sec
    for les in raw["lesions"].values():
        assert pct(les["base"]) in sec and pct(les["reorder"]["reversed"]) in sec
    assert f"{raw['params']:,}" in sec
    svgs = _svgs(sec)
    assert len(svgs) == 7  # per-layer, growth, training, lesions + the ensemble's paths, lesion, deletion
    for svg in svgs:
        assert ET.fromstring(svg).tag.endswith("svg")
    refs = _section(html, "references")
    assert all(a in refs for a in TRANSFORMER_ARXIV)
    assert "The Transformer study" in html[:html.index('<section id="transformer">')]  # the headline box
    # Self-contained as the rest of the report: no scripts; links are anchors or arXiv citations only.
    assert "<script" not in html.lower()
    for link in re.findall(r'(?:href|src)="([^"]*)"', html):
        assert link.startswith(("#", "data:", "https://arxiv.org/abs/")), link


def test_study_with_the_stage_places_it_before_the_findings(study, tr):
    html = to_html(dataclasses.replace(study, transformer=tr))
    ids = [(m.group(1), int(m.group(2))) for m in _SECTION_IDS.finditer(html)]
    assert ids == [("question", 1), ("flow", 2), ("degradation", 3), ("ensemble", 4), ("transformer", 5),
                   ("findings", 6), ("setup", 7), ("references", 8)]
    assert 'href="#transformer"' in html
    assert "transformer.growth" in _section(html, "findings")
    # The study's own ensemble section keeps only its own findings.
    assert "preln-4" not in _section(html, "ensemble")
    assert "transformer config" in _section(html, "setup")
    # The answer box keeps its verdict and gains one clause of evidence: the stage's residual stream.
    with_stage, without = findings(dataclasses.replace(study, transformer=tr))[0], findings(study)[0]
    assert with_stage["verdict_text"] == without["verdict_text"]
    assert with_stage["evidence"][:-1] == without["evidence"]
    deep = max(r.depth for r in tr.flow.rows)
    assert with_stage["evidence"][-1].startswith(f"in {deep}-layer Transformers at initialisation")
    assert escape(with_stage["evidence"][-1]) in html and "The Transformer study" not in html


def test_study_without_the_stage_renders_as_before(study_html):
    ids = [m.group(1) for m in _SECTION_IDS.finditer(study_html)]
    assert ids == ["question", "flow", "degradation", "ensemble", "findings", "setup", "references"]
    assert "#transformer" not in study_html and "Transformers: pre-LN" not in study_html
    assert not any(a in study_html for a in TRANSFORMER_ARXIV)
    assert "transformer." not in _section(study_html, "findings")


def test_language_model_result_and_parsed_json_render(tr, monkeypatch):
    from resgrad.report import figures as F

    seen = []
    draw = F.ensemble_lesion
    monkeypatch.setattr(F, "ensemble_lesion", lambda v, classes=10: seen.append(classes) or draw(v, classes))
    html = to_html(dataclasses.replace(tr, task="lm", data="text"))
    assert "character-level language model" in html and seen == [None]  # no 10-class chance line for a vocabulary
    assert to_html(json.loads(TRANSFORMER.read_text())).count('<section id="transformer">') == 1


def test_resgrad_report_on_a_transformer_folder(tmp_path):
    shutil.copy(TRANSFORMER, tmp_path / "results.json")
    result = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 0, result.output
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert '<section id="transformer">' in html and len(_svgs(html)) == 7
    assert render_run(tmp_path, tmp_path / "again.html").read_text(encoding="utf-8") == html


@pytest.mark.slow
def test_a_fresh_quick_run_renders(tmp_path):
    """End to end on today's experiment (catches a schema the saved file no longer matches)."""
    from resgrad.experiments import transformer as T

    T.run(T.preset("quick"), tmp_path, log=lambda _s: None)
    result = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 0, result.output
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert '<section id="transformer">' in html and "transformer.removal.preln" in html
    assert "transformer.reorder." not in html  # quick: 2 layers, no middle to reorder


def test_saved_study_has_no_stage(study):
    assert isinstance(study, StudyResult) and study.transformer is None
