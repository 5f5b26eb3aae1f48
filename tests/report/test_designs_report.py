"""The designs section renders from a hand-made DesignsResult, and its verdicts follow the numbers:
flipping a number flips the verdict (verdicts/designs.py's named thresholds)."""

import re

import pytest

from resgrad import verdicts as V
from resgrad.report import to_html
from resgrad.report.findings import designs_findings
from resgrad.results import DesignsResult


def _stat(mean, lo=None, hi=None, n=3):
    return {"mean": mean, "std": 0.01, "ci_low": lo, "ci_high": hi, "level": 0.95, "n": n, "n_finite": n}


def _init(design, fam, depth, growth, amax=1.0, var=(1.0, 2.0)):
    units = 2 * depth if fam == "transformer" else depth
    return {"design": design, "family": fam, "depth": depth, "param_norms": [1.0] * units,
            "stream_norms": [1.0] * (units + 1), "growth": growth, "stream_ratio": 1.0, "amax_forward": amax,
            "amax_backward": amax, "sq_mean": [0.1] * units, "variance": list(var) + [var[-1]] * (units - 2),
            "branch_variance": [0.5] * units, "token_cosine": [0.2] * (units + 1) if fam == "transformer" else []}


def _cell(design, fam, depth, mean, lo, hi, steps=100.0, spikes=0.0, diverged=0):
    return {"design": design, "family": fam, "depth": depth, "lr": 1e-3,
            "metric": "test_loss" if fam == "transformer" else "test_error", "final": _stat(mean, lo, hi),
            "target": 2.0 if fam == "transformer" else None, "steps_to_target": _stat(steps), "reached": 3,
            "spikes": _stat(spikes), "diverged": diverged, "n_seeds": 3}


def _run(design, amax):
    return {"design": design, "family": "transformer", "depth": 4, "seed": 0, "lr": 1e-3, "model": f"{design}-4",
            "params": 100, "run_dir": "x", "final": {"test_loss": 2.0}, "curve": [2.0], "steps": 10, "spikes": [],
            "steps_to_target": 5, "diverged": False, "diverged_step": None, "loss_trace": [3.0, 2.0],
            "amax": [amax, amax]}


def _cnn_run(design, depth, train_error):
    return {**_run(design, 1.0), "family": "cnn", "depth": depth, "model": f"{design}{depth}", "amax": [],
            "final": {"train_error": train_error, "test_error": train_error + 0.05}}


DESIGNS = [("preln", "transformer"), ("postln", "transformer"), ("dyt", "transformer"), ("hc", "transformer"),
           ("mhc", "transformer"), ("plain", "cnn"), ("resnet", "cnn")]


def _result(**over) -> DesignsResult:
    body = {
        "config": {"target_design": "preln", "d_model": 8, "n_heads": 2, "init_depths": [4], "cnn_init_depths": [8],
                   "init_seeds": [0], "parts": ["init", "lm", "cnn"], "lm_depths": [4], "seeds": [0, 1, 2],
                   "lm_train": {"optimizer": "adamw", "lr": 1e-3, "batch_size": 8, "epochs": 1}, "seq_len": 8,
                   "cnn_depths": [8, 20], "spike_k": 10.0, "spike_window": 50},
        "environment": {},
        "designs": [{"name": n, "family": f, "paper": "P et al. 2020", "arxiv": "2001.00001", "claim": f"claim of {n}",
                     "title": n.upper(), "streams": 4 if n in ("hc", "mhc") else 1} for n, f in DESIGNS],
        "init": [_init("preln", "transformer", 4, over.get("preln_growth", 1.0)),
                 _init("postln", "transformer", 4, over.get("postln_growth", 2.0)),
                 _init("dyt", "transformer", 4, 1.0), _init("hc", "transformer", 4, 1.0),
                 _init("mhc", "transformer", 4, 1.0), _init("plain", "cnn", 8, 0.1), _init("resnet", "cnn", 8, 1.0)],
        "runs": [_run("hc", over.get("hc_amax", 50.0)), _run("mhc", over.get("mhc_amax", 1.1)),
                 *[_cnn_run("plain", d, e) for d, e in ((8, 0.10), (20, over.get("plain20", 0.30)))],
                 *[_cnn_run("resnet", d, e) for d, e in ((8, 0.10), (20, 0.08))]],
        "cells": [_cell("preln", "transformer", 4, 2.00, 1.98, 2.02),
                  _cell("postln", "transformer", 4, 2.10, 2.05, 2.15),
                  _cell("dyt", "transformer", 4, over.get("dyt_loss", 2.01), over.get("dyt_loss", 2.01) - 0.02,
                        over.get("dyt_loss", 2.01) + 0.02),
                  _cell("hc", "transformer", 4, 1.9, 1.8, 2.0, steps=over.get("hc_steps", 80.0)),
                  _cell("mhc", "transformer", 4, 1.9, 1.8, 2.0),
                  _cell("plain", "cnn", 8, 0.20, 0.18, 0.22), _cell("plain", "cnn", 20, over.get("plain20", 0.30), None, None),
                  _cell("resnet", "cnn", 8, 0.20, 0.18, 0.22), _cell("resnet", "cnn", 20, 0.15, None, None)],
        "data": {"transformer": "text:pydoc_data.topics", "cnn": "mnist1d"},
        "notes": ["every design trains at the same learning rate (no per-design sweep)"],
    }
    return DesignsResult.of(body)


def _rel(r, design):
    return V.design_verdict(r, design).relation


@pytest.mark.parametrize("design, agree, flip", [
    ("postln", {}, {"postln_growth": 0.9}),
    ("preln", {}, {"preln_growth": 3.0}),
    ("dyt", {}, {"dyt_loss": 2.5}),
    ("mhc", {}, {"mhc_amax": 30.0}),
    ("hc", {}, {"hc_steps": 300.0}),
    ("plain", {}, {"plain20": 0.1}),
])
def test_flipping_the_number_flips_the_verdict(design, agree, flip):
    assert _rel(_result(**agree), design) == "agrees"
    assert _rel(_result(**flip), design) == "contradicts"


def test_thresholds_are_the_named_constants():
    # just inside and just outside LEVEL_FACTOR for post-LN's growth
    assert _rel(_result(postln_growth=V.LEVEL_FACTOR * 1.01), "postln") == "agrees"
    assert _rel(_result(postln_growth=V.LEVEL_FACTOR * 0.99), "postln") == "partly"
    # mHC near 1 while hyper-connections' gain is not large: only in part
    assert _rel(_result(hc_amax=V.AMAX_LARGE * 0.5), "mhc") == "partly"
    assert _rel(_result(dyt_loss=2.0 + V.MATCH_NATS * 0.5), "dyt") == "agrees"


def _row(html: str, title: str) -> str:
    m = re.search(r"<tr><td><b>" + re.escape(title) + r"</b>.*?</tr>", html, re.S)
    assert m, title
    return m.group(0)


def test_section_renders_and_its_badges_follow_the_numbers():
    html = to_html(_result())
    assert "Residual designs of today" in html and "arXiv 2604.23434" in html
    assert 'badge agrees' in _row(html, "POSTLN") and "claim of postln" in _row(html, "POSTLN")
    assert "1.1 / " not in _row(html, "PRELN")  # Amax only for designs with several streams
    assert "50" in _row(html, "HC")
    flipped = to_html(_result(postln_growth=0.9))
    assert 'badge contradicts' in _row(flipped, "POSTLN")
    # the findings quote the measured number and the threshold
    f = next(f for f in designs_findings(_result(postln_growth=0.9)) if f.id == "designs.postln")
    assert "growth 0.9" in f.sentence and f.relation == "contradicts" and "1.5x" in f.sentence


def test_a_panel_without_training_renders():
    r = _result()
    html = to_html(DesignsResult.from_json({**r.to_json(), "runs": [], "cells": []}))
    assert "Depth profiles at initialisation" in html and "Training</h3>" not in html


def test_the_sweep_line_names_the_swept_designs_their_lrs_and_the_lr_reported():
    r = _result()
    body = r.to_json()
    body["config"] = {**body["config"], "lr_sweep": {"postln": [1e-3, 3e-4]}}
    body["cells"] = [{**c, "lr": 3e-4} if c["design"] == "postln" else c for c in body["cells"]]
    body["notes"] = ["why postln is swept: Xiong et al. 2020 (arXiv 2002.04745): post-LN needs a warm-up"]
    html = to_html(DesignsResult.from_json(body))
    line = re.search(r"<p class='sweep'>(.*?)</p>", html, re.S)
    assert line, "no sweep line"
    text = line.group(1)
    assert "POSTLN swept over 0.001, 3e-4, reported at 3e-4 at 4 layers" in text
    assert "LM designs at lr 0.001" in text and "PRELN" not in text  # only the swept design is named
    assert "Xiong et al. 2020 (arXiv 2002.04745)" in html
    # no sweep: the line says one lr for every design
    plain = re.search(r"<p class='sweep'>(.*?)</p>", to_html(r), re.S)
    assert plain and "no per-design sweep" in plain.group(1)
    # nothing trained: no line
    bare = DesignsResult.from_json({**r.to_json(), "runs": [], "cells": []})
    assert "<p class='sweep'>" not in to_html(bare)
