"""One writer per run folder, and damaged files: every file of a finished run truncated or
garbage-filled, then the commands that read it; a full disk and read-only storage.
Never a traceback, never a silently different result."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import resgrad
from resgrad.experiments import flow
from resgrad.results import FlowResult
from resgrad.rundir import DamagedRun, RunDir, RunLocked
from resgrad.train import load_run

from .conftest import SPEC, TRAIN, can_mount, cfg, cli, cli_here, data, net, one_line, same, tmpfs, weights

NO_MOUNT = can_mount()


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished `resgrad train` run folder, kept pristine (tests copy it)."""
    run = tmp_path_factory.mktemp("finished") / "run"
    r = cli(*TRAIN, "--out", str(run))
    assert r.returncode == 0, r.stderr
    return run


def _copy(src: Path, dst: Path) -> Path:
    subprocess.run(["cp", "-a", str(src), str(dst)], check=True)
    return dst


# ---- one writer ------------------------------------------------------------------------


def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    run = RunDir(tmp_path / "run")
    with run.locked():
        with run.locked():  # re-entrant inside one process (a study's stage, fit twice)
            pass
        r = cli(*TRAIN, "--out", str(run.path))
        msg = one_line(r)
        assert r.returncode == 2 and f"pid {os.getpid()}" in msg and "being written by" in msg
        assert "use another --out folder" in msg
    assert cli(*TRAIN, "--out", str(run.path)).returncode == 0  # released on exit


def test_a_lock_whose_holder_was_killed_is_taken_over(tmp_path):
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from resgrad.rundir import RunDir\n"
        f"with RunDir({str(run)!r}).locked():\n    print('held', flush=True); time.sleep(120)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLocked, match=f"pid {holder.pid}"), RunDir(run).locked():
            pass
        holder.send_signal(signal.SIGKILL)
        holder.wait(30)
        with RunDir(run).locked():  # the kernel released the dead holder's flock
            pass
    finally:
        holder.kill()
        holder.wait(30)


@pytest.mark.slow
def test_two_trains_started_together_never_interleave(tmp_path):
    run = tmp_path / "run"
    procs = [subprocess.Popen([sys.executable, "-m", "resgrad", *TRAIN, "--epochs", "20", "--out", str(run)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(240), p.stderr.read()) for p in procs]
    codes = sorted(c for c, _ in results)
    if codes == [0, 0]:  # the second started only after the first had finished: it read the result
        pass
    else:
        assert codes == [0, 2], results
        assert any("being written by" in err for c, err in results if c == 2)
    assert [r["epoch"] for r in RunDir(run).read_metrics()] == list(range(1, 21))


def test_stale_temp_files_of_a_killed_writer_are_removed(tmp_path, finished):
    run = _copy(finished, tmp_path / "run")
    stale = [run / "checkpoints" / ".last.pt.abc123.tmp", run / ".metrics.jsonl.x.tmp"]
    for p in stale:
        p.write_bytes(b"half")
    assert cli(*TRAIN, "--out", str(run)).returncode == 0
    assert not any(p.exists() for p in stale)


# ---- damaged files ---------------------------------------------------------------------


def _cut(p: Path, frac: float = 0.5) -> None:
    data_ = p.read_bytes()
    p.write_bytes(data_[: int(len(data_) * frac)])


def _garbage(p: Path) -> None:
    p.write_bytes(os.urandom(max(64, p.stat().st_size // 2)))


DAMAGE = {"cut": _cut, "garbage": _garbage, "empty": lambda p: p.write_bytes(b"")}


@pytest.mark.parametrize("name", ["metrics.jsonl", "config.json", "checkpoints/last.pt",
                                  "checkpoints/last.pt.sha256"])
@pytest.mark.parametrize("how", ["cut", pytest.param("garbage", marks=pytest.mark.slow),
                                 pytest.param("empty", marks=pytest.mark.slow)])
def test_every_file_of_a_finished_run_damaged_then_every_reader(tmp_path, finished, name, how):
    run = _copy(finished, tmp_path / "run")
    DAMAGE[how](run / name)
    commands = [[*TRAIN, "--out", str(run)]]  # the same command again: it reads every file
    if name != "metrics.jsonl":  # the weights' readers: diagnose, paths (lesion shares its loader), load_run
        commands += [["diagnose", str(run), "--out", str(tmp_path / "d")],
                     ["paths", str(run), "--samples", "2", "--examples", "8", "--out", str(tmp_path / "p")]]
        with pytest.raises((ValueError, FileNotFoundError)):
            load_run(run)
    for i, args in enumerate(commands):
        # The train command in a real process; the read-only readers in-process (cli_here).
        r = cli(*args) if i == 0 else cli_here(*args)
        assert r.returncode in (1, 2), (args, r.stdout, r.stderr)
        msg = one_line(r)
        assert str(run) in msg and ("--no-resume" in msg or "new --out" in msg or "restore" in msg), msg


def test_a_torn_last_metrics_line_is_repaired_from_the_checkpoint(tmp_path):
    run = tmp_path / "run"
    ref = resgrad.fit(net(), data(), cfg(), progress=False)
    resgrad.fit(net(), data(), cfg(max_steps=12), out_dir=run, model_spec=SPEC, progress=False)
    with open(run / "metrics.jsonl", "a") as f:  # a kill mid-write of epoch 3's line
        f.write('{"epoch": 3, "train_lo')
    # max_steps changes the schedule: continue under the same config, then compare rows.
    res = resgrad.fit(net(), data(), cfg(max_steps=12), out_dir=run, model_spec=SPEC, progress=False)
    assert [r["epoch"] for r in RunDir(run).read_metrics()] == [1, 2]
    assert res.final["epoch"] == 2 and ref.history[0]["train_loss"] == pytest.approx(res.history[0]["train_loss"])


def test_a_metrics_file_shorter_than_the_checkpoint_is_an_error_not_a_result(tmp_path, finished):
    run = _copy(finished, tmp_path / "run")
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text(lines[0] + "\n")  # whole lines lost: 1 of 3 epochs left
    r = cli(*TRAIN, "--out", str(run))
    msg = one_line(r)
    assert r.returncode == 2 and "metrics.jsonl holds epochs 1-1" in msg and "at epoch 3" in msg
    assert (run / "metrics.jsonl").read_text() == lines[0] + "\n"  # nothing rewritten, nothing lost


def test_a_deleted_config_never_discards_a_finished_checkpoint(tmp_path, finished):
    run = _copy(finished, tmp_path / "run")
    (run / "config.json").unlink()
    before = (run / "checkpoints" / "last.pt").read_bytes()
    r = cli(*TRAIN, "--out", str(run))
    assert r.returncode == 2 and "has a checkpoint but no config.json" in one_line(r)
    assert (run / "checkpoints" / "last.pt").read_bytes() == before


def test_a_checkpoint_that_fails_its_checksum_is_refused(tmp_path):
    run = RunDir(tmp_path / "run")
    resgrad.fit(net(), data(), cfg(epochs=1), out_dir=run.path, model_spec=SPEC, progress=False)
    blob = bytearray(run.checkpoint_path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF  # one flipped byte: still a loadable zip, maybe, but not this payload
    run.checkpoint_path.write_bytes(bytes(blob))
    with pytest.raises(DamagedRun, match="fails its checksum"):
        run.load_checkpoint()
    with pytest.raises(DamagedRun, match="fails its checksum"):
        resgrad.fit(net(), data(), cfg(epochs=1), out_dir=run.path, model_spec=SPEC, progress=False)


@pytest.mark.parametrize("content", [b"", b"{}", b"[]", b"\xff\xfe garbage", b'{"schema": "resgrad.flow"'])
def test_a_damaged_results_file_is_recomputed_not_reused(tmp_path, content, monkeypatch):
    cfg_ = flow.FlowConfig(families=("mlp",), activations=("relu",), inits=("he",), depths=(4,), seeds=(0,),
                           batch_size=8, data="synthetic", signal=None)
    first = flow.run(cfg_, tmp_path)
    (tmp_path / "results.json").write_bytes(content)
    again = flow.run(cfg_, tmp_path)
    assert isinstance(again, FlowResult) and again.groups == first.groups
    assert RunDir(tmp_path).read_results(FlowResult).groups == first.groups
    r = cli_here("report", str(tmp_path / "nothing-here"))  # in-process: tests/report/test_cli.py runs the real process
    assert r.returncode == 2 and "does not exist" in one_line(r)


# ---- growing a run and the schedule ----------------------------------------------------


def test_more_epochs_on_a_finished_run_refuse_when_the_schedule_moves(tmp_path, finished):
    run = _copy(finished, tmp_path / "run")
    r = cli(*[a if a != "3" else "5" for a in TRAIN], "--out", str(run))
    msg = one_line(r)
    assert r.returncode == 2 and "--epochs 5 would change its schedule" in msg and "keep --epochs 3" in msg


def test_more_epochs_continue_when_every_step_run_keeps_its_lr(tmp_path):
    run = tmp_path / "run"
    resgrad.fit(net(), data(), cfg(epochs=2, milestones=()), out_dir=run, model_spec=SPEC, progress=False)
    grown = resgrad.fit(net(), data(), cfg(epochs=3, milestones=()), out_dir=run, model_spec=SPEC, progress=False)
    ref = resgrad.fit(net(), data(), cfg(epochs=3, milestones=()), progress=False)
    assert grown.resumed_from == 2 and same(weights(grown.model), weights(ref.model))
    assert json.loads((run / "config.json").read_text())["grown_from"]["epochs"] == 2


def test_a_one_step_run_runs_at_the_base_lr(tmp_path):
    res = resgrad.fit(net(), data(), cfg(max_steps=1), progress=False)
    assert res.history[0]["lr"] == pytest.approx(0.05)


# ---- storage ---------------------------------------------------------------------------


@pytest.mark.skipif(NO_MOUNT is not None, reason=NO_MOUNT or "")
def test_a_full_disk_is_one_line_naming_the_file_and_the_next_run_works(tmp_path):
    with tmpfs("96k") as disk:
        run = disk / "run"
        big = [a if a != "resmlp-3x16" else "resmlp-3x64" for a in TRAIN]
        r = cli(*big, "--out", str(run))
        msg = one_line(r)
        assert r.returncode == 1 and "the disk is full writing" in msg and str(run) in msg, msg
        assert not list(run.rglob("*.tmp"))  # nothing half-written left behind
        subprocess.run(["mount", "-o", "remount,size=8m", str(disk)], check=True)
        again = cli(*big, "--out", str(run))
        assert again.returncode == 0, again.stderr
        assert [x["epoch"] for x in RunDir(run).read_metrics()] == [1, 2, 3]


@pytest.mark.skipif(NO_MOUNT is not None, reason=NO_MOUNT or "")
def test_a_finished_run_and_study_folder_read_on_read_only_storage(tmp_path, finished):
    with tmpfs("8m") as disk:
        run = _copy(finished, disk / "run")
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        r = cli(*TRAIN, "--out", str(run))
        assert r.returncode == 0 and "already finished" in r.stdout, r.stderr
        model, record = load_run(run)
        assert record["kind"] == "resgrad.train"
        d = cli_here("diagnose", str(run), "--out", str(tmp_path / "diag"))  # a reader: in-process
        assert d.returncode == 0, d.stderr
        w = cli(*TRAIN, "--epochs", "4", "--no-resume", "--out", str(run))
        assert w.returncode == 1 and "cannot write" in one_line(w)


def test_checkpoint_saves_are_fast_enough_for_slurms_grace_period(tmp_path):
    # Not a timing test of resgrad's speed: a bound far above what any save takes, to catch a
    # regression that would blow Slurm's default 30 s between SIGTERM and SIGKILL.
    model = resgrad.build_for("resnet110", (1, 40), 10)
    run = RunDir(tmp_path)
    t = time.perf_counter()
    run.save_checkpoint({"model": model.state_dict()})
    assert time.perf_counter() - t < 15
