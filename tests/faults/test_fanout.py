"""Faults in a fan-out: a real ``resgrad sweep --workers 2`` stopped by SIGTERM / SIGINT / SIGUSR1,
its parent killed with -9, one of its pool workers killed with -9, and a NaN run in a worker.
Every rerun (or the restarted pool) ends with the numbers of an uninterrupted sweep, every
epoch once in every run. The default set tries each fault once; ``-m slow`` at more moments."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import time
from pathlib import Path

import pytest

from resgrad.executors import LocalExecutor, Task
from resgrad.experiments.sweep import load_config
from resgrad.experiments.sweep import run as run_sweep
from resgrad.rundir import RunDir

from .conftest import cli, cli_here, popen

GRID = """
depths = [8]
seeds = [0, 1]
datasets = ["synthetic"]
[data_kwargs.synthetic]
shape = [1, 16]
n_train = 384
n_test = 64
seed = 3
[train]
epochs = 20
batch_size = 32
lr = 0.05
"""
EPOCHS = 20
RUNS = ["plain8-s0", "plain8-s1", "resnet8-s0", "resnet8-s1"]


def sweep_args(grid: Path, out: Path, *extra: str) -> list[str]:
    return ["sweep", str(grid), "--out", str(out), "--device", "cpu", "--workers", "2", "--threads", "1", *extra]


@pytest.fixture(scope="module")
def grid(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("grid") / "grid.toml"
    p.write_text(GRID)
    return p


@pytest.fixture(scope="module")
def reference(grid, tmp_path_factory):
    """The uninterrupted sweep, in this process at one thread (the numbers of any worker count)."""
    import torch

    out = tmp_path_factory.mktemp("ref") / "sweep"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_sweep(load_config(grid, device="cpu"), out, executor=LocalExecutor(1, threads=1), log=lambda _: None,
                  progress=False)
    finally:
        torch.set_num_threads(before)
    return read_numbers(out)


def numbers(results: dict) -> dict:
    """What the sweep measured (wall-clock seconds aside): per run its history and gradient
    profiles, and the cells."""
    runs = {Path(r["run_dir"]).name: {"history": [{k: v for k, v in h.items() if k != "seconds"}
                                                  for h in r["history"]], "grad": r["grad"]}
            for r in results["runs"]}
    return {"runs": runs, "cells": results["cells"]}


def read_numbers(out: Path) -> dict:
    return numbers(json.loads((out / "results.json").read_text()))


def epochs_of(run: Path) -> list[int]:
    p = run / "metrics.jsonl"
    return [json.loads(s)["epoch"] for s in p.read_text().splitlines() if s.strip()] if p.exists() else []


def wait_for_training(out: Path, proc, timeout: float = 120) -> None:
    """Until some run of the sweep has a finished epoch (so both workers are inside fit)."""
    deadline = time.time() + timeout
    while not any(epochs_of(r) for r in (out / "runs" / "synthetic").glob("*")):
        assert proc.poll() is None, proc.stdout.read()
        assert time.time() < deadline, "the sweep did not start training"
        time.sleep(0.05)


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (every thread's), from /proc."""
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            out += [int(c) for c in (task / "children").read_text().split()]
    return out


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def assert_complete_and_equal(out: Path, reference: dict) -> None:
    for name in RUNS:
        assert epochs_of(out / "runs" / "synthetic" / name) == list(range(1, EPOCHS + 1)), name  # once each
    got = read_numbers(out)
    assert got["runs"] == reference["runs"]  # histories and gradient profiles, floats compared exactly
    assert got["cells"] == reference["cells"]
    assert not list(out.rglob("*.tmp"))


def test_pool_exceptions_travel_home_with_their_fields():
    import pickle

    from resgrad.executors import Preempted as Stopped
    from resgrad.train import NonFiniteLoss, Preempted

    for e in (NonFiniteLoss("non-finite loss at epoch 3", epoch=3, step=7),
              Preempted("stopped at epoch 2 step 9 on SIGTERM", signum=15, epoch=2, step=9),
              Stopped("stopped on SIGTERM", signum=15)):
        back = pickle.loads(pickle.dumps(e))
        assert type(back) is type(e) and str(back) == str(e)
        assert (back.signum if hasattr(e, "signum") else None) == getattr(e, "signum", None)
        assert (getattr(back, "epoch", None), getattr(back, "step", None)) == (getattr(e, "epoch", None),
                                                                              getattr(e, "step", None))
    assert isinstance(Stopped("x", signum=15), Preempted)  # `except Preempted` catches a fan-out's stop too


def test_a_nan_run_in_a_pool_worker_reports_the_in_process_message(tmp_path):
    import torch

    from resgrad.experiments.degradation import train_run
    from resgrad.train import NonFiniteLoss

    spec = {"data": "synthetic", "data_kwargs": {"shape": [1, 16], "n_train": 64, "n_test": 32, "seed": 3},
            "n_train": None, "n_test": None}
    cfg = {"model": "plain8", "seed": 0, "monitor": False, "data": spec, "progress": False,
           "train": {"epochs": 1, "batch_size": 32, "lr": 1e9, "device": "cpu"}}
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.raises(NonFiniteLoss) as here:
            train_run(cfg, str(tmp_path / "here"))
    finally:
        torch.set_num_threads(before)
    tasks = [Task("resgrad.experiments.degradation:train_run", cfg, str(tmp_path / "pool"), label="plain8-s0"),
             Task("resgrad.executors:probe", {}, str(tmp_path / "p"), label="probe")]
    with pytest.raises(NonFiniteLoss) as there:
        LocalExecutor(2, threads=1).map(tasks)
    assert (there.value.epoch, there.value.step) == (here.value.epoch, here.value.step)
    # The same line, but for the run folder it names.
    assert str(there.value).replace(str(tmp_path / "pool"), "RUN") == str(here.value).replace(
        str(tmp_path / "here"), "RUN")
    assert "\n" not in str(there.value)


# SIGTERM lands at a seeded random moment after training started; SIGINT and SIGUSR1 once each (slow).
_DELAYS = [round(r.uniform(0.0, 0.8), 2) for r in [random.Random(9)] for _ in range(4)]
STOPS = [(signal.SIGTERM, _DELAYS[0]),
         *(pytest.param(signal.SIGTERM, d, marks=pytest.mark.slow) for d in _DELAYS[1:]),
         pytest.param(signal.SIGINT, 0.3, marks=pytest.mark.slow),
         pytest.param(signal.SIGUSR1, 0.6, marks=pytest.mark.slow)]


@pytest.mark.parametrize("signum, delay", STOPS)
def test_a_stop_signal_checkpoints_every_worker_and_the_rerun_resumes(tmp_path, grid, reference, signum, delay):
    out = tmp_path / "sweep"
    proc = popen(*sweep_args(grid, out))
    try:
        wait_for_training(out, proc)
        time.sleep(delay)
        workers = [c for c in children(proc.pid) if "spawn_main" in cmdline(c)]
        proc.send_signal(signum)
        text, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    assert proc.returncode == 128 + signum, text
    assert "Traceback" not in text
    last = text.strip().splitlines()[-1]
    assert last.startswith(f"stopped on {signal.Signals(signum).name}") and last.endswith(
        "rerun the same command to resume"), text
    assert not [w for w in workers if alive(w)]  # the workers stopped with it
    states = [RunDir(r).load_checkpoint() for r in (out / "runs" / "synthetic").glob("*") if RunDir(r).has_checkpoint()]
    assert [s for s in states if not s["finished"]]  # it stopped runs in flight, at a checkpoint
    r = cli_here(*sweep_args(grid, out))  # the same command in-process: its pool is real, its parent not new
    assert r.returncode == 0, r.stderr
    assert_complete_and_equal(out, reference)


KILLS = [round(r.uniform(0.0, 2.0), 2) for r in [random.Random(21)] for _ in range(3)]


# All slow: _die_with_parent is unchanged here, and the default suite stays fast; the new paths
# (stop forwarding, a pool restarted around a SIGTERMed survivor) are in the default set above/below.
@pytest.mark.slow
@pytest.mark.parametrize("delay", KILLS)
def test_kill_9_of_the_sweep_parent_takes_its_workers_and_the_rerun_resumes(tmp_path, grid, reference, delay):
    out = tmp_path / "sweep"
    proc = popen(*sweep_args(grid, out))
    try:
        wait_for_training(out, proc)
        time.sleep(delay)
        kids = children(proc.pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    deadline = time.time() + 15
    while any(alive(k) for k in kids) and time.time() < deadline:  # _die_with_parent: no orphan writers
        time.sleep(0.1)
    assert not [k for k in kids if alive(k)]
    r = cli(*sweep_args(grid, out))
    assert r.returncode == 0, r.stderr
    assert_complete_and_equal(out, reference)


def test_kill_9_of_one_pool_worker_restarts_the_pool_and_loses_no_epoch(tmp_path, grid, reference):
    out = tmp_path / "sweep"
    proc = popen(*sweep_args(grid, out))
    try:
        wait_for_training(out, proc)
        workers = [c for c in children(proc.pid) if "spawn_main" in cmdline(c)]
        assert len(workers) == 2, [cmdline(c) for c in children(proc.pid)]
        os.kill(workers[0], signal.SIGKILL)
        text, _ = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    assert proc.returncode == 0, text  # the same command finished: the pool was replaced, runs resumed
    assert "Traceback" not in text
    assert_complete_and_equal(out, reference)


@pytest.mark.slow
def test_sigterm_to_a_quick_study_with_two_workers_then_rerun(tmp_path):
    args = ["study", "--preset", "quick", "--device", "cpu", "--workers", "2", "--threads", "1"]
    ref, out = tmp_path / "ref", tmp_path / "study"
    assert cli(*args, "--out", str(ref), timeout=900).returncode == 0
    proc = popen(*args, "--out", str(out))
    try:
        deadline = time.time() + 300
        while not any(epochs_of(r) for r in (out / "degradation" / "runs").glob("*")):
            assert proc.poll() is None and time.time() < deadline, proc.stdout.read()
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        text, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    assert proc.returncode == 143 and "rerun the same command to resume" in text.strip().splitlines()[-1], text
    assert cli(*args, "--out", str(out), timeout=900).returncode == 0
    for run in sorted((ref / "degradation" / "runs").glob("*")):
        a = [{k: v for k, v in m.items() if k != "seconds"} for m in RunDir(run).read_metrics()]
        b = [{k: v for k, v in m.items() if k != "seconds"} for m in RunDir(out / "degradation" / "runs" / run.name)
             .read_metrics()]
        assert a == b, run.name  # every epoch once, the same numbers and gradient profiles
