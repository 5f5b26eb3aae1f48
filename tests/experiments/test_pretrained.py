"""The pretrained-model experiment end to end on tiny real model files (a Q4_1 GGUF Llama, a saved BERT)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from resgrad.experiments import pretrained as ex
from resgrad.results import PretrainedResult, load

# tests/pretrained/conftest.py's writers of tiny real model files, by path (not a package).
_spec = importlib.util.spec_from_file_location("_pretrained_files", Path(__file__).parents[1] / "pretrained" / "conftest.py")
_files = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_files)
write_tiny_gguf, save_tiny_bert = _files.write_tiny_gguf, _files.save_tiny_bert


@pytest.fixture(scope="module")
def specs(tmp_path_factory):
    pytest.importorskip("gguf")
    pytest.importorskip("transformers")
    root = tmp_path_factory.mktemp("models")
    return (f"gguf:{write_tiny_gguf(root / 'tiny-llama.Q4_1.gguf')}", f"hf:{save_tiny_bert(root / 'tiny-bert')}")


@pytest.fixture(scope="module")
def result(specs, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "pretrained"
    config = ex.preset("quick", specs=specs)
    lines: list[str] = []
    res = ex.run(config, out, log=lines.append)
    return res, out, lines, config


def test_result_written_and_reloaded(result):
    res, out, lines, config = result
    again = load(out / "results.json")
    assert isinstance(again, PretrainedResult) and again.to_json() == res.to_json()
    assert [m.spec for m in res.models] == list(config.specs) and res.skipped == []
    lm, enc = res.models
    assert (lm.task, lm.norm, lm.layers, lm.units) == ("causal-lm", "pre", 2, 4)
    assert (enc.task, enc.norm) == ("sentence-encoder", "post")
    for m in res.models:
        assert len(m.flow.param_norms) == len(m.flow.jacobian) == m.units
        assert len(m.flow.stream_norms) == m.units + 1 and len(m.stream.norms) == m.layers + 1
        assert m.paths is not None and m.paths.exact["n"] == m.units and m.paths.exact["rel_error"] < 1e-4
        assert m.removal is not None and len(m.removal.single) == m.layers
    assert lm.removal.primary == "perplexity" and enc.removal.primary == "cosine"
    assert enc.removal.full["cosine"] == pytest.approx(1.0)
    assert any("exact gradient by path length" in line for line in lines)


def test_reused_when_finished(result):
    res, out, _, config = result
    lines: list[str] = []
    again = ex.run(config, out, log=lines.append)
    assert again.to_json() == res.to_json() and any("already finished" in line for line in lines)


def test_lm_loss_is_the_loaders_objective(specs):
    from resgrad.data.corpus import corpus
    from resgrad.pretrained import batches, loss
    from resgrad.pretrained import load as load_model
    from resgrad.pretrained.scoring import Scorer

    for spec in specs:
        pre = load_model(spec)
        b = batches(pre, corpus(), seq_len=12, n=3, seed=1)
        sc = Scorer.of(pre.task, b)
        assert float(sc.loss(sc.forward(pre.model)).detach()) == pytest.approx(float(loss(pre, b)), rel=1e-5)


def test_missing_wheel_is_skipped_with_its_line(monkeypatch, specs):
    import resgrad.pretrained as P

    def fake(spec, **kw):
        raise P.MissingWheel(f"{spec} needs its wheel: {P.INSTALL}")

    monkeypatch.setattr(P, "load", fake)
    res = ex.run(ex.preset("quick", specs=("pretrained:minilm-l6",)), None, log=None)
    assert res.models == [] and res.skipped[0].spec == "pretrained:minilm-l6"
    assert P.INSTALL in res.skipped[0].reason


def test_config_rules():
    with pytest.raises(ValueError, match="pairs must be"):
        ex.PretrainedConfig(pairs=1)
    with pytest.raises(ValueError, match="size must be one of"):
        ex.preset("huge")


def test_study_stage_in_the_default_and_full_presets_only():
    from resgrad.experiments.study import StudyConfig, preset

    assert preset("quick").pretrained is None  # the quick study's numbers and time stay as they were
    d = preset("default").pretrained
    assert d is not None and d.specs == ("pretrained:minilm-l6",) and (d.seq_len, d.pairs, d.samples) == (16, 8, 0)
    assert preset("he2015-cifar10").pretrained == ex.preset("default")
    old = preset("default").to_dict()
    old.pop("pretrained")  # a study folder written before the stage: loads, the stage absent
    assert StudyConfig.from_json(old).pretrained is None


def test_cli_usage_errors_are_one_line_exit_2(tmp_path, resgrad_cli):
    import subprocess
    import sys

    # One real process (what a shell sees), the other cases in-process: the same root group and
    # error handling without a fresh interpreter importing torch for each.
    r = subprocess.run([sys.executable, "-m", "resgrad", "pretrained", "--size", "huge", "--out", str(tmp_path / "x")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    for args in (["--seq-len", "1"], ["resnet-20"], ["--text", str(tmp_path / "none.txt")]):
        code, _, err = resgrad_cli("pretrained", *args, "--out", str(tmp_path / "x"))
        assert code == 2, (args, err)
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_cli_runs_and_renders(specs, tmp_path, resgrad_cli):
    # In-process: the real process of this command is exercised by the usage-error test above;
    # a fresh interpreter here spent its time importing torch and transformers again.
    out = tmp_path / "run"
    code, _, err = resgrad_cli("pretrained", specs[1], "--size", "quick", "--out", str(out))
    assert code == 0, err
    assert (out / "results.json").is_file() and "Pretrained models on real text" in (out / "report.html").read_text()
