"""``resgrad train``: kill -9 and resume, a finished run is a no-op, bad input exits 2 in one line."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from typer.testing import CliRunner

from resgrad.cli import app

runner = CliRunner()

# Small and stable (lr 0.01): ~30 ms per epoch here, so a kill lands with epochs to go.
ARGS = ["resmlp-4x64", "--data", "synthetic", "--epochs", "20", "--batch-size", "32", "--lr", "0.01",
        "--device", "cpu"]


def _env():
    # One thread each: identical arithmetic in every process, and gentle on shared cores.
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _train(out, *extra):
    return subprocess.run([sys.executable, "-m", "resgrad", "train", *ARGS, "--out", str(out), *extra],
                          env=_env(), capture_output=True, text=True, timeout=300)


def _epochs(run):
    path = run / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(s)["epoch"] for s in path.read_text().splitlines() if s.endswith("}")]


def _weights(run):
    return torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"]


def test_kill_9_then_resume_gives_each_epoch_once_and_the_same_weights(tmp_path):
    ref, run = tmp_path / "ref", tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "resgrad", "train", *ARGS, "--out", str(run)],
                            env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not _epochs(run) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    killed_at = _epochs(run)
    assert 1 <= len(killed_at) < 20, f"the kill should land mid-run, metrics had epochs {killed_at}"

    done = _train(run)
    assert done.returncode == 0, done.stderr
    assert _epochs(run) == list(range(1, 21))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the subprocesses: the same arithmetic, bit for bit
    try:
        assert runner.invoke(app, ["train", *ARGS, "--out", str(ref)]).exit_code == 0
    finally:
        torch.set_num_threads(threads)
    a, b = _weights(ref), _weights(run)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # bitwise on CPU

    again = runner.invoke(app, ["train", *ARGS, "--out", str(run)])  # finished: nothing is redone
    assert again.exit_code == 0 and f"{run} already finished" in again.stdout
    assert _epochs(run) == list(range(1, 21))


def test_train_writes_a_run_and_prints_the_table(tmp_path):
    out = tmp_path / "r"
    res = runner.invoke(app, ["train", "resmlp-4x64", "--data", "synthetic", "--epochs", "2", "--lr", "0.01",
                              "--out", str(out)])
    assert res.exit_code == 0, res.stderr
    assert "test" in res.stdout and f"run folder: {out}" in res.stdout
    rec = json.loads((out / "config.json").read_text())
    assert rec["model_spec"] == {"name": "resmlp-4x64", "input_shape": [1, 40], "num_classes": 10, "kwargs": {}}


def test_default_run_folder_is_named_after_model_data_seed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["train", "resmlp-4x64", "--data", "synthetic", "--epochs", "1", "--seed", "3",
                              "--lr", "0.01"])
    assert res.exit_code == 0, res.stderr
    assert (tmp_path / "runs" / "resmlp-4x64-synthetic-s3" / "checkpoints" / "last.pt").is_file()


@pytest.mark.parametrize("argv, says", [
    (["nosuchnet", "--data", "synthetic"], "unknown model"),
    (["resnet21", "--data", "synthetic"], "6n+2"),
    (["resnet20", "--data", "nosuchdata"], "unknown dataset"),
    (["resmlp-4x64", "--data", "synthetic", "--epochs", "0"], "epochs must be"),
    (["resmlp-4x64", "--data", "synthetic", "--lr", "-1"], "lr must be"),
    (["resmlp-4x64", "--data", "synthetic", "--batch-size", "0"], "batch_size must be"),
    (["resmlp-4x64", "--data", "synthetic", "--active-blocks", "9"], "only 4 blocks"),
    (["resmlp-4x64", "--data", "synthetic", "--device", "tpu"], "--device must be"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, argv, says):
    res = runner.invoke(app, ["train", *argv, "--out", str(tmp_path / "r")])
    assert res.exit_code == 2
    assert says in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_config_mismatch_exits_2(tmp_path):
    out = tmp_path / "r"
    base = ["train", "resmlp-4x64", "--data", "synthetic", "--epochs", "1", "--lr", "0.01", "--out", str(out)]
    assert runner.invoke(app, base).exit_code == 0
    res = runner.invoke(app, [*base, "--lr", "0.02"])
    assert res.exit_code == 2 and "config.lr: 0.01 -> 0.02" in res.stderr and "Traceback" not in res.stderr


def test_non_finite_loss_exits_1_with_one_line(tmp_path):
    res = runner.invoke(app, ["train", "resmlp-4x64", "--data", "synthetic", "--epochs", "2", "--lr", "1e6",
                              "--out", str(tmp_path / "r")])
    assert res.exit_code == 1
    assert "non-finite" in res.stderr and "epoch 1" in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_debug_lets_the_exception_through(tmp_path):
    res = runner.invoke(app, ["train", "resnet21", "--data", "synthetic", "--out", str(tmp_path / "r")],
                        env={"RESGRAD_DEBUG": "1"})
    assert isinstance(res.exception, ValueError) and "6n+2" in str(res.exception)  # the traceback is shown
