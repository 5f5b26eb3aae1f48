"""Executors: a local pool gives the numbers of one process, bitwise; a worker killed with -9
loses no finished epoch and duplicates none; Ray (a real local cluster) and submitit (its
local executor) run the same tasks to the same numbers; bad options are one clear line."""

import json
import multiprocessing
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch

from resgrad.executors import (
    EXECUTORS,
    LocalExecutor,
    Task,
    TaskFailed,
    make_executor,
    portable,
)
from resgrad.experiments.degradation import DegradationConfig, run_degradation
from resgrad.train import NonFiniteLoss, TrainConfig, load_run

PROBE = "resgrad.executors:probe"


def tiny(**kw):
    base = dict(data="synthetic", data_kwargs={"shape": (1, 16), "n_train": 192, "n_test": 64, "seed": 3},
                depths=(8,), train=TrainConfig(epochs=2, batch_size=64, lr=0.05))
    return DegradationConfig(**{**base, **kw})


def numbers(res):
    """Everything a run measured (wall-clock seconds aside), and its final weights."""
    out = []
    for r in res.runs:
        model, _ = load_run(r.run_dir)
        out.append({
            "model": r.model, "seed": r.seed, "params": r.params, "final": r.final, "grad": r.grad,
            "history": [{k: v for k, v in h.items() if k != "seconds"} for h in r.history],
            "weights": {k: v.clone() for k, v in model.state_dict().items()},
        })
    return out


def assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        wx, wy = x.pop("weights"), y.pop("weights")
        assert x == y  # floats compared exactly
        assert wx.keys() == wy.keys() and all(torch.equal(wx[k], wy[k]) for k in wx)


def epochs(run: Path) -> list[int]:
    p = run / "metrics.jsonl"
    if not p.exists():
        return []
    return [json.loads(s)["epoch"] for s in p.read_text().splitlines() if s.endswith("}")]


@pytest.fixture
def no_children_left():
    yield
    deadline = time.time() + 10
    while multiprocessing.active_children() and time.time() < deadline:
        time.sleep(0.1)
    assert multiprocessing.active_children() == [], "a pool left worker processes behind"


# ---- local ------------------------------------------------------------------------------


def test_two_workers_give_the_numbers_of_one_process(tmp_path, no_children_left):
    cfg = tiny(seeds=(0, 1))
    one = run_degradation(cfg, tmp_path / "one", executor=LocalExecutor(1, threads=1), log=lambda _: None,
                          progress=False)
    two = run_degradation(cfg, tmp_path / "two", executor=LocalExecutor(2, threads=1), log=lambda _: None)
    assert [(r.model, r.seed) for r in two.runs] == [("plain8", 0), ("plain8", 1), ("resnet8", 0), ("resnet8", 1)]
    assert two.table == one.table
    assert_same(numbers(one), numbers(two))
    # Each run recorded the threads it trained with: what makes CPU numbers reproducible.
    for r in two.runs:
        env = json.loads((Path(r.run_dir) / "config.json").read_text())["environment"]
        assert env["torch_threads"] == 1


def test_one_worker_runs_in_this_process_with_its_threads(tmp_path):
    before = torch.get_num_threads()
    ex = LocalExecutor(1, threads=1)
    assert ex.in_process
    got = ex.map([Task(PROBE, {"i": i}, str(tmp_path / f"r{i}"), label=f"r{i}") for i in range(3)])
    assert [g["pid"] for g in got] == [os.getpid()] * 3
    assert [g["config"]["i"] for g in got] == [0, 1, 2] and {g["threads"] for g in got} == {1}
    assert torch.get_num_threads() == before  # restored


def test_pool_results_come_back_in_task_order_whatever_finishes_first(tmp_path, no_children_left):
    ex = LocalExecutor(2, threads=1)
    done = []
    # The first task sleeps, so the second finishes first; map still answers in task order.
    tasks = [Task(PROBE, {"i": 0, "sleep": 1.5}, "a", label="a"), Task(PROBE, {"i": 1}, "b", label="b")]
    got = ex.map(tasks, on_done=lambda i, t, r: done.append(i))
    assert [g["config"]["i"] for g in got] == [0, 1]
    assert done == [1, 0]
    assert len({g["pid"] for g in got}) == 2 and all(g["pid"] != os.getpid() for g in got)
    assert {g["threads"] for g in got} == {1}


def test_a_failing_task_raises_its_error_in_the_parent(tmp_path, no_children_left):
    tasks = [Task(PROBE, {"fail": "bad config for r0; fix it"}, "r0", label="r0"), Task(PROBE, {}, "r1", label="r1")]
    with pytest.raises(ValueError, match="bad config for r0; fix it"):
        LocalExecutor(2, threads=1).map(tasks)
    with pytest.raises(ValueError, match="bad config for r0"):
        LocalExecutor(1).map(tasks)


class KeywordOnly(RuntimeError):
    """A third-party style exception: keyword-only fields and no __reduce__, so pickle cannot rebuild it."""

    def __init__(self, message: str, *, epoch: int) -> None:
        super().__init__(message)
        self.epoch = epoch


def test_exceptions_that_cannot_be_pickled_travel_as_their_type_and_message():
    e = portable(KeywordOnly("non-finite loss at epoch 3", epoch=3), "resnet8-s0")
    assert isinstance(e, TaskFailed) and str(e) == "resnet8-s0: KeywordOnly: non-finite loss at epoch 3"
    v = ValueError("plain")
    assert portable(v) is v
    nan = NonFiniteLoss("non-finite loss at epoch 3", epoch=3, step=7)  # resgrad's own travel as themselves
    assert portable(nan) is nan


def test_bad_options_are_one_line_errors(tmp_path):
    with pytest.raises(ValueError, match=r"workers must be an integer >= 1 .* received 0"):
        LocalExecutor(0)
    with pytest.raises(ValueError, match=r"threads must be an integer >= 1"):
        LocalExecutor(2, threads=0)
    with pytest.raises(ValueError, match=r"executor must be one of local, ray, slurm, received 'dask'"):
        make_executor("dask")
    assert EXECUTORS == ("local", "ray", "slurm")
    with pytest.raises(ValueError, match="Task.fn must be 'package.module:function'"):
        Task("resgrad.executors.probe")


def test_a_pool_spreads_its_workers_over_the_gpus_round_robin(monkeypatch):
    # Each worker sees one GPU of the list (CUDA_VISIBLE_DEVICES, as Ray and Slurm set it); the
    # GPU names need not exist: on this CPU machine the variable is only read back.
    ex = LocalExecutor(2, threads=1, gpus=["3", "GPU-5"])
    assert ex.gpus == ("3", "GPU-5") and ex.describe().endswith("over GPUs 3,GPU-5")
    seen = ex.map([Task(PROBE, {"sleep": 1.0}, f"/tmp/t{i}") for i in range(4)])
    by_pid = {r["pid"]: r["cuda_visible_devices"] for r in seen}
    assert set(by_pid.values()) <= {"3", "GPU-5"}
    assert len(set(by_pid.values())) == len(by_pid)  # two workers: two different GPUs
    # The round robin itself, in start order, with no processes:
    from resgrad.executors.local import _pin_gpu

    slot = multiprocessing.get_context("spawn").Value("i", 0)
    got = []
    for _ in range(5):
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
        _pin_gpu(("0", "1", "2"), slot)
        got.append(os.environ["CUDA_VISIBLE_DEVICES"])
    assert got == ["0", "1", "2", "0", "1"]


def test_gpus_default_to_every_visible_gpu_when_there_are_several(monkeypatch):
    from resgrad.executors import local

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert local.visible_gpus() == ["0", "1", "2"]
    assert LocalExecutor(2).gpus == ("0", "1", "2")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6,-1,7")  # CUDA reads up to the first invalid entry
    assert local.visible_gpus() == ["4", "6"]
    assert LocalExecutor(2).gpus == ("4", "6")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2")  # one GPU: every worker shares it, nothing to pin
    assert LocalExecutor(2).gpus == ()
    assert LocalExecutor(2, gpus=[]).gpus == ()  # asked not to pin
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert local.visible_gpus() == [] and LocalExecutor(2).gpus == ()
    with pytest.raises(ValueError, match=r"gpus must be a list of GPU indices or UUIDs such as \[0, 1\], received '0,1'"):
        LocalExecutor(2, gpus="0,1")
    with pytest.raises(ValueError, match=r"gpus must be GPU indices \(0, 1, ...\) or UUIDs \(GPU-..., MIG-...\), received 'x'"):
        LocalExecutor(2, gpus=["0", "x"])
    with pytest.raises(ValueError, match=r"workers=1 runs in this process: give the run its GPU as its device \(cuda:0\)"):
        LocalExecutor(1, gpus=[0])


def _kill_mid_run(cfg, out, ex, find_workers, *, epochs_total):
    """Run the degradation experiment in a thread; SIGKILL its workers once every run has a
    finished epoch; return (result, epochs per run at the kill, workers killed)."""
    box: dict = {}

    def target():
        try:
            box["res"] = run_degradation(cfg, out, executor=ex, log=lambda _: None)
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            box["err"] = e

    th = threading.Thread(target=target)
    th.start()
    runs = [out / "runs" / "plain8-s0", out / "runs" / "resnet8-s0"]
    deadline = time.time() + 120
    while not all(epochs(r) for r in runs):
        assert th.is_alive(), box
        assert time.time() < deadline, "the runs did not start in 120 s"
        time.sleep(0.02)
    pids = find_workers()
    at_kill = [epochs(r) for r in runs]
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    th.join(timeout=300)
    assert not th.is_alive() and "err" not in box, box
    assert all(1 <= len(e) < epochs_total for e in at_kill), at_kill  # the kill landed mid-run
    for r in runs:
        assert epochs(r) == list(range(1, epochs_total + 1))  # every finished epoch kept, none twice
    return box["res"], at_kill, pids


def _long(epochs_total):
    return tiny(train=TrainConfig(epochs=epochs_total, batch_size=64, lr=0.02),
                data_kwargs={"shape": (1, 16), "n_train": 384, "n_test": 64, "seed": 3})


def test_a_killed_worker_loses_no_finished_epoch_and_duplicates_none(tmp_path, no_children_left):
    E = 30  # long enough that both runs are mid-way when the kill lands
    ex = LocalExecutor(2, threads=1)
    _, _, pids = _kill_mid_run(_long(E), tmp_path / "killed", ex,
                               lambda: [p.pid for p in multiprocessing.active_children()], epochs_total=E)
    assert len(pids) == 2 and ex.restarts == 1  # both workers died; one fresh pool finished the runs


@pytest.mark.slow
def test_a_killed_worker_resumes_to_the_uninterrupted_numbers(tmp_path, no_children_left):
    E = 30
    ref = run_degradation(_long(E), tmp_path / "ref", executor=LocalExecutor(1, threads=1), log=lambda _: None,
                          progress=False)
    res, _, _ = _kill_mid_run(_long(E), tmp_path / "killed", LocalExecutor(2, threads=1),
                              lambda: [p.pid for p in multiprocessing.active_children()], epochs_total=E)
    assert_same(numbers(ref), numbers(res))  # resumed runs are bitwise the uninterrupted ones


# ---- ray (a real local cluster) ---------------------------------------------------------


def _proc_pids(marker: str) -> list[int]:
    """Processes whose command line contains ``marker`` (Ray titles a busy worker ray::<task name>)."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if marker in cmd:
                pids.append(int(d.name))
    return pids


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a throwaway local cluster; no token file written
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


def test_ray_tasks_give_the_numbers_of_one_process(tmp_path, ray_cluster):
    from resgrad.executors import RayExecutor

    cfg = tiny()
    one = run_degradation(cfg, tmp_path / "one", executor=LocalExecutor(1, threads=1), log=lambda _: None,
                          progress=False)
    ex = RayExecutor(num_cpus=1)
    two = run_degradation(cfg, tmp_path / "ray", executor=ex, log=lambda _: None)
    assert_same(numbers(one), numbers(two))
    got = ex.map([Task(PROBE, {"i": i}, f"r{i}", label=f"r{i}") for i in range(2)])
    assert [g["config"]["i"] for g in got] == [0, 1] and {g["threads"] for g in got} == {1}
    assert all(g["pid"] != os.getpid() for g in got)
    with pytest.raises(ValueError, match="bad value; fix it"):  # the task's own error, not retried
        ex.map([Task(PROBE, {"fail": "bad value; fix it"}, "f", label="f")])
    ex.close()
    assert ray_cluster.is_initialized()  # it joined the fixture's cluster, so it leaves it running


@pytest.mark.slow
def test_ray_retries_a_killed_worker_and_the_run_resumes(tmp_path, ray_cluster):
    from resgrad.executors import RayExecutor

    E = 30
    ex = RayExecutor(num_cpus=1, max_retries=2)
    _, _, pids = _kill_mid_run(_long(E), tmp_path / "killed", ex, lambda: _proc_pids("ray::resgrad:"),
                               epochs_total=E)
    assert len(pids) == 2


def test_an_unreachable_ray_address_is_one_line_before_any_work():
    pytest.importorskip("ray")
    from resgrad.executors import RayExecutor

    t = time.time()
    with pytest.raises(ValueError, match=r"cannot reach a Ray cluster at '127.0.0.1:9' .*ray start --head"):
        RayExecutor("127.0.0.1:9").start()
    assert time.time() - t < 10
    with pytest.raises(ValueError, match="num_gpus must be a number >= 0"):
        RayExecutor(num_gpus=-1)


# ---- slurm (submitit's local executor) --------------------------------------------------


def test_submitit_local_jobs_give_the_numbers_of_one_process(tmp_path):
    pytest.importorskip("submitit")
    from resgrad.executors import SlurmExecutor

    cfg = tiny()
    one = run_degradation(cfg, tmp_path / "one", executor=LocalExecutor(1, threads=1), log=lambda _: None,
                          progress=False)
    ex = SlurmExecutor(tmp_path / "submitit", cluster="local", time_min=5)
    two = run_degradation(cfg, tmp_path / "slurm", executor=ex, log=lambda _: None)
    assert_same(numbers(one), numbers(two))
    assert any((tmp_path / "submitit").iterdir())  # submitit's logs, beside (not inside) the run folders


def test_submitit_local_job_errors_name_the_task(tmp_path):
    pytest.importorskip("submitit")
    from resgrad.executors import SlurmExecutor

    ex = SlurmExecutor(tmp_path / "submitit", cluster="local", time_min=5)
    with pytest.raises(RuntimeError, match=r"f: job .* failed: ValueError: broken; fix it"):
        ex.map([Task(PROBE, {"fail": "broken; fix it"}, "f", label="f")])


# ---- stop signals (every executor) --------------------------------------------------------


def _stop_mid_run(cfg, out, make, *, epochs_total):
    """SIGTERM this process once every run has a finished epoch, while ``make()``'s executor
    trains ``cfg``: Preempted, each unfinished run at a checkpoint; the rerun completes them."""
    from resgrad.executors import Preempted
    from resgrad.rundir import RunDir

    runs = [out / "runs" / "plain8-s0", out / "runs" / "resnet8-s0"]

    def killer():
        deadline = time.time() + 120
        while not all(epochs(r) for r in runs) and time.time() < deadline:
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGTERM)  # the handler runs in the main thread, inside map

    th = threading.Thread(target=killer, daemon=True)
    th.start()
    with pytest.raises(Preempted, match=r"^stopped on SIGTERM after \d of 2 runs finished .*; rerun the same "
                                        r"command to resume$"):
        run_degradation(cfg, out, executor=make(), log=lambda _: None)
    th.join(5)
    states = [RunDir(r).load_checkpoint() for r in runs]
    assert any(not s["finished"] for s in states)  # it stopped a run in flight
    assert all(epochs(r) == list(range(1, len(epochs(r)) + 1)) for r in runs)
    res = run_degradation(cfg, out, executor=make(), log=lambda _: None)
    for r in runs:
        assert epochs(r) == list(range(1, epochs_total + 1))  # every epoch once
    return res


@pytest.mark.slow  # the default set stops a real `resgrad sweep --workers 2` (tests/faults/test_fanout.py)
def test_a_stop_signal_stops_a_local_pool_at_checkpoints(tmp_path, no_children_left):
    E = 20
    ref = run_degradation(_long(E), tmp_path / "ref", executor=LocalExecutor(1, threads=1), log=lambda _: None,
                          progress=False)
    res = _stop_mid_run(_long(E), tmp_path / "cut", lambda: LocalExecutor(2, threads=1), epochs_total=E)
    assert_same(numbers(ref), numbers(res))


def test_a_stop_signal_cancels_ray_tasks_which_checkpoint(tmp_path, ray_cluster):
    from resgrad.executors import RayExecutor

    E = 20
    ref = run_degradation(_long(E), tmp_path / "ref", executor=LocalExecutor(1, threads=1), log=lambda _: None,
                          progress=False)
    res = _stop_mid_run(_long(E), tmp_path / "cut", lambda: RayExecutor(num_cpus=1), epochs_total=E)
    assert_same(numbers(ref), numbers(res))


@pytest.mark.slow
def test_a_stop_signal_reaches_submitit_local_jobs(tmp_path):
    pytest.importorskip("submitit")
    from resgrad.executors import SlurmExecutor

    E = 20
    ref = run_degradation(_long(E), tmp_path / "ref", executor=LocalExecutor(1, threads=1), log=lambda _: None,
                          progress=False)
    res = _stop_mid_run(_long(E), tmp_path / "cut",
                        lambda: SlurmExecutor(tmp_path / "submitit", cluster="local", time_min=5), epochs_total=E)
    assert_same(numbers(ref), numbers(res))
