"""A preemption signal to the whole process group (issue 24, item 5): what Slurm does to a job
step (``scancel --signal``, ``--signal=USR1@...``) and what Ctrl-C does in a terminal. Every
process resgrad started gets it (pool workers, multiprocessing's resource tracker); the command
prints its one promised line, exits 128 + the signal, and no helper prints a traceback."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

QUICK = ["study", "--preset", "quick", "--device", "cpu", "--workers", "2", "--threads", "1"]


def _signal_group_at(tmp_path, args: list[str], ready: Callable[[], bool], signum: int, after: float = 0.0):
    """Start ``resgrad ARGS`` in a session of its own, send ``signum`` to its whole group once
    ``ready()`` holds (plus ``after`` seconds); return (exit code, stdout, stderr)."""
    proc = subprocess.Popen([sys.executable, "-m", "resgrad", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    out: list[str] = []
    err: list[str] = []

    def read_out() -> None:
        out.extend(proc.stdout)

    def read_err() -> None:
        err.extend(proc.stderr)

    readers = [threading.Thread(target=read_out, daemon=True), threading.Thread(target=read_err, daemon=True)]
    for t in readers:
        t.start()
    try:
        deadline = time.time() + 600
        while not ready():
            assert proc.poll() is None and time.time() < deadline, "".join(out + err)
            time.sleep(0.05)
        time.sleep(after)
        assert proc.poll() is None, f"finished before the signal: {''.join(out + err)}"
        os.killpg(proc.pid, signum)
        proc.wait(600)
        time.sleep(0.5)  # helpers of the group that outlive the parent would print now
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(60)
        for t in readers:
            t.join(10)
    deadline = time.time() + 20  # workers leave ~1 s after their last task; the tracker when its pipe closes
    while _alive_in_group(proc.pid) and time.time() < deadline:
        time.sleep(0.2)
    left = _alive_in_group(proc.pid)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert not left, f"processes of the group outlived the command: {left}"
    return proc.returncode, "".join(out), "".join(err)


def _alive_in_group(pgid: int) -> list[int]:
    """Processes of group ``pgid`` still running (zombies left unreaped by a container's init do not count)."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(int(stat.parent.name))
    return alive


def _check(code: int, out: str, err: str, signum: int) -> None:
    text = out + err
    assert "Traceback" not in text and "KeyError" not in text and "resource_tracker" not in text, text
    assert code == 128 + signum, (code, text)
    lines = [x for x in err.strip().splitlines() if x.strip()]
    assert len(lines) == 1 and "rerun the same command to resume" in lines[0], err


def _stage(out: Path, name: str) -> Callable[[], bool]:
    return lambda: (out / name / "config.json").is_file()


def _training(out: Path) -> Callable[[], bool]:
    # A pool worker has finished an epoch of a degradation run: workers are training now.
    def ready() -> bool:
        return any(m.is_file() and m.read_text().count("\n") >= 1
                   for m in (out / "degradation" / "runs").glob("*/metrics.jsonl"))
    return ready


def test_sigusr1_to_the_group_of_a_quick_study_in_training_prints_one_line(tmp_path):
    # The campaign's case: SIGUSR1 to the whole group while pool workers train (Slurm's --signal).
    out = tmp_path / "s"
    code, stdout, err = _signal_group_at(tmp_path, [*QUICK, "--out", str(out)], _training(out), signal.SIGUSR1)
    _check(code, stdout, err, signal.SIGUSR1)


MOMENTS = {"flow": lambda out: _stage(out, "flow"), "training": _training,
           "ensemble": lambda out: _stage(out, "ensemble"), "transformer": lambda out: _stage(out, "transformer")}


@pytest.mark.slow
@pytest.mark.parametrize("moment", list(MOMENTS))
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGUSR1])
def test_a_stop_signal_to_the_group_at_several_moments_prints_one_line(tmp_path, signum, moment):
    out = tmp_path / "s"
    code, stdout, err = _signal_group_at(tmp_path, [*QUICK, "--out", str(out)], MOMENTS[moment](out), signum)
    _check(code, stdout, err, signum)


def test_a_stop_signal_while_a_checkpoint_is_read_is_the_stop_not_damage(tmp_path, monkeypatch):
    # The ensemble stage reads trained checkpoints outside any training loop: the signal's handler
    # raises there (inside torch.load). It was reported as a checkpoint that cannot be read.
    import resgrad
    from resgrad.rundir import RunDir
    from resgrad.stopping import Preempted, StopSignals

    from .conftest import SPEC, cfg, data, net

    run = RunDir(tmp_path / "run")
    resgrad.fit(net(), data(), cfg(epochs=1), out_dir=run.path, model_spec=SPEC, progress=False)
    real = torch.load

    def load_then_signal(*a, **kw):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.1)  # the handler runs in the main thread, between bytecodes
        return real(*a, **kw)

    monkeypatch.setattr(torch, "load", load_then_signal)
    with pytest.raises(Preempted, match="stopped on SIGTERM") as e, StopSignals():
        run.load_checkpoint()
    assert "cannot read checkpoint" not in str(e.value) and e.value.signum == signal.SIGTERM
