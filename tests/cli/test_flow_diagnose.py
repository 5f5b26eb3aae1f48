"""``resgrad flow`` and ``resgrad diagnose``: happy paths, SPEC forms, one-line errors with exit 2."""

from __future__ import annotations

import json

import pytest
from torch import nn
from typer.testing import CliRunner

from resgrad.cli import app
from resgrad.cli._spec import parse_shape, resolve_spec

runner = CliRunner()


def _ok(res):
    assert res.exit_code == 0, res.output
    return res.output


def _usage_error(res, *needles):
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    err = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert len(err) == 1, res.output
    for n in needles:
        assert n in res.output, res.output


def test_flow_command_tiny_grid(tmp_path):
    out = _ok(runner.invoke(app, ["flow", "--size", "quick", "--families", "mlp", "--depths", "4,8",
                                  "--activations", "sigmoid", "--norms", "none", "--seeds", "2",
                                  "--data", "synthetic", "--out", str(tmp_path)]))
    assert "vanishing" in out or "healthy" in out
    res = json.loads((tmp_path / "results.json").read_text())
    assert {g["depth"] for g in res["groups"]} == {4, 8} and res["config"]["seeds"] == [0, 1]
    _usage_error(runner.invoke(app, ["flow", "--depths", "4,x"]), "--depths")
    _usage_error(runner.invoke(app, ["flow", "--size", "huge"]), "size must be one of")


def test_diagnose_registry_model_writes_json_and_figure(tmp_path):
    out = _ok(runner.invoke(app, ["diagnose", "plainmlp-16x64", "--data", "synthetic", "--steps", "2",
                                  "--batch-size", "8", "--device", "cpu", "--out", str(tmp_path)]))
    assert "blocks:" in out and "layers flagged" in out
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["steps"] == 2 and res["blocks"]["verdict"] in ("vanishing", "healthy", "exploding")
    names = [r["name"] for r in res["layers"]]
    assert names[0] == "stem.1" and "head.2" in names  # stem.0 (Flatten) sees the input: no gradient
    head = next(r for r in res["layers"] if r["name"] == "head.2")
    assert head["param_grad_norm"] > 0 and head["grad_norm"] > 0
    assert (tmp_path / "diagnose.png").stat().st_size > 1000
    assert {r["step"] for r in res["records"]} == {0, 1}


def test_diagnose_bad_specs_exit_2_in_one_line(tmp_path):
    _usage_error(runner.invoke(app, ["diagnose", "resnett56", "--out", str(tmp_path)]), "unknown model", "resnet56")
    _usage_error(runner.invoke(app, ["diagnose", "no_such_pkg.mod:make", "--input-shape", "3", "--out", str(tmp_path)]),
                 "cannot import")
    _usage_error(runner.invoke(app, ["diagnose", "resnet20", "--input-shape", "3,x"]), "--input-shape")
    _usage_error(runner.invoke(app, ["diagnose", "resnet20", "--input-shape", "3", "--data", "mnist1d"]), "not both")
    _usage_error(runner.invoke(app, ["diagnose", "resnet20", "--input-shape", "1,8,8,8", "--out", str(tmp_path)]),
                 "convolutional net", "received (1, 8, 8, 8)")


def test_diagnose_torchvision_and_factory(tmp_path, monkeypatch):
    pytest.importorskip("torchvision")
    out = _ok(runner.invoke(app, ["diagnose", "torchvision:resnet18", "--input-shape", "3,32,32", "--batch-size", "2",
                                  "--device", "cpu", "--out", str(tmp_path / "tv")]))
    names = [r["name"] for r in json.loads((tmp_path / "tv" / "results.json").read_text())["layers"]]
    assert "layer1.0.conv1" in names and "layer1.0.relu#1" in names and "fc" in out
    (tmp_path / "mynets.py").write_text(
        "import torch.nn as nn\n"
        "def make():\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))\n"
    )
    monkeypatch.chdir(tmp_path)
    _ok(runner.invoke(app, ["diagnose", "mynets:make", "--input-shape", "6", "--out", "fac"]))
    _ok(runner.invoke(app, ["diagnose", "mynets.py:make", "--input-shape", "2,3", "--out", "fac2"]))
    _usage_error(runner.invoke(app, ["diagnose", "mynets:mkae", "--input-shape", "6"]), "did you mean make")
    _usage_error(runner.invoke(app, ["diagnose", "mynets:make"]), "--input-shape")
    # a wrong input shape shows the model's own error, in one line
    _usage_error(runner.invoke(app, ["diagnose", "mynets:make", "--input-shape", "7"]),
                 "failed on input of shape (16, 7)", "16x7 and 6x5")


def test_diagnose_flags_nonfinite_with_exit_1(tmp_path, monkeypatch):
    (tmp_path / "badnet.py").write_text(
        "import torch, torch.nn as nn\n"
        "class Inf(nn.Module):\n"
        "    def forward(self, x):\n"
        "        return x * torch.tensor(float('inf'))\n"
        "def make():\n"
        "    return nn.Sequential(nn.Linear(4, 3), Inf())\n"
    )
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["diagnose", "badnet:make", "--input-shape", "4", "--out", "o"])
    assert res.exit_code == 1 and "non-finite" in res.output and "Traceback" not in res.output


def test_resolve_spec_forms(tmp_path):
    assert parse_shape("3,224,224") == (3, 224, 224) == parse_shape("3x224x224") and parse_shape(None) is None
    for bad in ("3,x", "", "0,2", "3,,4"):
        with pytest.raises(ValueError, match="--input-shape"):
            parse_shape(bad)
    rm = resolve_spec("resmlp-4x64", input_shape=(1, 40))
    assert rm.kind == "registry" and rm.input_shape == (1, 40) and rm.num_classes == 10
    with pytest.raises(FileNotFoundError, match="not a resgrad run"):
        resolve_spec(str(tmp_path))
    inst = nn.Linear(2, 2)
    import sys
    import types

    mod = types.ModuleType("resgrad_test_factory_mod")
    mod.net = inst  # an instance is used as is
    sys.modules[mod.__name__] = mod
    try:
        assert resolve_spec(f"{mod.__name__}:net").model is inst
    finally:
        del sys.modules[mod.__name__]


def test_diagnose_run_folder(tmp_path):
    import resgrad

    if not hasattr(resgrad, "fit"):
        pytest.skip("resgrad.fit is not available")
    run = tmp_path / "run"
    _ok(runner.invoke(app, ["train", "resmlp-4x64", "--data", "synthetic", "--epochs", "1", "--batch-size", "64",
                            "--device", "cpu", "--out", str(run)]))
    rm = resolve_spec(str(run))
    assert rm.kind == "run" and rm.input_shape == (1, 40) and rm.data == "synthetic"
    assert isinstance(rm.model, nn.Module)
    _ok(runner.invoke(app, ["diagnose", str(run), "--out", str(tmp_path / "d")]))


def test_diagnose_table_fits_the_terminal_and_every_flag_has_a_cause(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    from resgrad.cli import _common

    monkeypatch.setattr(_common.console, "width", 80)
    out = _ok(runner.invoke(app, ["diagnose", "hf:bert", "--layers", "2", "--width", "64", "--vocab", "256",
                                  "--seq-len", "16", "--batch-size", "4", "--out", str(tmp_path)]))
    res = json.loads((tmp_path / "results.json").read_text())
    names = [r["name"] for r in res["layers"]]
    lines = out.splitlines()
    table = lines[1:lines.index(next(ln for ln in lines if ln.startswith("trend:")))]
    assert table and all(len(ln) <= 80 for ln in table), [ln for ln in table if len(ln) > 80]
    cut = [ln.split()[0] for ln in table if ln.startswith("…")]
    assert cut and all(any(n.endswith(c[1:]) for n in names) for c in cut)  # the tail of a real name
    flagged = [r for r in res["layers"] if r["flags"]]
    assert flagged and all(r["cause"] == "attention-scores" for r in flagged)
    assert "cause (attention-scores)" in out and res["trend"]["verdict"] in out
