"""One run over 2 processes (torchrun, gloo on the CPU) against the same run in one process.

Every torchrun here is started in its own session with a timeout and its whole process
group is killed in a ``finally``, so a failing assertion or a hang leaves no worker behind.
"""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import resgrad
from resgrad.cli import app
from resgrad.data import synthetic
from resgrad.probes import GradientMonitor

# resmlp-4x64 has no normalisation layer (norm="none"), so a 2-process run computes exactly
# the single-process step up to float rounding. A BatchNorm net would differ by design:
# each rank normalises with the statistics of its own half of the batch.
EPOCHS = 12
ARGS = ["resmlp-4x64", "--data", "synthetic", "--epochs", str(EPOCHS), "--batch-size", "32", "--lr", "0.01",
        "--device", "cpu"]
# gloo sums the two ranks' gradients (and the loss shares) in another order than one process
# sums the batch, so the float32 results differ in the last bits and drift apart a little
# over 12 epochs x 32 steps; measured at most 1.2e-6 relative on any epoch's loss here (error
# counts equal), and 1.1e-6 on the monitor's norms.
RTOL = 1e-5


def _env():
    # One thread per process: gentle on shared cores, and the same arithmetic in every process.
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(out, *extra):
    return subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
         "--master-port", str(_free_port()), "-m", "resgrad", "train", *ARGS, "--out", str(out), *extra],
        env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _descendants(pid):
    """Every process below ``pid`` (from /proc: torchrun starts each worker in its own session)."""
    children = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _kill_all(proc):
    """kill -9 torchrun and its workers, each in its own session (process group)."""
    for pid in [*_descendants(proc.pid), proc.pid]:
        for kill in (os.killpg, os.kill):  # its session's group when it leads one, and itself
            with contextlib.suppress(ProcessLookupError, PermissionError):
                kill(pid, signal.SIGKILL)


def _stop(proc):
    if proc.poll() is None or _descendants(proc.pid):
        _kill_all(proc)
    proc.communicate(timeout=30)


def _finish(proc, timeout=120):
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    finally:
        _stop(proc)
    return proc.returncode, stdout, stderr


def _metrics(run):
    path = run / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(s) for s in path.read_text().splitlines() if s.endswith("}")]


def _weights(run):
    return torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"]


def _close(a, b):
    assert a["epoch"] == b["epoch"] and a["steps"] == b["steps"]
    for key in ("train_loss", "test_loss"):
        assert a[key] == pytest.approx(b[key], rel=RTOL), key
    for key in ("train_error", "test_error"):  # counts of examples: may differ only at a near-tie
        assert abs(a[key] - b[key]) <= 0.002, key


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """The single-process reference run (same command, no torchrun)."""
    out = tmp_path_factory.mktemp("single") / "run"
    done = CliRunner().invoke(app, ["train", *ARGS, "--out", str(out)])  # in this process: one start fewer
    assert done.exit_code == 0, done.output
    return out


def test_two_processes_train_the_single_process_run_and_only_rank_0_writes(tmp_path, single):
    run = tmp_path / "run"
    code, stdout, stderr = _finish(_torchrun(run))
    assert code == 0, stderr
    assert stdout.count("run folder:") == 1  # rank 0 alone prints the result

    record = json.loads((run / "config.json").read_text())
    assert (record["world_size"], record["backend"]) == (2, "gloo")
    ref = json.loads((single / "config.json").read_text())
    assert (ref["world_size"], ref["backend"]) == (1, None)
    assert record["config"] == ref["config"]  # the same run: world size is not part of its config

    # One writer: every epoch once (two writers would append each epoch twice), and nothing
    # else in the folder (no second lock holder's or killed writer's temp files).
    got, want = _metrics(run), _metrics(single)
    assert [m["epoch"] for m in got] == list(range(1, EPOCHS + 1))
    files = sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file())
    assert files == [".lock", "checkpoints/last.pt", "checkpoints/last.pt.sha256", "config.json", "metrics.jsonl"]

    for a, b in zip(got, want, strict=True):
        _close(a, b)
    w2, w1 = _weights(run), _weights(single)
    assert all(torch.allclose(w2[k], w1[k], rtol=RTOL, atol=1e-6) for k in w1)


@pytest.mark.slow  # ~15 s: two more process starts
def test_active_blocks_under_ddp_train_the_single_process_run(tmp_path):
    # Lesioned branches take no part in a step: DDP runs with find_unused_parameters, and both
    # ranks draw the same k blocks (the seeded pick generator), so the run is the single-process one.
    extra = ["--active-blocks", "2", "--epochs", "3"]
    args = [*ARGS, "--out"]
    one = CliRunner().invoke(app, ["train", *args, str(tmp_path / "one"), *extra])
    assert one.exit_code == 0, one.output
    code, _, stderr = _finish(_torchrun(tmp_path / "two", *extra))
    assert code == 0, stderr
    for a, b in zip(_metrics(tmp_path / "two"), _metrics(tmp_path / "one"), strict=True):
        _close(a, b)


def test_a_killed_two_process_run_resumes_with_every_epoch_once(tmp_path, single):
    run = tmp_path / "run"
    proc = _torchrun(run)
    try:
        deadline = time.monotonic() + 120
        while (not _metrics(run) or not (run / "checkpoints" / "last.pt").exists()) and proc.poll() is None \
                and time.monotonic() < deadline:
            time.sleep(0.005)
        _kill_all(proc)  # kill -9 of torchrun and both ranks, after epoch 1's checkpoint
    finally:
        _stop(proc)
    before = _metrics(run)
    killed_at = [m["epoch"] for m in before]
    assert 1 <= len(killed_at) < EPOCHS, f"the kill should land mid-run, metrics had epochs {killed_at}"
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["epoch"]

    code, _, stderr = _finish(_torchrun(run))
    assert code == 0, stderr
    got = _metrics(run)
    assert [m["epoch"] for m in got] == list(range(1, EPOCHS + 1))
    assert got[:ckpt] == before[:ckpt]  # resumed, not redone: the checkpointed epochs' rows (timings too) kept
    _close(got[-1], _metrics(single)[-1])  # resumed from rank 0's checkpoint: still the same run


def _worker(out, signal_at):
    """``fit`` in a torchrun worker (this file run as a script): rank 1 alone gets SIGTERM after ``signal_at``."""
    from resgrad.train import Preempted

    class SignalRank1(resgrad.Callback):  # a preemption that reaches one rank only, at a known step
        def on_after_backward(self, model, step):
            if step == signal_at and os.environ.get("RANK") == "1":
                os.kill(os.getpid(), signal.SIGTERM)

    torch.manual_seed(0)
    net = resgrad.build("resmlp", depth=3, width=16, in_features=8, num_classes=3)
    data = synthetic((8,), num_classes=3, n_train=256, n_test=64, seed=2)
    config = resgrad.TrainConfig(epochs=4, batch_size=8, lr=0.02, device="cpu")
    # Under DDP the monitor all-reduces activation-gradient sums of squares (probes/gradients.py):
    # every rank should report the global batch's norms, as one process does.
    monitor = GradientMonitor(net, every=9, activations="blocks")
    try:
        resgrad.fit(net, data, config, out_dir=out, callbacks=[SignalRank1(), monitor], progress=False)
        Path(f"{out}.monitor{os.environ.get('RANK', '')}.json").write_text(json.dumps(monitor.records))
    except Preempted as e:
        print(e, file=sys.stderr, flush=True)
        sys.exit(128 + e.signum)
    finally:
        resgrad.distributed.shutdown()


def _run_worker(out, signal_at):
    launch = ["-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
              "--master-port", str(_free_port())]
    return _finish(subprocess.Popen([sys.executable, *launch, __file__, str(out), str(signal_at)], env=_env(),
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True))


def test_a_signal_on_one_rank_stops_both_at_the_same_step_and_resumes_mid_epoch(tmp_path):
    ref, run = tmp_path / "ref", tmp_path / "run"
    _worker(ref, -1)  # the single-process run (here, in this process), never signalled
    code, _, stderr = _run_worker(run, 45)  # 32 steps an epoch: step 45 is the 14th of epoch 2
    assert code != 0 and stderr.count("stopped at epoch 2 step 46 on SIGTERM") == 2, stderr  # both ranks
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert (ckpt["epoch"], ckpt["step"], ckpt["partial"]["pos"]) == (1, 46, 14)
    assert [m["epoch"] for m in _metrics(run)] == [1]

    code, _, stderr = _run_worker(run, -1)
    assert code == 0, stderr
    got, want = _metrics(run), _metrics(ref)
    assert [m["epoch"] for m in got] == [1, 2, 3, 4]
    for a, b in zip(got, want, strict=True):  # epoch 2's losses: 14 steps before the stop, 18 after
        _close(a, b)
    w2, w1 = _weights(run), _weights(ref)
    assert all(torch.allclose(w2[k], w1[k], rtol=RTOL, atol=1e-6) for k in w1)

    # GradientMonitor inside fit: the resumed run measured steps 54, 63, ... on both ranks.
    single = {(r["step"], r["name"], r["kind"]): r["norm"] for r in json.loads(Path(f"{ref}.monitor.json").read_text())}
    rank0, rank1 = (json.loads(Path(f"{run}.monitor{r}.json").read_text()) for r in (0, 1))
    assert rank0 == rank1  # the same global numbers on every rank
    assert {r["kind"] for r in rank0} >= {"param", "activation"} and min(r["step"] for r in rank0) == 54
    for r in rank0:
        assert r["norm"] == pytest.approx(single[r["step"], r["name"], r["kind"]], rel=1e-4), r


def test_a_process_group_of_one_trains_through_ddp_and_records_it(tmp_path, monkeypatch):
    # The DDP path on one device (what benchmarks/gpu.py smoke-tests with nccl): same run, same numbers.
    from torch.nn.parallel import DistributedDataParallel

    wrapped = []

    class Counting(DistributedDataParallel):
        def forward(self, *a, **k):
            wrapped.append(1)
            return super().forward(*a, **k)

    monkeypatch.setattr(torch.nn.parallel, "DistributedDataParallel", Counting)  # fit imports it at call time
    d = synthetic((8,), num_classes=3, n_train=96, n_test=32, seed=4)
    c = resgrad.TrainConfig(epochs=2, batch_size=16, lr=0.05, device="cpu")

    def train(out):
        torch.manual_seed(0)
        net = resgrad.build("resmlp", depth=3, width=16, in_features=8, num_classes=3)
        return resgrad.fit(net, d, c, out_dir=out, progress=False)

    ref = train(tmp_path / "ref")
    assert wrapped == []  # no process group: the single-process loop
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    try:
        got = train(tmp_path / "run")
    finally:
        torch.distributed.destroy_process_group()
    assert len(wrapped) == 2 * 6  # every training step through DDP
    record = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (record["world_size"], record["backend"]) == (1, "gloo")
    for a, b in zip(got.history, ref.history, strict=True):
        _close(a, b)


def test_a_batch_size_that_does_not_split_over_the_ranks_exits_2_in_one_line(tmp_path, monkeypatch):
    # As torchrun starts each worker; the check runs before any process group is joined.
    monkeypatch.setenv("WORLD_SIZE", "2")
    args = [a if a != "32" else "33" for a in ARGS]
    r = CliRunner().invoke(app, ["train", *args, "--out", str(tmp_path / "run")])
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and "batch_size 33 does not split over 2 processes" in lines[0], r.output
    assert "multiple of 2" in lines[0]
    assert not (tmp_path / "run").exists() and not torch.distributed.is_initialized()


def test_a_last_batch_smaller_than_the_world_is_refused(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    data = synthetic((8,), num_classes=2, n_train=66, n_test=8, seed=0)  # 66 = 2 x 32 + 2: two examples for 4
    net = resgrad.build("resmlp", depth=2, width=8, in_features=8, num_classes=2)
    with pytest.raises(ValueError, match="last batch of each epoch holds 2 of 66 .* fewer than the 4 processes"):
        resgrad.fit(net, data, resgrad.TrainConfig(epochs=1, batch_size=32, device="cpu"), progress=False)
    assert not torch.distributed.is_initialized()


SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.py"


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is visible: the script would run in full")
def test_gpu_benchmark_without_cuda_is_a_one_line_usage_error():
    p = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=120, env=_env())
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == ["usage: no CUDA device visible; run on a CUDA machine, or pass --quick"]


@pytest.mark.slow  # ~35 s on 2 shared cores: two ResNet-20s, two modes, both at once, the DDP smoke
def test_gpu_benchmark_quick_runs_on_the_cpu_and_writes_its_figures(tmp_path):
    p = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--device", "cpu"], capture_output=True, text=True,
                       timeout=300, env={**_env(), "OUT": str(tmp_path)})
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    res = json.loads((tmp_path / "gpu.json").read_text())
    assert set(res["nets"]) == {"plain20", "resnet20"} and res["ddp_smoke"]["pass"] and res["failed"] == []
    for modes in res["nets"].values():
        assert all(m["images_per_s"] > 0 and m["eval_images_per_s"] > 0 for m in modes.values())
    assert set(res["projected_hours"]) == {"fp32", "bf16_cl"} and "ALL PASS" in p.stdout
    # Both nets at once in their own processes, timed from a common start, in the fastest mode.
    shared = res["shared"]
    assert shared["processes"] == 2 and set(shared["images_per_s"]) == {"plain20", "resnet20"}
    assert shared["mode"] == min(res["projected_hours"], key=res["projected_hours"].get)
    assert shared["wall_s"] > 0 and shared["projected_hours"] > 0 and shared["finite"]


if __name__ == "__main__":
    _worker(sys.argv[1], int(sys.argv[2]))
