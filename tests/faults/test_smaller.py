"""The smaller findings of the fault campaign (issue 24, item 6), each in one line: a negative
verdict threshold, --dims on a Transformer, integer options given a string or a float, and a
lock held by a process on another host (how to take it over once that host is gone)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from resgrad.cli import app
from resgrad.experiments.flow import FlowConfig
from resgrad.rundir import RunDir, RunLocked

runner = CliRunner()


def _one_line(res, *needles: str) -> str:
    assert res.exit_code == 2, res.output
    lines = [x for x in res.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "╭" not in res.output, res.output
    assert "Traceback" not in res.output
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("bad", ["-1", "0", "nan", "inf"])
def test_a_threshold_that_is_not_a_positive_number_of_decades_is_refused(tmp_path, bad):
    _one_line(runner.invoke(app, ["flow", "--threshold", bad, "--out", str(tmp_path / "f")]),
              "threshold_decades must be a finite number > 0", f"received {float(bad)}")
    assert not (tmp_path / "f").exists()  # refused before any folder or work
    with pytest.raises(ValueError, match="ci_level must be in"):
        FlowConfig(ci_level=1.5)
    assert FlowConfig(threshold_decades=0.5).threshold_decades == 0.5


def test_dims_on_a_transformer_name_is_one_line():
    _one_line(runner.invoke(app, ["models", "postln-2", "--dims", "1"]), "--dims applies to the convolutional nets")


@pytest.mark.parametrize("opt", ["--epochs", "--batch-size", "--seed", "--max-steps"])
@pytest.mark.parametrize("bad", ["abc", "1.5"])
def test_integer_options_given_a_string_or_float_are_one_line(opt, bad):
    # tests/cli/test_usage_errors.py walks every integer option of every command the same way.
    _one_line(runner.invoke(app, ["train", "resmlp-3x16", "--data", "synthetic", opt, bad]), f"'{opt}'", "integer",
              "resgrad train --help")


@pytest.fixture
def holder(tmp_path):
    """A live process holding ``tmp_path/run``'s lock, whose lock file then says it runs on another host."""
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", (
        "import time; from resgrad.rundir import RunDir\n"
        f"with RunDir({str(run)!r}).locked():\n    print('held', flush=True); time.sleep(300)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        yield run, proc
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)


def _as_if_on(run, host: str) -> None:
    lock = run / ".lock"
    info = json.loads(lock.read_text())
    with open(lock, "r+") as f:  # in place: the holder's flock stays on this inode
        f.truncate(0)
        f.write(json.dumps({**info, "host": host}) + "\n")


def test_a_lock_held_on_another_host_names_the_file_to_remove(holder):
    run, proc = holder
    _as_if_on(run, "node-gone-17")
    with pytest.raises(RunLocked) as e, RunDir(run).locked():
        pass
    msg = str(e.value)
    assert f"pid {proc.pid} on node-gone-17" in msg and "if node-gone-17 is gone" in msg
    assert f"remove {run / '.lock'} and rerun" in msg
    # Doing what it says takes the folder over, though the (foreign) holder still has its flock.
    os.remove(run / ".lock")
    with RunDir(run).locked():
        assert json.loads((run / ".lock").read_text())["pid"] == os.getpid()
    assert proc.poll() is None


def test_a_lock_held_on_this_host_does_not_offer_the_file(holder):
    run, proc = holder
    with pytest.raises(RunLocked) as e, RunDir(run).locked():
        pass
    assert "wait for it to finish" in str(e.value) and "remove" not in str(e.value)


def test_the_cli_prints_the_takeover_in_one_line(holder):
    run, _ = holder
    _as_if_on(run, "node-gone-17")
    r = subprocess.run([sys.executable, "-m", "resgrad", "train", "resmlp-3x16", "--data", "synthetic", "--epochs",
                        "1", "--device", "cpu", "--out", str(run)], capture_output=True, text=True, timeout=300)
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.returncode == 2 and len(lines) == 1 and f"remove {run / '.lock'} and rerun" in lines[0], r.stderr
