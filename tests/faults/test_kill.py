"""kill -9 at random moments of train, flow and paths; each rerun gives the numbers of an
uninterrupted run, with every epoch once. The default set kills each command once; ``-m slow``
kills at many more moments."""

from __future__ import annotations

import json
import random
import signal
import time
from pathlib import Path

import pytest
import torch

from resgrad.rundir import RunDir

from .conftest import TRAIN, cli, cli_here, popen


def _kill_after(args: list[str], seconds: float) -> None:
    proc = popen(*args)
    time.sleep(seconds)
    proc.send_signal(signal.SIGKILL)
    proc.wait(60)


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return RunDir(run).load_checkpoint()["model"]


@pytest.fixture(scope="module")
def train_reference(tmp_path_factory):
    ref = tmp_path_factory.mktemp("ref") / "run"
    assert cli(*TRAIN, "--epochs", "12", "--out", str(ref)).returncode == 0
    return _weights(ref)


MOMENTS = [round(r.uniform(1.0, 6.0), 2) for r in [random.Random(7)] for _ in range(6)]


@pytest.mark.parametrize("at", [MOMENTS[0], *(pytest.param(m, marks=pytest.mark.slow) for m in MOMENTS[1:])])
def test_kill_9_during_train_then_rerun(tmp_path, train_reference, at):
    run = tmp_path / "run"
    args = [*TRAIN, "--epochs", "12", "--checkpoint-every", "4s", "--out", str(run)]
    _kill_after(args, at)
    r = cli(*args)
    assert r.returncode == 0, r.stderr
    assert [m["epoch"] for m in RunDir(run).read_metrics()] == list(range(1, 13))
    w = _weights(run)
    assert all(torch.equal(w[k], train_reference[k]) for k in w)
    assert not list(run.rglob("*.tmp"))


FLOW = ["flow", "--size", "quick", "--families", "mlp", "--device", "cpu"]


@pytest.mark.parametrize("at", [2.0, pytest.param(3.5, marks=pytest.mark.slow),
                                pytest.param(5.0, marks=pytest.mark.slow)])
def test_kill_9_during_flow_then_rerun(tmp_path, at):
    out = tmp_path / "flow"
    _kill_after([*FLOW, "--out", str(out)], at)
    r = cli(*FLOW, "--out", str(out))
    assert r.returncode == 0, r.stderr
    ref = tmp_path / "ref"
    # The uninterrupted reference in-process (one thread, as the subprocesses): no third interpreter.
    assert cli_here(*FLOW, "--out", str(ref)).returncode == 0
    a, b = (json.loads((d / "results.json").read_text()) for d in (out, ref))
    assert [g["log10_ratio"] for g in a["groups"]] == [g["log10_ratio"] for g in b["groups"]]


@pytest.mark.slow
@pytest.mark.parametrize("at", [3.0, 6.0])
def test_kill_9_during_paths_then_rerun(tmp_path, train_reference, at):
    run = tmp_path / "run"
    assert cli(*TRAIN, "--epochs", "2", "--out", str(run)).returncode == 0
    args = ["paths", str(run), "--samples", "50", "--examples", "32", "--device", "cpu"]
    _kill_after(args, at)
    r = cli(*args)
    assert r.returncode == 0, r.stderr
    first = json.loads((run / "paths" / "results.json").read_text())
    assert cli(*args).returncode == 0
    again = json.loads((run / "paths" / "results.json").read_text())
    assert first["exact"]["norms"] == again["exact"]["norms"] and first["sampled"]["mean"] == again["sampled"]["mean"]
