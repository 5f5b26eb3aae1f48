"""The designs' training measures on hand-made histories, the t-interval against scipy, and the
per-step loss and gradient norm of StepLog against the trainer's own numbers."""

import math

import pytest
import scipy.stats
import torch

import resgrad
from resgrad import TrainConfig
from resgrad.experiments.designs_measures import grad_spikes, mean_ci, smoothed, steps_to_target
from resgrad.experiments.designs_train import StepLog, read_steps
from resgrad.rundir import RunDir


def test_spikes_on_a_hand_made_history():
    norms = [1.0] * 20 + [11.0] + [1.0] * 5 + [9.0] + [float("nan")] + [1.0] * 3
    # step 20: 11 > 10 x median 1; step 26: 9 is not; step 27: non-finite is a spike
    assert grad_spikes(norms, k=10, window=50, min_history=10) == [20, 27]
    # before min_history steps nothing is judged, however large
    assert grad_spikes([1.0, 100.0, 1.0], k=10, min_history=2) == []
    # the running median is of the previous `window` steps only: a slow climb is no spike
    climb = [2.0 ** (i / 4) for i in range(60)]
    assert grad_spikes(climb, k=10, window=5, min_history=3) == []
    assert grad_spikes(climb, k=1.1, window=5, min_history=3) == list(range(3, 60))
    with pytest.raises(ValueError):
        grad_spikes(norms, k=0)


def test_steps_to_target_and_smoothing_by_hand():
    losses = [5.0, 4.0, 3.0, 2.0, 1.0, 1.0]
    assert smoothed(losses, 2) == [5.0, 4.5, 3.5, 2.5, 1.5, 1.0]
    assert steps_to_target(losses, 2.5, smooth=2) == 4  # the 4th step's mean of (3, 2)
    assert steps_to_target(losses, 3.0, smooth=1) == 3
    assert steps_to_target(losses, 0.5, smooth=1) is None
    assert steps_to_target(losses, None) is None
    # after a non-finite loss nothing counts as reached
    assert steps_to_target([5.0, float("inf"), 0.1], 1.0, smooth=1) is None


def test_mean_ci_equals_scipy_t_interval():
    xs = [2.1, 2.5, 2.2]
    got = mean_ci(xs, 0.95)
    lo, hi = scipy.stats.t.interval(0.95, len(xs) - 1, loc=sum(xs) / 3, scale=scipy.stats.sem(xs))
    assert got["ci_low"] == pytest.approx(lo, rel=1e-12)
    assert got["ci_high"] == pytest.approx(hi, rel=1e-12)
    assert got["mean"] == pytest.approx(sum(xs) / 3)
    # a diverged seed (None) is left out of the interval but counted
    one = mean_ci([2.0, None], 0.95)
    assert (one["n"], one["n_finite"], one["ci_low"]) == (2, 1, None)


def test_steplog_equals_the_trainers_loss_and_a_hand_gradient_norm(tmp_path):
    data = resgrad.data.text(None, seq_len=8).subset(64, 16)
    torch.manual_seed(0)
    model = resgrad.build_for("preln-1", data.input_shape, data.num_classes, task="lm", vocab=data.num_classes,
                              context=8, d_model=16, n_heads=2)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = TrainConfig(epochs=2, batch_size=16, lr=1e-3, optimizer="adamw", milestones=(), device="cpu")
    log = StepLog(model)
    res = resgrad.fit(model, data, cfg, callbacks=[log], out_dir=tmp_path / "run", progress=False)
    rows = RunDir(tmp_path / "run").read_metrics()
    loss, norm = read_steps(rows)
    assert len(loss) == len(norm) == 8
    # the trainer's epoch train loss is the example-weighted mean of its step losses (equal batches here)
    for e, row in enumerate(res.history):
        assert sum(loss[4 * e: 4 * e + 4]) / 4 == pytest.approx(row["train_loss"], rel=1e-6)
    # the first step's gradient norm, by a hand backward from the same initial weights and batch
    torch.manual_seed(0)
    ref = resgrad.build_for("preln-1", data.input_shape, data.num_classes, task="lm", vocab=data.num_classes,
                            context=8, d_model=16, n_heads=2)
    ref.load_state_dict(init)
    from resgrad.train.rng import ORDER, derived_seed

    order = torch.Generator().manual_seed(derived_seed(cfg.seed, 1, ORDER))
    xb, yb = next(iter(data.batches(16, train=True, generator=order)))
    lossv = torch.nn.functional.cross_entropy(ref(xb), yb)
    lossv.backward()
    want = math.sqrt(sum(float(p.grad.double().square().sum()) for p in ref.parameters() if p.grad is not None))
    assert loss[0] == pytest.approx(float(lossv.detach()), rel=1e-5)
    assert norm[0] == pytest.approx(want, rel=1e-5)


def test_a_diverging_run_is_returned_as_diverged_not_raised(tmp_path):
    from dataclasses import asdict

    from resgrad.experiments.designs_train import train_run

    spec = {"data": "text", "data_kwargs": {"path": None, "seq_len": 8}, "n_train": 64, "n_test": 16}
    cfg = TrainConfig(epochs=2, batch_size=16, lr=1e30, momentum=0.0, weight_decay=0.0, milestones=(), device="cpu")
    data = resgrad.data.text(None, seq_len=8)
    job = {"model": "preln-1", "model_kwargs": {"task": "lm", "vocab": data.num_classes, "context": 8, "d_model": 16,
                                                "n_heads": 2}, "seed": 0, "train": asdict(cfg), "data": spec,
           "progress": False}
    out = train_run(job, str(tmp_path / "run"))
    assert out["diverged"] is True and isinstance(out["diverged_step"], int)
    # the steps up to the divergence are returned, the last ones non-finite (None) or a spike
    assert len(out["loss"]) == len(out["norm"]) >= 1
    assert any(v is None for v in out["loss"] + out["norm"])
