"""Vectorised path sampling agrees with the one-path-per-backward loop."""

from __future__ import annotations

import pytest
import torch
from scipy.stats import ks_2samp

from resgrad.nets import build
from resgrad.paths import counts, decompose, sample, sample_loop


def net(seed: int = 0, dtype=torch.float32):
    torch.manual_seed(seed)
    m = build("resmlp", depth=6, width=12, activation="relu", norm="batch", in_features=5).to(dtype)
    with torch.no_grad():  # non-trivial running statistics: eval-mode BN is not the identity
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm1d):
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 2.0)
    return m


def data(n: int = 40, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 5, generator=g), torch.randint(10, (n,), generator=g)


@pytest.mark.parametrize("method,vjp", [("graph", "loop"), ("graph", "batched"), ("gates", "auto")])
def test_vectorised_and_loop_agree_in_distribution(method, vjp):
    m = net()
    x, y = data()
    lengths = [1, 3, 5]
    vec = sample(m, x, targets=y, lengths=lengths, samples=300, batch_size=16, rows=64, seed=0, method=method,
                 vjp=vjp)
    ref = sample_loop(m, x, targets=y, lengths=lengths, samples=300, seed=1)
    assert vec.values.shape == ref.values.shape == (3, 300)
    for j in range(3):
        a, b = vec.values[j], ref.values[j]
        assert ks_2samp(a.numpy(), b.numpy()).pvalue > 0.01, lengths[j]
        # Means within 4 standard errors of their difference (fixed seeds: deterministic).
        se = (a.var() / len(a) + b.var() / len(b)).sqrt()
        assert abs(float(a.mean() - b.mean())) < 4 * float(se), lengths[j]
    # The magnitudes differ by length: a shuffled routing would not keep that order.
    assert vec.mean[0] > vec.mean[2] and ref.mean[0] > ref.mean[2]


@pytest.mark.parametrize("method", ["graph", "gates"])
def test_unique_paths_match_the_loop_exactly(method):
    # k = 0 (all skips) and k = n (all branches) are one path each: with every example the
    # same, every sample must be the same number in both methods.
    m = net(dtype=torch.float64)
    x, y = data(1)
    xs, ys = x.repeat(16, 1), y.repeat(16)
    vec = sample(m, xs, targets=ys, lengths=[0, 6], samples=20, batch_size=16, method=method)
    ref = sample_loop(m, x, targets=y, lengths=[0, 6], samples=2)
    for j in range(2):
        torch.testing.assert_close(vec.values[j], ref.values[j, :1].expand(20), rtol=1e-12, atol=0)


def test_whole_batch_mode_and_exact_bound():
    # Without targets every batch is all the inputs; count_k x mean single-path magnitude
    # bounds the exact per-example gradient of length k (triangle inequality), up to
    # sampling noise, and they coincide for the unique paths k = 0 and k = n.
    m = net(dtype=torch.float64)
    x, y = data(64)
    loss = lambda out: torch.nn.functional.cross_entropy(out, y, reduction="sum")  # noqa: E731
    s = sample(m, x, loss, samples=256, seed=3)
    dec = decompose(m, x, loss, training=False)
    assert s.lengths == list(range(7)) and s.counts == counts(6)
    torch.testing.assert_close(s.total, torch.tensor(counts(6), dtype=torch.float64) * s.mean)
    ex = dec.example_norms
    assert float(ex[0]) == pytest.approx(float(s.mean[0]), rel=0.15)
    assert float(ex[6]) == pytest.approx(float(s.mean[6]), rel=0.15)
    assert all(float(ex[k]) <= 1.15 * float(s.total[k]) for k in range(7))
    eff = s.effective_range(0.9)
    assert eff.held >= 0.9 and "effective" in s.to_dict()


def test_sampling_leaves_the_model_as_it_was_and_says_eval():
    m = net()
    m.train()
    state = {k: v.clone() for k, v in m.state_dict().items()}
    x, y = data()
    s = sample(m, x, targets=y, lengths=[2], samples=10)
    assert m.training and all(torch.equal(state[k], v) for k, v in m.state_dict().items())
    d = s.to_dict()
    assert d["batchnorm"] == "eval" and "eval mode" in d["note"] and d["samples"] == 10
    assert not any(mod._forward_pre_hooks for mod in m.modules())


def test_bad_inputs():
    x, y = data()
    with pytest.raises(ValueError, match="one path"):
        sample(build("plainmlp", depth=3, width=4, in_features=5), x, targets=y)
    with pytest.raises(ValueError, match=r"lengths must lie in 0\.\.6"):
        sample(net(), x, targets=y, lengths=[7])
    with pytest.raises(ValueError, match="samples"):
        sample(net(), x, targets=y, samples=0)
    with pytest.raises(ValueError, match="method"):
        sample(net(), x, targets=y, method="magic")
    s = sample(net(), x, targets=y, lengths=[1, 2], samples=3)
    with pytest.raises(ValueError, match="every length"):
        s.effective_range()
