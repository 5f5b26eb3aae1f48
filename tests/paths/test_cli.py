"""``resgrad paths`` and ``resgrad lesion``: tables, results.json and figures; usage errors exit 2."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

import resgrad
from resgrad.cli import app
from resgrad.io import read_json

runner = CliRunner()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A residual run and its plain twin side by side, as `resgrad train` names them."""
    root = tmp_path_factory.mktemp("runs")
    data = resgrad.load_data("synthetic").subset(64, 32)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    cfg = resgrad.TrainConfig(epochs=1, max_steps=1, device="cpu")
    for name in ("resnet14", "plain14"):
        torch.manual_seed(0)
        net = resgrad.build_for(name, data.input_shape, data.num_classes)
        spec = {"name": name, "input_shape": list(data.input_shape), "num_classes": data.num_classes, "kwargs": {}}
        resgrad.fit(net, data, cfg, out_dir=root / f"{name}-synthetic-s0", model_spec=spec, progress=False)
    torch.set_num_threads(before)
    return root


def test_paths_on_a_run_folder(runs, tmp_path):
    out = tmp_path / "p"
    r = runner.invoke(app, ["paths", str(runs / "resnet14-synthetic-s0"), "--samples", "3", "--examples", "8",
                            "--device", "cpu", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "effective paths" in r.output and "Veit et al. 2016" in r.output and "eval mode" in r.output
    res = read_json(out / "results.json")
    assert res["n"] == 6 and res["sampled"]["samples"] == 3 and (out / "paths.png").stat().st_size > 0


def test_lesion_finds_the_plain_twin(runs, tmp_path):
    out = tmp_path / "l"
    r = runner.invoke(app, ["lesion", str(runs / "resnet14-synthetic-s0"), "--trials", "1", "--examples", "50",
                            "--device", "cpu", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "plain twin" in r.output and "downsampling" in r.output and "Kendall" in r.output
    res = read_json(out / "results.json")
    assert set(res["lesion"]) == {"residual", "plain"} and (out / "lesion.png").is_file()


@pytest.mark.parametrize(
    "args,needle",
    [
        (["paths", "plain14"], "one path"),
        (["paths", "runs/does-not-exist"], "no run folder"),
        (["paths", "resnet21"], "6n+2"),
        (["paths", "torch.nn:Identity"], "supports"),
        (["paths", "resnet14", "--samples", "0"], "--samples"),
        (["lesion", "resnet14", "--trials", "0"], "--trials"),
    ],
)
def test_usage_errors_exit_2_in_one_line(args, needle, tmp_path):
    r = runner.invoke(app, [*args, "--device", "cpu", "--data", "synthetic", "--out", str(tmp_path)])
    assert r.exit_code == 2, r.output
    assert needle in r.output and "Traceback" not in r.output
    assert len([s for s in r.output.splitlines() if s.strip()]) <= 2  # one line (rich may wrap it)


def test_a_folder_that_is_not_a_run(tmp_path):
    r = runner.invoke(app, ["lesion", str(tmp_path), "--device", "cpu"])
    assert r.exit_code == 2 and "not a resgrad run folder" in r.output
