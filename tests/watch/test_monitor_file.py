"""Rows and alarms leave a training run as it trains: GradientAlarms on a real monitor (its
ratio against plain autograd), MonitorFile inside fit (its norms against p.grad, each
measured step once, training numbers unchanged, a crashed run resumed without a step twice)
and ``resgrad train --monitor``."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import resgrad
from resgrad import Callback, GradientMonitor, TrainConfig
from resgrad.cli import app
from resgrad.integrations.loggers import JSONLLogger
from resgrad.integrations.monitor_file import MonitorFile, run_callbacks
from resgrad.nets.blocks import blocks
from resgrad.nets.mlp import MLP
from resgrad.probes import alarms as alarms_mod
from resgrad.probes.alarms import GradientAlarms

SPEC = {"name": "resmlp", "kwargs": {"depth": 3, "width": 16, "in_features": 16, "num_classes": 4}}


def _data():
    return resgrad.load_data("synthetic", shape=(16,), num_classes=4, n_train=96, n_test=32, seed=1)


def _net():
    torch.manual_seed(0)
    return resgrad.build("resmlp", **SPEC["kwargs"])


def _cfg(**kw):
    return TrainConfig(**{"epochs": 3, "batch_size": 16, "lr": 0.05, "device": "cpu", **kw})


def _lines(path):
    return [json.loads(s) for s in path.read_text().splitlines()]


def test_gradient_alarms_on_a_plain_sigmoid_net_word_the_ratio_autograd_gives(one_thread):
    torch.manual_seed(0)
    net = MLP(depth=8, width=32, residual=False, activation="sigmoid", init="xavier", in_features=16, num_classes=4)
    x, y = torch.randn(64, 16), torch.randint(0, 4, (64,))
    # Independent: ∂L/∂x at each block's input by plain autograd on the inputs the blocks receive.
    ins = []
    hooks = [b.register_forward_pre_hook(lambda m, a: ins.append(a[0])) for b in blocks(net)]
    loss = nn.functional.cross_entropy(net(x), y)
    grads = torch.autograd.grad(loss, ins)
    for h in hooks:
        h.remove()
    want = float(grads[0].norm() / grads[-1].norm())
    assert want < 1e-2  # the premise: this net's gradient vanishes by more than 2 decades

    lines, events, seen = [], [], []

    class Rec:
        def log_metrics(self, metrics, step):
            events.append((step, metrics))

    mon = GradientMonitor(net, activations="blocks")
    al = GradientAlarms(mon, window=0, log=lines.append, loggers=[Rec()], sinks=[seen.append])
    with mon:
        for step in range(3):
            net.zero_grad()
            nn.functional.cross_entropy(net(x), y).backward()
            mon.step(step)
            al.check()
    assert [a.kind for a in al.fired] == ["vanishing"]  # once, though all three steps vanish
    a = al.fired[0]
    assert a.step == 0 and a.value == pytest.approx(want, rel=1e-5)
    assert lines == [a.message] and seen == [a]
    assert events == [(0, {"resgrad/alarm/vanishing": pytest.approx(want, rel=1e-5)})]
    assert a.message.startswith("step 0: unit 0 (blocks.0)'s gradient has been at most ")
    assert "of the last unit's, unit 7 (blocks.7), for 0 steps (vanishing: 2 decades below it)" in a.message


def test_an_unused_layer_is_called_dead_after_the_window(one_thread):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.used, self.spare = nn.Linear(4, 2), nn.Linear(4, 2)

        def forward(self, x):
            return self.used(x)

    net = Net()
    mon = GradientMonitor(net, every=5)
    al = GradientAlarms(mon, window=20, log=None)
    with mon:
        for step in range(40):
            net.zero_grad()
            net(torch.randn(8, 4)).sum().backward()
            mon.on_before_optimizer_step(net, None, step)
            al.on_before_optimizer_step(net, None, step)
    assert [(a.kind, a.step, a.since) for a in al.fired] == [("dead", 20, 0)]
    assert al.fired[0].message == "step 20: layer 'spare' has had no gradient at all for 20 steps (dead)"


def test_alarms_read_the_monitor_only_at_its_measured_steps(monkeypatch, one_thread):
    net = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 1))
    calls = []
    real = alarms_mod.new_rows

    def counting(monitor, seen):
        calls.append(monitor._step - 1)  # the step just closed by monitor.step
        return real(monitor, seen)

    monkeypatch.setattr(alarms_mod, "new_rows", counting)
    mon = GradientMonitor(net, every=4)
    al = GradientAlarms(mon, log=None)
    with mon:
        for step in range(10):
            net(torch.randn(3, 4)).sum().backward()
            mon.on_before_optimizer_step(net, None, step)
            al.on_before_optimizer_step(net, None, step)
    assert calls == [0, 4, 8]


class GradNorms(Callback):
    """Plain autograd's per-parameter gradient norms at the steps a schedule picks (independent of the monitor)."""

    def __init__(self, every):
        self.every, self.seen = every, {}

    def on_before_optimizer_step(self, model, optimizer, step):
        if step % self.every == 0:
            self.seen[step] = {n: float(p.grad.norm()) for n, p in model.named_parameters() if p.grad is not None}


def test_monitor_file_inside_fit_holds_each_measured_step_once_with_autograds_norms(tmp_path, one_thread):
    run = tmp_path / "run"
    net = _net()
    mon = GradientMonitor(net, every=4, activations="blocks")
    out = MonitorFile(run / "monitor.jsonl", mon, alarms=GradientAlarms(mon, log=None))
    truth = GradNorms(4)
    res = resgrad.fit(net, _data(), _cfg(), callbacks=[mon, out, truth], out_dir=run, model_spec=SPEC,
                      progress=False)
    rows = _lines(run / "monitor.jsonl")
    params = [r for r in rows if r["kind"] == "param"]
    assert sorted({r["step"] for r in params}) == sorted(truth.seen) == list(range(0, 18, 4))
    for r in params:
        assert r["norm"] == pytest.approx(truth.seen[r["step"]][r["name"]], rel=1e-6)
    assert len(params) == len({(r["step"], r["name"]) for r in params})  # no step twice
    assert {r["kind"] for r in rows} >= {"param", "input"}
    # Hooks change no number of the training itself.
    plain = resgrad.fit(_net(), _data(), _cfg(), progress=False)
    assert [{k: v for k, v in h.items() if k != "seconds"} for h in res.history] == \
           [{k: v for k, v in h.items() if k != "seconds"} for h in plain.history]


class CrashAt(Callback):
    def __init__(self, at):
        self.at = at

    def on_before_optimizer_step(self, model, optimizer, step):
        if step == self.at:
            raise RuntimeError("injected crash")


def _monitored(run, *extra):
    net = _net()
    cbs = run_callbacks(net, run / "monitor.jsonl", 2, log=lambda line: None)
    return net, [*cbs, *extra]


def test_a_crashed_run_resumes_with_each_step_once_and_the_file_of_an_uninterrupted_one(tmp_path, one_thread):
    ref = tmp_path / "ref"
    net, cbs = _monitored(ref)
    resgrad.fit(net, _data(), _cfg(checkpoint_steps=4), callbacks=cbs, out_dir=ref, model_spec=SPEC, progress=False)
    run = tmp_path / "run"
    net, cbs = _monitored(run, CrashAt(10))
    with pytest.raises(RuntimeError, match="injected crash"):
        resgrad.fit(net, _data(), _cfg(checkpoint_steps=4), callbacks=cbs, out_dir=run, model_spec=SPEC,
                    progress=False)
    before = {r["step"] for r in _lines(run / "monitor.jsonl")}
    assert max(before) == 10  # rows past the last checkpoint (step 8) reached the file before the crash
    net, cbs = _monitored(run)
    resgrad.fit(net, _data(), _cfg(checkpoint_steps=4), callbacks=cbs, out_dir=run, model_spec=SPEC, progress=False)
    assert (run / "monitor.jsonl").read_text() == (ref / "monitor.jsonl").read_text()


def test_a_fresh_run_in_a_used_folder_starts_the_file_empty(tmp_path, one_thread):
    run = tmp_path / "run"
    (run).mkdir()
    (run / "monitor.jsonl").write_text('{"step": 99, "kind": "param", "name": "old", "norm": 1.0}\n')
    net, cbs = _monitored(run)
    resgrad.fit(net, _data(), _cfg(epochs=1), callbacks=cbs, out_dir=run, model_spec=SPEC, progress=False,
                resume=False)
    assert 99 not in {r["step"] for r in _lines(run / "monitor.jsonl")}


def test_jsonl_logger_lines_of_the_same_monitor_are_what_watch_reads(tmp_path, one_thread):
    from resgrad.watch.follow import rows_of

    net = _net()
    x, y = torch.randn(16, 16), torch.randint(0, 4, (16,))
    logger = JSONLLogger(tmp_path / "m.jsonl")
    with GradientMonitor(net, activations="blocks") as mon:
        for step in range(3):
            net.zero_grad()
            nn.functional.cross_entropy(net(x), y).backward()
            mon.step(step)
            logger.write(mon)
    logger.close()
    back = [r for line in _lines(tmp_path / "m.jsonl") for r in rows_of(line)]
    want = {(r["step"], r["name"]): r["norm"] for r in mon.records if r["kind"] == "param"}
    got = {(r["step"], r["name"]): r["norm"] for r in back if r["kind"] == "param"}
    assert got == want
    units = [r for r in back if r["kind"] == "input"]
    assert sorted({r["block"] for r in units}) == [0, 1, 2]


runner = CliRunner()


def test_train_monitor_writes_the_run_folders_monitor_file(tmp_path):
    out = tmp_path / "r"
    res = runner.invoke(app, ["train", "resmlp-4x64", "--data", "synthetic", "--epochs", "1", "--batch-size", "64",
                              "--device", "cpu", "--monitor", "3", "--out", str(out)])
    assert res.exit_code == 0, res.output
    rows = _lines(out / "monitor.jsonl")
    steps = sorted({r["step"] for r in rows})
    assert steps and steps == list(range(0, steps[-1] + 1, 3))
    assert all(math.isfinite(r["norm"]) for r in rows if r["kind"] == "param")


@pytest.mark.parametrize("n", ["0", "-2"])
def test_train_monitor_takes_n_at_least_1(tmp_path, n):
    res = runner.invoke(app, ["train", "resmlp-4x64", "--data", "synthetic", "--monitor", n, "--out",
                              str(tmp_path / "r")])
    assert res.exit_code == 2
    assert f"--monitor takes N >= 1 (measure every N steps), received {n}" in res.output
    assert "Traceback" not in res.output and not (tmp_path / "r").exists()


def test_the_file_and_its_alarms_read_nothing_from_the_device_between_log_steps(tmp_path, one_thread):
    # aten._local_scalar_dense is the host read of a tensor's value (.item(), .tolist() of a scalar):
    # counted per step, between the backward and the optimizer step, where the callbacks run.
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten._local_scalar_dense.default:
                Count.n += 1
            return func(*args, **(kwargs or {}))

    per = {}

    class Start(Callback):
        def on_after_backward(self, model, step):
            self.n = Count.n

    class End(Callback):
        def on_before_optimizer_step(self, model, optimizer, step):
            per[step] = Count.n - start.n

    start = Start()
    net = _net()
    cbs = run_callbacks(net, tmp_path / "monitor.jsonl", 4, log=lambda line: None)
    with Count():
        resgrad.fit(net, _data(), _cfg(epochs=2), callbacks=[start, *cbs, End()], progress=False)
    assert sorted(per) == list(range(12))
    assert {s: n for s, n in per.items() if s % 4} == {s: 0 for s in range(12) if s % 4}
    assert all(per[s] > 0 for s in (0, 4, 8))  # the counter sees the log steps' reads
    assert {r["step"] for r in _lines(tmp_path / "monitor.jsonl")} == {0, 4, 8}
