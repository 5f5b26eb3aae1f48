"""`paths`/`lesion` options: --input-shape (random inputs), --epochs, the at-chance warning, the sum
check naming what the model has; `models --dims` on names that take no dims."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import resgrad
from resgrad.cli import app
from resgrad.cli.lesion import at_chance, chance_error
from resgrad.cli.paths import random_bundle
from resgrad.paths._common import has_batchnorm, mode_phrase, normalisations
from resgrad.paths.sampling import NOTE, NOTE_NO_BATCHNORM

runner = CliRunner()


def flat(output: str) -> str:
    """The output as one line: rich wraps long lines at the terminal width."""
    return " ".join(output.split())


def usage_error(r, *needles: str) -> None:
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in r.output, r.output
    for n in needles:
        assert n in r.output, r.output


def results(folder) -> dict:
    return json.loads((folder / "results.json").read_text())


# ---- lesion: a baseline at chance gets a warning and no verdict ------------------------


def test_chance_error_is_the_most_frequent_label():
    data = resgrad.load_data("synthetic")
    y = data.y_test[:50].tolist()
    assert chance_error(data, 50) == pytest.approx(1 - max(Counter(y).values()) / 50, abs=0)
    assert at_chance(0.86, 0.9) and not at_chance(0.84, 0.9)  # within / beyond 5 points of chance


def test_lesion_at_init_warns_and_withholds_the_verdict(tmp_path):
    r = runner.invoke(app, ["lesion", "resnet8", "--data", "synthetic", "--examples", "60", "--trials", "1",
                            "--device", "cpu", "--out", str(tmp_path / "l")])
    assert r.exit_code == 0, r.output
    data = resgrad.load_data("synthetic")
    base = results(tmp_path / "l")["lesion"]["residual"]["baseline"]
    assert base > chance_error(data, 60) - 0.05  # this untrained net is at chance ...
    out = flat(r.output)
    assert f"resnet8's baseline error {base:.1%} is at chance" in out and "no verdict" in out  # ... and says so
    assert "raise error by at most" not in out


def test_lesion_epochs_trains_first_and_draws_the_verdict(tmp_path):
    r = runner.invoke(app, ["lesion", "resnet8", "--data", "synthetic", "--epochs", "3", "--examples", "100",
                            "--trials", "1", "--device", "cpu", "--out", str(tmp_path / "l")])
    assert r.exit_code == 0, r.output
    res = results(tmp_path / "l")
    assert res["models"]["residual"]["source"] == "trained" and res["config"]["train"]["epochs"] == 3
    data = resgrad.load_data("synthetic")
    base = res["lesion"]["residual"]["baseline"]
    assert base < chance_error(data, 100) - 0.05  # trained beyond chance: the verdict is drawn
    assert "raise error by at most" in flat(r.output) and "at chance" not in r.output


@pytest.mark.parametrize("args,needle", [
    (["lesion", "torchvision:resnet18", "--epochs", "1"], "--epochs trains a registry name"),
    (["paths", "mypkg.nets:make", "--epochs", "1"], "--epochs trains a registry name"),
    (["lesion", "resnet8", "--epochs", "1", "--input-shape", "1,16"], "--input-shape gives random inputs"),
    (["paths", "resnet8", "--input-shape", "1,16", "--data", "synthetic"], "not both"),
    (["lesion", "resnet8", "--input-shape", "1,x"], "--input-shape must be positive integers"),
    (["paths", "resnet8", "--input-shape", "16"], "convolutional net"),
    (["lesion", "resnet8", "--epochs", "-1"], "--epochs must be >= 0"),
])
def test_option_errors_are_one_line(args, needle):
    usage_error(runner.invoke(app, args), needle)


def test_input_shape_is_refused_for_a_run_folder(tmp_path):
    run = tmp_path / "run"
    r = runner.invoke(app, ["train", "resmlp-4x64", "--data", "synthetic", "--epochs", "1", "--device", "cpu",
                            "--out", str(run)])
    assert r.exit_code == 0, r.output
    usage_error(runner.invoke(app, ["paths", str(run), "--input-shape", "1,16"]), "run folder")


# ---- --input-shape: random inputs instead of a dataset ---------------------------------


def test_random_bundle_is_seeded_standard_normal():
    b = random_bundle((2, 3), 4, 7, seed=5)
    g = torch.Generator().manual_seed(5)
    assert torch.equal(b.x_test, torch.randn(7, 2, 3, generator=g))
    assert torch.equal(b.y_test, torch.randint(0, 4, (7,), generator=g))
    assert b.input_shape == (2, 3) and b.num_classes == 4 and b.name == "random-2x3"


def test_paths_of_a_torchvision_model_on_random_inputs(tmp_path):
    pytest.importorskip("torchvision")
    r = runner.invoke(app, ["paths", "torchvision:resnet18", "--input-shape", "3,32,32", "--examples", "4",
                            "--samples", "2", "--device", "cpu", "--out", str(tmp_path / "p")])
    assert r.exit_code == 0, r.output
    res = results(tmp_path / "p")
    assert res["n"] == 8 and res["data"] == "random-3x32x32" and res["exact"]["examples"] == 4
    assert res["exact"]["rel_error"] < 1e-4  # the path components sum to the autograd gradient


def test_lesion_of_a_registry_name_on_random_inputs(tmp_path):
    r = runner.invoke(app, ["lesion", "resnet8", "--input-shape", "1,16", "--examples", "20", "--trials", "1",
                            "--device", "cpu", "--out", str(tmp_path / "l")])
    assert r.exit_code == 0, r.output
    res = results(tmp_path / "l")
    assert res["data"] == "random-1x16" and len(res["lesion"]["residual"]["blocks"]) == 3
    assert "labels are random" in flat(r.output)  # random labels: at chance, and told why


# ---- the sum check names what the model has ------------------------------------------


def test_mode_phrase_names_the_models_normalisation():
    bn = nn.Sequential(nn.Conv1d(1, 2, 3), nn.BatchNorm1d(2))
    ln = nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3), nn.GroupNorm(1, 3))
    assert has_batchnorm(bn) and not has_batchnorm(ln) and normalisations(ln) == ["LayerNorm", "GroupNorm"]
    assert mode_phrase(bn, False) == "BatchNorm eval mode" and mode_phrase(bn, True) == "BatchNorm train mode"
    assert mode_phrase(ln, False) == "eval mode; Sequential has LayerNorm, GroupNorm, no BatchNorm"
    assert mode_phrase(nn.Linear(2, 2), False) == "eval mode; Linear has no normalisation layer"


def test_paths_on_gpt2_does_not_blame_batchnorm(tmp_path):
    pytest.importorskip("transformers")
    r = runner.invoke(app, ["paths", "hf:gpt2", "--layers", "2", "--width", "32", "--vocab", "64", "--seq-len", "8",
                            "--batch-size", "2", "--samples", "2", "--device", "cpu", "--out", str(tmp_path / "g")])
    assert r.exit_code == 0, r.output
    out = flat(r.output)
    assert "GPT2LMHeadModel has LayerNorm, no BatchNorm" in out and "BatchNorm eval mode" not in out
    assert results(tmp_path / "g")["sampled"]["note"] == NOTE_NO_BATCHNORM


def test_paths_on_a_he_net_names_batchnorm(tmp_path):
    r = runner.invoke(app, ["paths", "resnet8", "--data", "synthetic", "--samples", "2", "--examples", "8",
                            "--device", "cpu", "--out", str(tmp_path / "p")])
    assert r.exit_code == 0, r.output
    assert "BatchNorm eval mode" in flat(r.output) and results(tmp_path / "p")["sampled"]["note"] == NOTE


# ---- models --dims -------------------------------------------------------------------


def test_models_dims_on_names_that_take_none_is_one_line():
    usage_error(runner.invoke(app, ["models", "preln*", "--dims", "1"]), "--dims applies to the convolutional nets")
    usage_error(runner.invoke(app, ["models", "resnet20", "--dims", "3"]), "--dims must be 1")


def test_models_dims_sizes_the_conv_nets_and_lists_the_rest():
    r = runner.invoke(app, ["models", "--dims", "1"])
    assert r.exit_code == 0, r.output
    with torch.device("meta"):
        n = sum(p.numel() for p in resgrad.build("resnet20", dims=1, in_channels=1).parameters())
    assert f"{n:,}" in r.output and "preln-2" in r.output and "resmlp-4x64" in r.output
    assert "--dims 1 sizes the convolutional nets only" in flat(r.output)
