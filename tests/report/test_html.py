"""The HTML report: self-contained, every section present or said to be missing, written atomically."""

from __future__ import annotations

import ast
import base64
import json
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from resgrad.io import write_json
from resgrad.report import render, render_run, to_html

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


def test_numbers_have_at_most_3_significant_digits(study_html):
    text = _DATA_URI.sub("", study_html)
    text = re.sub(r"<pre>.*?</pre>", "", text, flags=re.S)  # the raw config, shown as written
    text = re.sub(r"\d{4}\.\d{4,5}", "", text)  # arXiv ids
    decimals = re.findall(r"(?<![\w.])\d+\.\d+(?![\w.])", text)  # not versions like 2.14.1
    long = [d for d in decimals if len(d.replace(".", "").lstrip("0")) > 3]
    assert decimals and not long, long[:5]


@pytest.mark.parametrize("keep", [["flow"], ["degradation"], ["ensemble"], []])
def test_missing_sections_are_said_to_be_missing(study, keep):
    results = {k: v for k, v in study.items() if k in keep}
    html = to_html(results)
    for name in ("flow", "degradation", "ensemble"):
        if name in keep:
            assert f"no <code>{name}</code> section" not in html
        else:
            assert f"Not measured: this results file has no <code>{name}</code> section" in html
    assert html.count("(missing)") == 3 - len(keep)
    if not keep:
        assert "No measured answer" in html


def test_a_flow_results_file_renders_on_its_own(study):
    html = to_html(study["flow"])  # what `resgrad flow` writes: {"experiment": "flow", ...}
    assert "plain-110 with BN" in html and len(_svgs(html)) == 2


def test_non_finite_values_render_as_na(study, copy_of):
    bad = copy_of(study)
    for r in bad["flow"]["configs"]:
        r["ratio_first_last"] = None
        r["profile"] = [None] * len(r["profile"])
        r["slope_ci"] = [None, None]
    for run in bad["degradation"]["runs"]:
        for h in run["history"]:
            h["test_error"] = None
    bad["ensemble"]["exact"]["norms"] = [None] * 55
    bad["ensemble"]["lesion"]["residual"]["baseline_test_error"] = None
    html = to_html(bad)
    assert "n/a" in html
    assert not re.search(r">\s*(nan|inf|-inf|None)\s*<", html)
    json.dumps(bad, allow_nan=False)  # the fixture itself is valid JSON (null, not NaN)


def test_render_writes_atomically(tmp_path, monkeypatch):
    out = tmp_path / "report.html"
    out.write_text("old report")

    def fail(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        render({}, out)
    assert out.read_text() == "old report"  # the reader still sees the old file, whole
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]  # no temp file left behind
    monkeypatch.undo()
    assert render({}, out) == out
    assert out.read_text(encoding="utf-8").startswith("<!doctype html>")


def test_render_run_reads_results_json(tmp_path, study):
    write_json(tmp_path / "results.json", {"flow": study["flow"]})
    path = render_run(tmp_path)
    assert path == tmp_path / "report.html" and "plain-110 with BN" in path.read_text(encoding="utf-8")


def test_render_run_without_results_json_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="has no results.json"):
        render_run(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        render_run(tmp_path / "nope")
    (tmp_path / "results.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        render_run(tmp_path)


def test_real_results_render(real_report):
    html = real_report.read_text(encoding="utf-8")
    assert len(_svgs(html)) == 7 and "Not measured" not in html
    assert "ResNet-20" in html and "plain-20" in html


def test_report_package_reads_results_only():
    # DESIGN.md: report never imports torch or the measuring packages.
    banned = ("torch", "resgrad.train", "resgrad.probes", "resgrad.paths", "resgrad.experiments")
    for py in REPORT_SRC.rglob("*.py"):
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
