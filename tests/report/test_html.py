"""The HTML report: self-contained, every section present or said to be missing, written atomically."""

from __future__ import annotations

import ast
import base64
import dataclasses
import json
import os
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from resgrad.report import render, render_run, to_html
from resgrad.results import ResultError

REPORT_SRC = Path(__file__).resolve().parents[2] / "src" / "resgrad" / "report"
_ATTR = re.compile(r"""\b(src|href|action|poster|data)\s*=\s*["']([^"']*)["']""", re.I)
_DATA_URI = re.compile(r"data:image/svg\+xml;base64,[A-Za-z0-9+/=]+")


def _svgs(html: str) -> list[str]:
    return [base64.b64decode(m.group(0).split(",", 1)[1]).decode() for m in _DATA_URI.finditer(html)]


def test_full_study_has_every_section_and_figure(study_html):
    html = study_html
    for sid in ("question", "flow", "degradation", "ensemble", "findings", "setup", "references"):
        assert f'<section id="{sid}">' in html and f'href="#{sid}"' in html  # and in the table of contents
    assert "(missing)" not in html and "Not measured" not in html
    svgs = _svgs(html)
    assert len(svgs) == 7  # profiles, ratio, error curves, grad in training, paths, lesion, deletion+reorder
    for svg in svgs:
        root = ET.fromstring(svg)  # well-formed, standalone SVG
        assert root.tag.endswith("svg") and float(root.get("width").rstrip("pt")) > 100


def test_no_network_only_arxiv_citation_links(study_html):
    html = study_html
    assert "<script" not in html.lower() and "@import" not in html and "url(" not in html
    for m in re.finditer(r"<(\w+)[^>]*>", html):
        tag = m.group(0)
        for attr, value in _ATTR.findall(tag):
            if value.startswith(("data:", "#")):
                continue
            # Only citations may point outside: plain <a> links to arxiv.org, fetched only if clicked.
            assert m.group(1).lower() == "a" and attr.lower() == "href", tag[:200]
            assert value.startswith("https://arxiv.org/abs/"), value
    # Figures reference nothing outside themselves (xmlns and the DTD name are identifiers, not fetched).
    for svg in _svgs(html):
        for el in ET.fromstring(svg).iter():
            for k, v in el.attrib.items():
                if k.endswith("href") or k == "src":
                    assert v.startswith(("#", "data:")), (k, v)
        assert "<metadata" not in svg


def test_citations_are_present(study_html):
    html = study_html
    for arxiv in ("1512.03385", "1603.05027", "1605.06431", "1712.05577"):
        assert f'href="https://arxiv.org/abs/{arxiv}"' in html
    assert "§4.1" in html and "Table 6" in html and "Eq. 5" in html and "5–17" in html and "0.45%" in html
    assert "ResNet-20" in html and "plain-20" in html


def test_numbers_have_at_most_3_significant_digits(study_html):
    text = _DATA_URI.sub("", study_html)
    text = re.sub(r"<pre>.*?</pre>", "", text, flags=re.S)  # the raw config, shown as written
    text = re.sub(r"\d{4}\.\d{4,5}", "", text)  # arXiv ids
    decimals = re.findall(r"(?<![\w.])\d+\.\d+(?![\w.])", text)  # not versions like 2.14.1
    long = [d for d in decimals if len(d.replace(".", "").lstrip("0")) > 3]
    assert decimals and not long, long[:5]


@pytest.mark.parametrize("keep", ["flow", "degradation", "ensemble"])
def test_a_single_experiment_result_renders_the_others_as_missing(study, keep):
    html = to_html(getattr(study, keep))  # what `resgrad flow` (etc.) writes on its own
    for name in ("flow", "degradation", "ensemble"):
        said = f"Not measured: this results file has no <code>{name}</code> section" in html
        assert said == (name != keep)
    assert html.count("(missing)") == 2 and "Measured answer" in html
    assert len(_svgs(html)) == {"flow": 2, "degradation": 2, "ensemble": 3}[keep]


def test_a_parsed_dict_is_validated_first(study):
    d = study.flow.to_json()
    assert to_html(d) == to_html(study.flow)
    d["groups"][0]["n_blocks"] = 3  # an alias no experiment writes: an error, not a guess
    with pytest.raises(ResultError, match=r"groups\[0\]\.n_blocks.*is not a field of FlowGroup"):
        to_html(d)
    with pytest.raises(ResultError, match="not a resgrad results object"):
        to_html({"flow": d})  # no envelope
    with pytest.raises(TypeError, match="received list"):
        to_html([])  # type: ignore[arg-type]


def test_non_finite_values_render_as_na(study):
    groups = [dataclasses.replace(g, ratio_first_last=None, log10_ratio=None, slope=None, decades=None,
                                  slope_ci=None, verdict="non-finite",
                                  profile_log10_rms=[None] * len(g.profile_log10_rms)) for g in study.flow.groups]
    ens = study.ensemble
    exact = dataclasses.replace(ens.exact, norms=[None] * len(ens.exact.norms))
    bad = dataclasses.replace(study, flow=dataclasses.replace(study.flow, groups=groups),
                              ensemble=dataclasses.replace(ens, exact=exact))
    html = to_html(bad)
    assert "n/a" in html and "non-finite" in html
    assert not re.search(r">\s*(nan|inf|-inf|None)\s*<", html)
    json.dumps(bad.to_json(), allow_nan=False)  # still valid JSON (null, not NaN)


def test_render_writes_atomically(tmp_path, monkeypatch, study):
    out = tmp_path / "report.html"
    out.write_text("old report")

    def fail(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        render(study.flow, out)
    assert out.read_text() == "old report"  # the reader still sees the old file, whole
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]  # no temp file left behind
    monkeypatch.undo()
    assert render(study.flow, out) == out
    assert out.read_text(encoding="utf-8").startswith("<!doctype html>")


def test_render_run_reads_results_json(tmp_path, study, study_file):
    study.flow.save(tmp_path / "results.json")
    path = render_run(tmp_path)
    assert path == tmp_path / "report.html" and "plain-32 with BN" in path.read_text(encoding="utf-8")
    # The saved resgrad 0.1 file loads through its migration.
    shutil.copy(study_file, tmp_path / "results.json")
    assert "ResNet-20" in render_run(tmp_path, tmp_path / "r.html").read_text(encoding="utf-8")


def test_render_run_errors_are_one_line_naming_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="has no results.json"):
        render_run(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        render_run(tmp_path / "nope")
    src = tmp_path / "results.json"
    for text, pattern in (("{not json", "not valid JSON"), ('{"experiment": "flow", "schema_version": 9}', "newer"),
                          ('{"experiment": "flow"}', "is missing"), ('{"experiment": "nope"}', "not a resgrad")):
        src.write_text(text)
        with pytest.raises(ResultError, match=pattern) as e:
            render_run(tmp_path)
        assert str(src) in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "report.html").exists()


def test_signal_section_shows_tables_beside_the_papers(study, signal):
    html = to_html(dataclasses.replace(study.flow, signal=signal))
    assert "Shattering and the Jacobian spectrum" in html
    assert "1702.08591" in html and "1711.04735" in html  # Balduzzi et al. 2017, Pennington et al. 2017
    assert '<td class="n">0.0625</td>' in html  # plain, 4 blocks: 2^-4
    assert "Shattering and the Jacobian spectrum" not in to_html(study.flow)  # old files: no section


def test_report_package_reads_results_only():
    # The report reads results: it never imports torch or the measuring packages.
    banned = ("torch", "resgrad.train", "resgrad.probes", "resgrad.paths", "resgrad.experiments")
    verdicts = REPORT_SRC.parent / "verdicts"
    assert verdicts.is_dir()
    for py in [*REPORT_SRC.rglob("*.py"), *verdicts.rglob("*.py")]:  # verdicts/: torch-free too
        tree = ast.parse(py.read_text(), filename=str(py))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [("." * node.level) + (node.module or "")]
                if node.level >= 2:  # from .. import x: relative to resgrad
                    names = [f"resgrad.{node.module or ''}"] + [f"resgrad.{a.name}" for a in node.names]
            for n in names:
                assert not any(n == b or n.startswith(b + ".") for b in banned), f"{py.name} imports {n}"


def test_signal_figures_are_drawn_where_figures_signal_exists(study, signal, monkeypatch):
    from resgrad.report.sections import flow as H

    svg = '<svg xmlns="http://www.w3.org/2000/svg" width="200pt" height="100pt"></svg>'
    seen = {}
    monkeypatch.setattr(H, "shattering_figure", lambda rows, fits: seen.update(rows=rows, fits=fits) or svg)
    monkeypatch.setattr(H, "spectrum_figure", lambda rows: svg)
    out = to_html(dataclasses.replace(study.flow, signal=signal))
    assert len(_svgs(out)) == 4  # the two flow figures and the two signal figures
    assert seen["rows"][0]["neighbor"] == signal.shattering[0].neighbor and len(seen["fits"]) == len(signal.fits)


def test_a_diagnose_result_has_no_report():
    from resgrad.results import DiagnoseResult

    d = DiagnoseResult(spec="resnet20", kind="registry", model="HeResNet", parameters=1, input_shape=[1, 40],
                       num_classes=10, data="random", batch_size=2, steps=1, seed=0, losses=[2.3],
                       thresholds={"decades": 2.0}, layers=[], blocks=None, records=[], environment={})
    for given in (d, d.to_json()):
        with pytest.raises(ResultError, match="resgrad.diagnose result has no report"):
            to_html(given)
