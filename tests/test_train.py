"""The training loop: it learns, resumes bitwise, stops on NaN, calls callbacks, trains short paths."""

import json
import math

import pytest
import torch
from torch import nn

import resgrad
from resgrad import Callback, TrainConfig, evaluate, fit, load_run
from resgrad.data import synthetic
from resgrad.train import NonFiniteLoss

SPEC = {"name": "resmlp", "kwargs": {"depth": 4, "width": 16, "in_features": 20, "num_classes": 4}}


def data():
    return synthetic((20,), num_classes=4, n_train=192, n_test=64, seed=1)


def net(seed=0):
    torch.manual_seed(seed)
    return resgrad.build(SPEC["name"], **SPEC["kwargs"])


def cfg(**kw):
    base = dict(epochs=4, batch_size=32, lr=0.05, device="cpu")
    return TrainConfig(**{**base, **kw})


def lines(run):
    return [json.loads(s) for s in (run / "metrics.jsonl").read_text().splitlines()]


class Recorder(Callback):
    """Logs every hook call; its state (a step counter) must survive a resume."""

    def __init__(self, fail_at_step=None):
        self.calls, self.steps, self.fail_at_step = [], 0, fail_at_step

    def on_train_start(self, model):
        self.calls.append(("start",))

    def on_after_backward(self, model, step):
        self.calls.append(("backward", step))
        if step == self.fail_at_step:
            raise KeyboardInterrupt  # a crash in the middle of an epoch

    def on_before_optimizer_step(self, model, optimizer, step):
        self.calls.append(("optimizer", step))
        self.steps += 1

    def on_train_epoch_end(self, model, epoch, metrics):
        self.calls.append(("epoch", epoch))
        metrics["recorder_steps"] = self.steps

    def on_train_end(self, model):
        self.calls.append(("end",))

    def state_dict(self):
        return {"steps": self.steps}

    def load_state_dict(self, state):
        self.steps = state["steps"]


def test_training_lowers_the_loss():
    d, m = data(), net()
    before = evaluate(m, d)
    res = fit(m, d, cfg(), progress=False)
    assert res.final["test_loss"] < 0.5 * before["loss"]
    assert res.history[-1]["train_loss"] < res.history[0]["train_loss"]
    assert [h["epoch"] for h in res.history] == [1, 2, 3, 4]
    assert res.history[-1]["steps"] == 4 * 6 and res.out_dir is None


def test_progress_plain_lines_off_a_terminal_and_a_bar_on_request(capsys):
    fit(net(), data(), cfg(epochs=2), progress=None)  # pytest's stderr is not a TTY
    err = capsys.readouterr().err
    assert "epoch 1/2" in err and "epoch 2/2" in err and len(err.strip().splitlines()) == 2
    fit(net(), data(), cfg(epochs=1), progress=False)
    assert capsys.readouterr().err == ""
    fit(net(), data(), cfg(epochs=1), progress=True)  # rich bar; must not break off a terminal
    assert "epoch 1/1" in capsys.readouterr().err


def test_run_folder_layout_and_weights_only_checkpoint(tmp_path):
    run = tmp_path / "run"
    fit(net(), data(), cfg(epochs=2), out_dir=run, model_spec=SPEC, progress=False)
    rec = json.loads((run / "config.json").read_text())
    assert rec["kind"] == "resgrad.train" and rec["seed"] == 0 and rec["model_spec"]["name"] == "resmlp"
    assert rec["config"]["lr"] == 0.05 and rec["config"]["device"] == "cpu"
    assert rec["data"]["input_shape"] == [20] and rec["parameters"] == sum(p.numel() for p in net().parameters())
    assert {"torch", "resgrad", "hostname", "device"} <= set(rec["environment"])
    rows = lines(run)
    assert [r["epoch"] for r in rows] == [1, 2]
    assert set(rows[0]) >= {"epoch", "train_loss", "train_error", "test_loss", "test_error", "lr", "seconds", "steps"}
    ck = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert {"model", "optimizer", "scheduler", "epoch", "step", "rng", "callbacks"} <= set(ck)
    assert ck["epoch"] == 2 and ck["step"] == 12 and ck["finished"]
    assert not list((run / "checkpoints").glob("*.tmp"))


def dropout_net(seed=0):
    return nn.Sequential(nn.Dropout(0.2), net(seed))  # draws from the global RNG every step


def test_resume_after_a_crash_is_bitwise_identical(tmp_path):
    d = data()
    ref_cb = Recorder()
    ref = fit(dropout_net(), d, cfg(), callbacks=[ref_cb], out_dir=tmp_path / "ref", progress=False)

    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):  # dies in epoch 3, after checkpoint 2
        fit(dropout_net(), d, cfg(), callbacks=[Recorder(fail_at_step=14)], out_dir=run, progress=False)
    assert [r["epoch"] for r in lines(run)] == [1, 2]
    # A kill between the metrics line and the checkpoint leaves a line that must be redone.
    with open(run / "metrics.jsonl", "a") as f:
        f.write(json.dumps({**lines(run)[-1], "epoch": 3}) + "\n" + '{"epoch": 4, "train_l')
    cb = Recorder()
    res = fit(dropout_net(seed=123), d, cfg(), callbacks=[cb], out_dir=run, progress=False)  # init overwritten
    assert res.resumed_from == 2
    assert [r["epoch"] for r in lines(run)] == [1, 2, 3, 4]
    assert cb.steps == ref_cb.steps == 24  # callback state went through the checkpoint
    for a, b in zip(ref.model.state_dict().values(), res.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    for a, b in zip(lines(tmp_path / "ref"), lines(run), strict=True):
        assert {k: v for k, v in a.items() if k != "seconds"} == {k: v for k, v in b.items() if k != "seconds"}


def test_finished_run_is_not_redone(tmp_path):
    run = tmp_path / "run"
    first = fit(net(), data(), cfg(epochs=2), out_dir=run, progress=False)
    stamp = (run / "checkpoints" / "last.pt").stat().st_mtime_ns
    cb = Recorder()
    again = fit(net(seed=5), data(), cfg(epochs=2), callbacks=[cb], out_dir=run, progress=False)
    assert cb.calls == [] and (run / "checkpoints" / "last.pt").stat().st_mtime_ns == stamp
    assert again.history == lines(run) and again.final["epoch"] == 2
    for a, b in zip(first.model.state_dict().values(), again.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_a_different_config_is_refused_by_name(tmp_path):
    run = tmp_path / "run"
    fit(net(), data(), cfg(epochs=1), out_dir=run, progress=False)
    with pytest.raises(ValueError, match=r"config\.epochs: 1 -> 2.*config\.lr.*new --out"):
        fit(net(), data(), cfg(epochs=2, lr=0.01), out_dir=run, progress=False)
    # resume=False starts over instead
    res = fit(net(), data(), cfg(epochs=2, lr=0.01), out_dir=run, resume=False, progress=False)
    assert res.resumed_from == 0 and [r["epoch"] for r in lines(run)] == [1, 2]


class PoisonAt(Callback):
    def __init__(self, step):
        self.step = step

    def on_before_optimizer_step(self, model, optimizer, step):
        if step == self.step:
            with torch.no_grad():
                next(model.parameters()).fill_(math.nan)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(NonFiniteLoss, match=r"epoch 2, step 3 of the epoch \(global step 8\).*keeps the last good"):
        fit(net(), data(), cfg(), callbacks=[PoisonAt(7)], out_dir=run, progress=False)
    assert [r["epoch"] for r in lines(run)] == [1]
    ck = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert ck["epoch"] == 1 and all(torch.isfinite(t).all() for t in ck["model"].values())
    with pytest.raises(NonFiniteLoss) as e:
        fit(net(), data(), cfg(lr=1e6, epochs=2), progress=False)
    assert isinstance(e.value, RuntimeError) and e.value.epoch == 1


def test_callbacks_are_called_in_order():
    cb = Recorder()
    fit(net(), data(), cfg(epochs=2, batch_size=96), callbacks=[cb], progress=False)
    per_step = lambda s: [("backward", s), ("optimizer", s)]  # noqa: E731
    assert cb.calls == [("start",), *per_step(0), *per_step(1), ("epoch", 1),
                        *per_step(2), *per_step(3), ("epoch", 2), ("end",)]


def test_step_wise_schedule_with_warm_up():
    lrs = []

    class Lr(Callback):
        def on_before_optimizer_step(self, model, optimizer, step):
            lrs.append(optimizer.param_groups[0]["lr"])

    fit(net(), data(), cfg(epochs=4, lr=0.1, warmup_iters=3), callbacks=[Lr()], progress=False)
    # 24 steps: warm-up at 0.01 for 3 steps (He et al. §4.2), /10 at steps 12 and 18.
    want = [0.01] * 3 + [0.1] * 9 + [0.01] * 6 + [0.001] * 6
    assert lrs == pytest.approx(want)


def test_max_steps_stops_mid_epoch_and_the_schedule_fits_it(tmp_path):
    res = fit(net(), data(), cfg(epochs=4, max_steps=10), out_dir=tmp_path / "r", progress=False)
    assert [(h["epoch"], h["steps"]) for h in res.history] == [(1, 6), (2, 10)]
    assert res.schedule == {"steps_per_epoch": 6, "total_steps": 10, "milestone_steps": [5, 8]}
    assert torch.load(tmp_path / "r" / "checkpoints" / "last.pt", weights_only=True)["finished"]


class BranchCalls(Callback):
    """Counts branch forwards in train and eval mode through forward hooks."""

    def __init__(self, model):
        self.train, self.eval, self.per_step = 0, 0, []
        self.handles = [b.branch.register_forward_hook(self._hook) for b in resgrad.blocks(model)]

    def _hook(self, module, inp, out):
        if module.training:
            self.train += 1
        else:
            self.eval += 1

    def on_after_backward(self, model, step):
        self.per_step.append(sum(p.grad is not None for b in resgrad.blocks(model) for p in b.branch.parameters()))


def test_active_blocks_train_k_branches_and_evaluate_all():
    m = net()
    spy = BranchCalls(m)
    fit(m, data(), cfg(epochs=2, active_blocks=2), callbacks=[spy], progress=False)
    for h in spy.handles:
        h.remove()
    assert spy.train == 2 * 12  # 12 steps, two branches each (Veit et al. 2016 §5.2)
    assert set(spy.per_step) == {2 * 2}  # weight + bias of the two active Linear layers
    assert spy.eval == 4 * 2  # 2 epochs x 1 test batch x all 4 blocks
    assert not any(b.lesioned for b in resgrad.blocks(m))


def test_active_blocks_need_enough_blocks():
    with pytest.raises(ValueError, match="only 4 blocks"):
        fit(net(), data(), cfg(active_blocks=5), progress=False)
    with pytest.raises(ValueError, match="has none"):
        fit(nn.Sequential(nn.Flatten(), nn.Linear(20, 4)), data(), cfg(active_blocks=1), progress=False)


def test_evaluate_is_no_grad_and_restores_the_mode():
    m = net().train()
    out = evaluate(m, data(), batch_size=10)
    assert m.training and set(out) == {"loss", "error"} and 0 <= out["error"] <= 1
    assert all(p.grad is None for p in m.parameters())


def test_load_run_rebuilds_the_trained_model(tmp_path):
    run = tmp_path / "run"
    res = fit(net(), data(), cfg(epochs=1), out_dir=run, model_spec=SPEC, progress=False)
    rng = torch.get_rng_state()
    model, record = load_run(run)
    assert torch.equal(rng, torch.get_rng_state())  # rebuilding did not move the caller's RNG
    assert record["model_spec"]["name"] == "resmlp" and not model.training
    for a, b in zip(res.model.state_dict().values(), model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(FileNotFoundError, match="not a resgrad run folder"):
        load_run(tmp_path)
    bare = tmp_path / "bare"
    fit(net(), data(), cfg(epochs=1), out_dir=bare, progress=False)
    with pytest.raises(ValueError, match="no model_spec"):
        load_run(bare)


def test_bad_config_and_spec_are_refused():
    for bad in ({"epochs": 0}, {"lr": -1.0}, {"milestones": (0.75, 0.5)}, {"active_blocks": 0}, {"momentum": 1.0}):
        with pytest.raises(ValueError):
            cfg(**bad)
    with pytest.raises(ValueError, match="does not rebuild"):
        fit(net(), data(), cfg(epochs=1), model_spec={"name": "resmlp", "kwargs": {"depth": 3}}, progress=False)
    with pytest.raises(TypeError, match="instantiate it"):
        fit(net(), data(), cfg(epochs=1), callbacks=[Recorder], progress=False)


def test_callback_state_that_cannot_load_is_refused_at_save(tmp_path):
    class Bad(Callback):
        def state_dict(self):
            return {"when": object()}

    with pytest.raises(TypeError, match=r"Bad.state_dict\(\)\['when'\].*weights_only"):
        fit(net(), data(), cfg(epochs=1), callbacks=[Bad()], out_dir=tmp_path / "r", progress=False)


def test_a_failed_fit_leaves_no_monitor_hook_behind():
    """fit raising (here: a non-finite loss) calls on_exception; the monitor detaches."""
    from resgrad import GradientMonitor

    model = resgrad.build("resmlp", depth=2, width=8, in_features=8, num_classes=3)
    mon = GradientMonitor(model, activations=True)
    seen = []

    class Spy(resgrad.Callback):
        def on_exception(self, model, exception):
            seen.append(type(exception).__name__)

    data = synthetic((8,), num_classes=3, n_train=64, n_test=16)
    with pytest.raises(NonFiniteLoss):
        fit(model, data, TrainConfig(epochs=2, lr=1e30, batch_size=16, device="cpu"),
            callbacks=[mon, Spy()], progress=False)
    assert seen == ["NonFiniteLoss"] and not mon.attached
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks


# ---- mixed precision and memory format ----------------------------------------------------


class DtypeProbe(Callback):
    """Records the dtype and memory format a module's forward saw, in training and in evaluation."""

    def __init__(self, module):
        self.seen = []
        module.register_forward_hook(lambda m, args, out: self.seen.append(
            (m.training, out.dtype, args[0].dim() == 4 and args[0].is_contiguous(memory_format=torch.channels_last))))


def image_data():
    return synthetic((3, 8, 8), num_classes=4, n_train=96, n_test=32, seed=3)


def image_net():
    torch.manual_seed(0)
    return resgrad.build_for("resnet20", (3, 8, 8), 4)


def test_bf16_autocast_trains_on_the_cpu_and_is_recorded(tmp_path):
    d, m = data(), net()
    before = evaluate(m, d)  # public evaluate: full precision
    probe = DtypeProbe(m.head[-1])  # the last Linear: bfloat16 out under autocast
    res = fit(m, d, cfg(amp="bf16"), out_dir=tmp_path / "run", model_spec=SPEC, progress=False)
    assert {dt for training, dt, _ in probe.seen} == {torch.bfloat16}  # train and test forwards alike
    assert {training for training, _, _ in probe.seen} == {True, False}
    losses = [h["train_loss"] for h in res.history]
    assert all(math.isfinite(v) for v in losses) and losses[-1] < 0.5 * losses[0]
    assert res.final["test_loss"] < 0.5 * before["loss"]
    assert next(m.parameters()).dtype == torch.float32  # autocast: the weights stay float32
    rec = json.loads((tmp_path / "run" / "config.json").read_text())
    assert rec["config"]["amp"] == "bf16" and rec["config"]["channels_last"] is False
    # bf16 is not the fp32 run: its numbers differ (else autocast did nothing)
    fp32 = fit(net(), d, cfg(), progress=False)
    assert fp32.final["train_loss"] != res.final["train_loss"]


def test_channels_last_gives_the_contiguous_numbers(tmp_path):
    d = image_data()
    # lr 0.01: at 0.05 a few BN steps amplify the rounding differences to ~5e-4 on the test loss.
    c = dict(epochs=2, batch_size=32, lr=0.01, device="cpu")
    ref = fit(image_net(), d, TrainConfig(**c), progress=False)
    m = image_net()
    probe = DtypeProbe(m.stem[0])  # the first convolution
    res = fit(m, d, TrainConfig(**c, channels_last=True), out_dir=tmp_path / "run", progress=False)
    assert probe.seen and all(cl for _, _, cl in probe.seen)  # every batch, train and test, in channels_last
    w = next(p for p in m.parameters() if p.dim() == 4)
    assert w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
    # Other convolution kernels sum in another order: equal up to float32 rounding (measured 2e-7).
    for a, b in zip(res.history, ref.history, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["test_loss"] == pytest.approx(b["test_loss"], rel=1e-5)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["config"]["channels_last"] is True


def test_a_folder_from_before_amp_and_channels_last_still_resumes(tmp_path):
    run = tmp_path / "run"
    fit(net(), data(), cfg(epochs=1), out_dir=run, progress=False)
    rec = json.loads((run / "config.json").read_text())
    for key in ("amp", "channels_last"):  # as written by resgrad before these fields existed
        del rec["config"][key]
    (run / "config.json").write_text(json.dumps(rec))
    again = fit(net(), data(), cfg(epochs=1), out_dir=run, progress=False)
    assert again.resumed_from == 1
    with pytest.raises(ValueError, match="config.amp: None -> 'bf16'"):
        fit(net(), data(), cfg(epochs=1, amp="bf16"), out_dir=run, progress=False)


def test_bad_amp_and_channels_last_are_refused_in_one_line(tmp_path):
    from typer.testing import CliRunner

    from resgrad.cli import app

    with pytest.raises(ValueError, match="amp must be one of None, 'bf16', received 'fp16'"):
        cfg(amp="fp16")
    with pytest.raises(ValueError, match="channels_last must be True or False, received 'yes'"):
        cfg(channels_last="yes")
    with pytest.raises(ValueError, match=r"channels_last applies to images .* shape \(20,\)"):
        fit(net(), data(), cfg(channels_last=True), progress=False)
    base = ["train", "resmlp-4x64", "--data", "synthetic", "--epochs", "1", "--out", str(tmp_path / "r")]
    for extra, says in ((["--amp", "fp8"], "--amp takes bf16 (or none), received 'fp8'"),
                        (["--channels-last"], "channels_last applies to images")):
        r = CliRunner().invoke(app, [*base, *extra])
        assert r.exit_code == 2 and says in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
