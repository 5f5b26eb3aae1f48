"""The degradation experiment: twins trained with one recipe, resumable, profiles recorded."""

import json

import pytest

from resgrad.experiments.degradation import DegradationConfig, run_degradation, twin_names
from resgrad.nets import blocks, build_for
from resgrad.results import DegradationResult
from resgrad.train import TrainConfig


def tiny(**kw):
    base = dict(data="synthetic", data_kwargs={"shape": (1, 16), "n_train": 192, "n_test": 64, "seed": 3},
                depths=(8,), train=TrainConfig(epochs=2, batch_size=64, lr=0.05))
    return DegradationConfig(**{**base, **kw})


def test_twin_names():
    assert twin_names(56) == ("plain56", "resnet56")
    assert twin_names(110, "pre") == ("preplain110", "preresnet110")


def test_runs_both_twins_and_records_profiles(tmp_path):
    logs = []
    res = run_degradation(tiny(), tmp_path, log=logs.append, progress=False)
    assert DegradationResult.from_json(json.loads(json.dumps(res.to_json()))) == res  # round-trips through JSON
    assert [(r.model, r.arch) for r in res.runs] == [("plain8", "plain"), ("resnet8", "residual")]
    n_blocks = len(blocks(build_for("resnet8", (1, 16), 10)))
    for r in res.runs:
        assert r.params == res.runs[0].params  # option A: identical parameter counts
        assert [h["epoch"] for h in r.history] == [1, 2]
        assert len(r.grad) == 2
        for g in r.grad:
            assert len(g.block_norms) == n_blocks and all(v > 0 for v in g.block_norms)
            assert g.ratio_first_last == pytest.approx(g.block_norms[0] / g.block_norms[-1])
        assert 0 <= r.final.train_error <= 1
    row = res.table[0]
    assert row.depth == 8
    assert row.plain.train_error == res.runs[0].final.train_error
    assert row.residual.n_seeds == 1
    assert any("resnet8" in line for line in logs)


def test_rerun_reuses_finished_runs(tmp_path):
    first = run_degradation(tiny(), tmp_path, log=lambda _: None, progress=False)
    run = tmp_path / "runs" / "resnet8-s0"
    before = (run / "metrics.jsonl").read_text()
    ckpt_mtime = (run / "checkpoints" / "last.pt").stat().st_mtime_ns
    again = run_degradation(tiny(), tmp_path, log=lambda _: None, progress=False)
    # No training step ran: the checkpoint was not rewritten, each epoch is there once.
    assert (run / "checkpoints" / "last.pt").stat().st_mtime_ns == ckpt_mtime
    assert (run / "metrics.jsonl").read_text() == before
    assert again.table == first.table
    assert again.runs[1].grad == first.runs[1].grad


def test_seeds_average_in_the_table(tmp_path):
    res = run_degradation(tiny(seeds=(0, 1)), tmp_path, log=lambda _: None, progress=False)
    assert len(res.runs) == 4
    plain = [r.final.train_error for r in res.runs if r.arch == "plain"]
    assert res.table[0].plain.train_error == pytest.approx(sum(plain) / 2)
    assert res.table[0].plain.n_seeds == 2


def test_warmup_applies_to_the_named_depth_only(tmp_path):
    cfg = tiny(depths=(8, 14), warmup=((14, 3),), n_train=64, monitor=False, train=TrainConfig(epochs=1, batch_size=64))
    res = run_degradation(cfg, tmp_path, log=lambda _: None, progress=False)
    cfgs = {r.model: json.loads((tmp_path / "runs" / f"{r.model}-s0" / "config.json").read_text())
            for r in res.runs}
    assert cfgs["resnet14"]["config"]["warmup_iters"] == 3
    assert cfgs["resnet8"]["config"]["warmup_iters"] == 0


def test_bad_config_is_a_clear_error():
    with pytest.raises(ValueError, match="depths is empty"):
        DegradationConfig(depths=())
    with pytest.raises(ValueError, match="6n\\+2"):
        run_degradation(tiny(depths=(9,)), "/nonexistent-never-written", log=lambda _: None)


@pytest.fixture
def one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_sigterm_mid_epoch_then_resume_gives_the_same_results_and_profiles(tmp_path, monkeypatch, one_thread):
    """The interrupted epoch's gradient profile (measured on its first step, before the signal)
    travels in the mid-epoch checkpoint, so the resumed run writes the row an uninterrupted one does."""
    import os
    import signal

    from resgrad import Callback
    from resgrad.experiments import degradation
    from resgrad.rundir import RunDir
    from resgrad.train import Preempted

    cfg = tiny(train=TrainConfig(epochs=3, batch_size=32, lr=0.05))  # 6 steps per epoch
    ref = run_degradation(cfg, tmp_path / "ref", log=lambda _: None, progress=False)

    class SignalAt(Callback):  # SIGTERM to this process after step 8's backward: mid-epoch 2
        def on_after_backward(self, model, step):
            if step == 8:
                os.kill(os.getpid(), signal.SIGTERM)

    real_fit = degradation.fit
    monkeypatch.setattr(degradation, "fit", lambda *a, callbacks=(), **kw: real_fit(
        *a, callbacks=[*callbacks, SignalAt()], **kw))
    with pytest.raises(Preempted, match="stopped at epoch 2 step 9"):
        run_degradation(cfg, tmp_path / "cut", log=lambda _: None, progress=False)
    state = RunDir(tmp_path / "cut" / "runs" / "plain8-s0").load_checkpoint()
    assert state["partial"]["pos"] == 3 and state["callbacks"]["_EpochProfile"]["profile"]  # carried
    monkeypatch.setattr(degradation, "fit", real_fit)
    res = run_degradation(cfg, tmp_path / "cut", log=lambda _: None, progress=False)
    for a, b in zip(ref.runs, res.runs, strict=True):
        assert [g.epoch for g in b.grad] == [1, 2, 3]  # the interrupted epoch's profile is not lost
        assert b.grad == a.grad  # and it is the uninterrupted one, exactly
        assert [{k: v for k, v in h.items() if k != "seconds"} for h in b.history] == [
            {k: v for k, v in h.items() if k != "seconds"} for h in a.history]
    assert res.table == ref.table
