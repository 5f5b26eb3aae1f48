"""Preemption: SIGTERM / SIGINT / SIGUSR1 during fit finish the step, checkpoint mid-epoch and stop;
the rerun continues at that step and ends with the weights of an uninterrupted run, bitwise."""

from __future__ import annotations

import os
import random
import signal
import time

import pytest
import torch

import resgrad
from resgrad import Callback
from resgrad.rundir import RunDir
from resgrad.train import Preempted

from .conftest import (
    SPEC,
    STEPS_PER_EPOCH,
    TRAIN,
    cfg,
    cli,
    cli_here,
    data,
    net,
    one_line,
    popen,
    same,
    weights,
)


class SignalAt(Callback):
    """Sends ``signum`` to this process after the backward pass of global step ``at`` (``times`` times)."""

    def __init__(self, at: int, signum: int, times: int = 1) -> None:
        self.at, self.signum, self.times = at, signum, times

    def on_after_backward(self, model, step):
        if step == self.at:
            for _ in range(self.times):
                os.kill(os.getpid(), self.signum)


@pytest.fixture(scope="module")
def reference():
    """An uninterrupted run: final weights and metrics."""
    res = resgrad.fit(net(), data(), cfg(), progress=False)
    return weights(res.model), [{k: v for k, v in h.items() if k != "seconds"} for h in res.history]


def _rows(run):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in RunDir(run).read_metrics()]


# SIGTERM at seeded random steps (mid-epoch and on an epoch's last step), SIGINT and SIGUSR1 once each.
_STEPS = sorted(random.Random(12).sample(range(1, 3 * STEPS_PER_EPOCH - 1), 4)) + [STEPS_PER_EPOCH - 1]
CASES = [(s, signal.SIGTERM) for s in _STEPS] + [(4, signal.SIGINT), (9, signal.SIGUSR1)]


@pytest.mark.parametrize("at, signum", CASES)
def test_a_signal_stops_after_the_step_and_the_rerun_is_bitwise(tmp_path, reference, at, signum):
    run = tmp_path / "run"
    with pytest.raises(Preempted) as e:
        resgrad.fit(net(), data(), cfg(), callbacks=[SignalAt(at, signum)], out_dir=run, model_spec=SPEC,
                    progress=False)
    assert e.value.signum == signum and e.value.step == at + 1  # the step in flight finished first
    assert f"step {at + 1}" in str(e.value) and "rerun the same command" in str(e.value)
    state = RunDir(run).load_checkpoint()
    assert state["step"] == at + 1 and not state["finished"]
    # The handlers were restored: the default SIGINT handler raises KeyboardInterrupt again.
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    res = resgrad.fit(net(), data(), cfg(), out_dir=run, model_spec=SPEC, progress=False)
    ref_w, ref_rows = reference
    assert same(weights(res.model), ref_w)
    assert _rows(run) == ref_rows  # every epoch once, the interrupted epoch's losses included


def test_a_second_signal_while_saving_does_not_corrupt_the_checkpoint(tmp_path, reference, monkeypatch):
    run = tmp_path / "run"
    real = RunDir.save_checkpoint

    def save_and_signal(self, state, **kw):  # a second SIGTERM arrives in the middle of the save
        os.kill(os.getpid(), signal.SIGTERM)
        real(self, state, **kw)

    monkeypatch.setattr(RunDir, "save_checkpoint", save_and_signal)
    with pytest.raises(Preempted):
        resgrad.fit(net(), data(), cfg(), callbacks=[SignalAt(3, signal.SIGTERM, times=2)], out_dir=run,
                    model_spec=SPEC, progress=False)
    monkeypatch.setattr(RunDir, "save_checkpoint", real)
    assert RunDir(run).load_checkpoint()["step"] == 4  # verifies its checksum too
    res = resgrad.fit(net(), data(), cfg(), out_dir=run, model_spec=SPEC, progress=False)
    assert same(weights(res.model), reference[0])


def test_step_checkpoints_resume_after_kill_at_the_same_place(tmp_path, reference):
    run = tmp_path / "run"
    seen = []

    class Kill(Callback):
        def on_after_backward(self, model, step):
            if step == 10:  # after the step-9 checkpoint (every 3 steps): "kill" by raising
                seen.append(RunDir(run).load_checkpoint()["step"])
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        resgrad.fit(net(), data(), cfg(checkpoint_steps=3), callbacks=[Kill()], out_dir=run, model_spec=SPEC,
                    progress=False)
    assert seen == [9] and RunDir(run).load_checkpoint()["partial"]["pos"] == 9 - STEPS_PER_EPOCH
    res = resgrad.fit(net(), data(), cfg(checkpoint_steps=3), out_dir=run, model_spec=SPEC, progress=False)
    assert same(weights(res.model), reference[0]) and _rows(run) == reference[1]


def test_sigterm_to_the_train_command_exits_143_with_one_line_and_resumes(tmp_path):
    run = tmp_path / "run"
    args = [*TRAIN, "--epochs", "40", "--out", str(run)]
    proc = popen(*args)
    deadline = time.time() + 120
    while not RunDir(run).has_checkpoint():  # a few epochs in: signal it somewhere mid-run
        assert proc.poll() is None, proc.stdout.read()
        assert time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, out
    last = out.strip().splitlines()[-1]
    assert last.startswith("stopped at epoch") and "rerun the same command to resume" in last
    assert "Traceback" not in out
    again = cli(*args)
    assert again.returncode == 0, again.stderr
    epochs = [r["epoch"] for r in RunDir(run).read_metrics()]
    assert epochs == list(range(1, 41))
    # Bitwise the weights of an uninterrupted run of the same command.
    ref = tmp_path / "ref"
    # In-process (one thread, as the subprocess): the reference needs no signals, only the numbers.
    assert cli_here(*TRAIN, "--epochs", "40", "--out", str(ref)).returncode == 0
    a, b = RunDir(run).load_checkpoint()["model"], RunDir(ref).load_checkpoint()["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoint_every_takes_epochs_steps_and_minutes(tmp_path):
    from resgrad.cli.train import checkpoint_option

    assert checkpoint_option("2") == {"checkpoint_every": 2}
    assert checkpoint_option("500s") == {"checkpoint_steps": 500}
    assert checkpoint_option("10m") == {"checkpoint_minutes": 10.0}
    for bad in ("0", "x", "5h", "-3s", ""):
        with pytest.raises(ValueError, match="--checkpoint-every takes"):
            checkpoint_option(bad)
    r = cli(*TRAIN, "--checkpoint-every", "5h", "--out", str(tmp_path / "r"))
    assert r.returncode == 2 and "--checkpoint-every takes" in one_line(r)
