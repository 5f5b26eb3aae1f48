"""The pretrained section: rendered from a real (tiny-model) PretrainedResult, and the skipped-model line."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

from resgrad import verdicts as V
from resgrad.report import to_html
from resgrad.report.findings.pretrained import pretrained_findings
from resgrad.results import PretrainedResult

_spec = importlib.util.spec_from_file_location("_pretrained_files", Path(__file__).parents[1] / "pretrained" / "conftest.py")
_files = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_files)


@pytest.fixture(scope="module")
def result(tmp_path_factory) -> PretrainedResult:
    pytest.importorskip("gguf")
    pytest.importorskip("transformers")
    from resgrad.experiments import pretrained as ex

    root = tmp_path_factory.mktemp("models")
    specs = (f"gguf:{_files.write_tiny_gguf(root / 'lm.gguf')}", f"hf:{_files.save_tiny_bert(root / 'bert')}")
    cfg = ex.PretrainedConfig(size="quick", specs=specs, seq_len=16, rows=4, pairs=4, probes=2, samples=2, shuffles=2)
    return ex.run(cfg, None, log=None)


def test_section_renders_every_figure_and_finding(result):
    html = to_html(result)
    assert "Pretrained models on real text" in html
    for alt in ("depth profiles", "angular distance", "gradient by path length", "layer removal"):
        assert html.count(f'alt="{alt}"') == 2, alt
    found = pretrained_findings(result)
    # Two-layer models: no middle layers to reorder, so no painters finding.
    assert {f.id.split(".")[1] for f in found} == {"flow", "identity", "paths", "removal"}
    assert all(m.removal.reorder is None for m in result.models)
    from html import escape

    for f in found:
        assert escape(f.sentence) in html or f.sentence.split(":")[0] in html
    assert "4-bit" in html  # the caveats, in words


def test_verdicts_quote_the_result(result):
    lm = result.models[0]
    v = V.model_removal_verdict(lm)
    # The oracle's removable k by hand: the largest k whose best start keeps the perplexity within the factor.
    full = lm.removal.full["perplexity"]
    k_ok = 0
    for c in lm.removal.consecutive:
        if min(s["perplexity"] for s in c.scores) <= V.PERPLEXITY_KEPT * full:
            k_ok = c.k
        else:
            break
    assert v.removable["oracle"] == k_ok
    assert v.removable["angular"] <= v.removable["oracle"] and v.removable["influence"] <= v.removable["oracle"]
    f = V.model_flow_verdict(lm)
    assert f.stream_ratio == pytest.approx(lm.flow.stream_norms[0] / lm.flow.stream_norms[-1])
    assert V.model_painters_verdict(lm) is None
    # A reorder record made of this model's own single-layer scores, judged against the hand formula.
    import dataclasses

    from resgrad.results.pretrained import Reorder

    s0, s1 = lm.removal.single
    # A random tiny LM sits near chance (log V); judged against a 10^6-word vocabulary its loss is well below.
    lm4 = dataclasses.replace(lm, info={**lm.info, "vocab_size": 10**6}, removal=dataclasses.replace(lm.removal, reorder=Reorder(
        layers=[1, 2], skipped=s0, reversed=s1, shuffled=[s0, s1])))
    p = V.model_painters_verdict(lm4)
    chance, full = math.log(10**6), lm.removal.full["loss"]
    assert p.chance_loss == pytest.approx(chance)
    assert p.way["reversed"] == pytest.approx((s1["loss"] - full) / (chance - full))
    assert p.way["shuffled"] == pytest.approx(((s0["loss"] + s1["loss"]) / 2 - full) / (chance - full))
    assert p.reversed_worst == (s1["loss"] > (s0["loss"] + s1["loss"]) / 2)
    i = V.model_identity_verdict(lm)
    assert i.units == lm.units and i.deep_cosine == pytest.approx(sum(lm.flow.cosine[2:]) / 2)


def test_skipped_model_is_one_line():
    from resgrad.experiments.pretrained import REFERENCE

    r = PretrainedResult(config={}, environment={}, corpus={}, models=[],
                         skipped=[{"spec": "pretrained:minilm-l6", "reason": "pip install x"}], reference=REFERENCE)
    r = PretrainedResult.from_json(r.to_json())
    html = to_html(r)
    assert "pretrained:minilm-l6: not measured (pip install x)" in html


def test_study_with_the_stage_shows_the_section(result):
    import dataclasses

    from resgrad.results import load

    study = load(Path(__file__).parent / "data" / "study-quick.json")  # a quick study: no pretrained stage
    html = to_html(dataclasses.replace(study, pretrained=result))
    assert "Pretrained models on real text" in html and html.count('alt="angular distance"') == 2
    assert "Pretrained models on real text" not in to_html(study)
