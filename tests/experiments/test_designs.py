"""The designs experiment end to end through the CLI (quick, three designs): results validate, the
report renders, a run killed mid-training and resumed equals an uninterrupted one; bad input is one line."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from typer.testing import CliRunner

from resgrad.cli import app
from resgrad.experiments import designs as D
from resgrad.results import DesignsResult, load

runner = CliRunner()
ARGS = ["designs", "--size", "quick", "--designs", "preln,noskip,resnet", "--workers", "1", "--device", "cpu"]
VOLATILE = {"timing", "environment", "run_dir", "created", "seconds", "sha256"}  # the digest covers the timings


def _cli(*args: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "resgrad", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env)


def _numbers(o, path=""):
    """Every value of a results body, leaving out wall times, environment and folder paths."""
    if isinstance(o, dict):
        return {k: _numbers(v, f"{path}.{k}") for k, v in o.items() if k not in VOLATILE}
    if isinstance(o, list):
        return [_numbers(v, path) for v in o]
    return o


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("designs") / "a"
    p = _cli(*ARGS, "--out", str(out))
    log, _ = p.communicate(timeout=900)
    assert p.returncode == 0, log
    return out


def test_quick_run_validates_and_reports(uninterrupted):
    r = load(uninterrupted / "results.json", DesignsResult)
    assert [d.name for d in r.designs] == ["preln", "noskip", "resnet"]
    # init: every design at every depth of its family, finite SPP curves of one value per unit
    fams = {"preln": (2, 4), "noskip": (2, 4), "resnet": (8, 14)}
    for name, depths in fams.items():
        rows = [i for i in r.init if i.design == name]
        assert [i.depth for i in rows] == list(depths)
        for i in rows:
            assert len(i.variance) == len(i.param_norms) and all(v is not None and v > 0 for v in i.variance)
    assert all(len(i.token_cosine) == 2 * i.depth + 1 for i in r.init if i.family == "transformer")
    # the no-skip net's tokens are more alike than pre-LN's after the last unit (rank collapse, Noci et al.)
    deep = {i.design: i for i in r.init if i.depth == 4}
    assert deep["noskip"].token_cosine[-1] > deep["preln"].token_cosine[-1]
    # training: 2 depths x 2 seeds per design; a cell's mean is the mean of its runs
    assert len(r.runs) == 3 * 2 * 2
    for c in r.cells:
        rs = [x for x in r.runs if x.design == c.design and x.depth == c.depth]
        vals = [x.final[c.metric] for x in rs]
        assert c.n_seeds == 2 and c.final.mean == pytest.approx(sum(vals) / 2)
        for x in rs:
            assert x.steps == (24 if c.family == "transformer" else 2)
    html = (uninterrupted / "report.html").read_text()
    assert "Design by figure" in html and "arXiv 2604.23434" in html


def test_killed_then_resumed_equals_uninterrupted(uninterrupted, tmp_path):
    out = tmp_path / "b"
    p = _cli(*ARGS, "--out", str(out))
    lm = out / "lm"
    deadline = time.monotonic() + 600
    # kill -9 once the first LM run has checkpointed an epoch and the second has not finished
    while time.monotonic() < deadline and p.poll() is None:
        done = [d for d in lm.glob("*/checkpoints/last.pt")] if lm.is_dir() else []
        if done:
            break
        time.sleep(0.2)
    assert p.poll() is None, "the run finished before it could be killed"
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert not (out / "results.json").exists()
    q = _cli(*ARGS, "--out", str(out))
    log, _ = q.communicate(timeout=900)
    assert q.returncode == 0, log
    a = json.loads((uninterrupted / "results.json").read_text())
    b = json.loads((out / "results.json").read_text())
    assert _numbers(a) == _numbers(b)


def test_unknown_design_is_one_line_with_close_matches():
    res = runner.invoke(app, ["designs", "--designs", "preln,periLN2", "--size", "quick"])
    assert res.exit_code == 2
    lines = [x for x in res.output.splitlines() if x.strip()]
    assert len(lines) == 1 and "unknown design 'periln2'" in lines[0] and "did you mean periln" in lines[0]
    res = runner.invoke(app, ["designs", "--text", "/no/such/file.txt", "--size", "quick"])
    assert res.exit_code == 2 and "no such file" in res.output


def test_config_rules_are_one_line():
    with pytest.raises(ValueError, match="cnn_depths must be 6n\\+2"):
        D.DesignsConfig(cnn_depths=(20, 21))
    with pytest.raises(ValueError, match="lr_sweep must be keys among designs"):
        D.DesignsConfig(lr_sweep={"dyt": (1e-3,)})
    with pytest.raises(ValueError, match="parts must be"):
        D.DesignsConfig(parts=("train",))


def test_measure_init_amax_is_one_for_a_single_stream_and_grows_with_stream_mixing():
    torch.manual_seed(0)
    from resgrad.nets import build_for

    x = torch.randint(0, 20, (2, 8))
    pre = build_for("preln-2", (8,), 20, task="lm", vocab=20, context=8, d_model=8, n_heads=2)
    got = D.measure_init(pre, x, x, "transformer")
    assert (got["amax_forward"], got["amax_backward"]) == (1.0, 1.0)
    assert len(got["stream_norms"]) == 5 and all(math.isfinite(v) for v in got["param_norms"])


def test_sweep_takes_designs_as_an_axis():
    from resgrad.experiments.sweep import SweepConfig, comparable, model_names, parse_config

    c = parse_config({"designs": ["preln", "mhc", "fixup"], "depths": [20, 56], "seeds": [0, 1]})
    assert model_names(c) == ("preln-20", "mhc-20", "fixup-resnet20", "preln-56", "mhc-56", "fixup-resnet56")
    with pytest.raises(ValueError, match="unknown design 'perin'; did you mean periln"):
        parse_config({"designs": ["perin"], "depths": [2]})
    with pytest.raises(ValueError, match="6n\\+2"):
        parse_config({"designs": ["nf"], "depths": [4]})
    # a sweep folder written before the axis existed (no designs key) still matches its config
    old = SweepConfig().to_dict()
    old.pop("designs")
    assert comparable(old) == comparable(SweepConfig().to_dict())


def test_presets_cifar_text_and_the_panel(tmp_path):
    c = D.preset("quick", designs=("resnet", "fixup"), data_dir=str(tmp_path))
    assert (c.cnn_data, c.data_dir, c.cnn_n_train, c.cnn_n_test) == ("cifar10", str(tmp_path.resolve()), 256, 128)
    # He et al. 2015 §4.2's CIFAR recipe; MNIST-1D keeps the study's lr 0.02
    assert (c.cnn_train.optimizer, c.cnn_train.lr, c.cnn_train.momentum, c.cnn_train.weight_decay) == \
        ("sgd", 0.1, 0.9, 1e-4)
    assert D.preset("quick", designs=("resnet",)).cnn_train.lr == 0.02
    d = D.preset("default", designs=("resnet",), data_dir=str(tmp_path))
    assert (d.cnn_n_train, d.cnn_n_test) == (5000, 1000)
    lifted = D.preset("default", designs=("resnet",), data_dir=str(tmp_path), cifar_subset=(None, 2000))
    assert (lifted.cnn_n_train, lifted.cnn_n_test) == (None, 2000)
    with pytest.raises(ValueError, match="cifar_subset .* needs data_dir"):
        D.preset("quick", designs=("resnet",), cifar_subset=(10, 10))
    # the size's lr sweep keeps only the designs asked for (a sweep key must be a design)
    assert c.lr_sweep == {} and D.preset("quick", designs=("postln",)).lr_sweep == {"postln": (1e-3, 1e-3 / 3)}
    f = tmp_path / "t.txt"
    f.write_text("hello world " * 100)
    t = D.preset("quick", designs=("preln",), text=str(f))
    assert t.text == str(f.resolve()) and t.lm_n_train is None
    p = D.preset("panel")
    assert p.parts == ("init",) and set(D.TRANSFORMER_DEFAULT + D.CNN_DEFAULT) == set(p.designs)
    # a config round-trips through its JSON record (the study nests it)
    assert D.DesignsConfig.from_json(p.to_dict()).to_dict() == p.to_dict()
    with pytest.raises(ValueError, match="size must be one of"):
        D.preset("huge")
