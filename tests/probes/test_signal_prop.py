"""Signal Propagation Plots and token cosine against hand numpy on tiny nets."""

import numpy as np
import pytest
import torch
from torch import nn

from resgrad.nets import Plain, Residual, build_for
from resgrad.probes.signal_prop import channel_stats, pairwise_cosine, signal_propagation, token_cosine


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        Residual(nn.Sequential(nn.Conv1d(3, 3, 3, padding=1), nn.ReLU(), nn.Conv1d(3, 3, 3, padding=1))),
        Plain(nn.Conv1d(3, 3, 3, padding=1)),
        Residual(nn.Conv1d(3, 3, 1)),
    ).double()


def _stats(a: np.ndarray) -> tuple[float, float]:
    # (N, C, L): per channel over N and L
    per = a.transpose(1, 0, 2).reshape(a.shape[1], -1)
    return float(np.mean(per.mean(1) ** 2)), float(np.mean(per.var(1)))


def test_spp_equals_hand_numpy_on_a_tiny_conv_net():
    net = _net()
    x = torch.randn(5, 3, 7, dtype=torch.float64) + 0.3
    got = signal_propagation(net, x, channel_dim=1)
    # Independent: run the blocks by hand, numpy statistics per channel.
    h = x.numpy()
    sq, var, bvar = [], [], []
    with torch.no_grad():
        for blk in net:
            t = torch.from_numpy(h)
            b = blk.branch(t).numpy()
            h = (t.numpy() + b) if isinstance(blk, Residual) else b
            s, v = _stats(h)
            sq.append(s)
            var.append(v)
            bvar.append(_stats(b)[1])
    np.testing.assert_allclose(got["sq_mean"], sq, rtol=1e-12)
    np.testing.assert_allclose(got["variance"], var, rtol=1e-12)
    np.testing.assert_allclose(got["branch_variance"], bvar, rtol=1e-12)
    assert got["variance"][0] != got["branch_variance"][0]  # the stream and the branch are different curves


def test_channel_stats_last_axis_is_the_channel_of_a_token_stream():
    h = torch.tensor([[[1.0, 2.0], [3.0, 6.0]]], dtype=torch.float64)  # (1, T=2, d=2)
    sq, var = channel_stats(h, channel_dim=-1)
    # channel 0: values 1, 3 -> mean 2, var 1; channel 1: 2, 6 -> mean 4, var 4
    assert sq == pytest.approx((4 + 16) / 2)
    assert var == pytest.approx((1 + 4) / 2)


def test_pairwise_cosine_by_hand():
    h = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]], dtype=torch.float64)
    c = 1 / np.sqrt(2)
    # ordered pairs of distinct tokens: (0,1)=0, (0,2)=c, (1,2)=c, each twice
    assert pairwise_cosine(h) == pytest.approx((0 + c + c) * 2 / 6)
    same = torch.ones(2, 4, 3, dtype=torch.float64)
    assert pairwise_cosine(same) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="token cosine needs"):
        pairwise_cosine(torch.ones(2, 3))


def test_token_cosine_follows_the_stream_of_a_transformer():
    torch.manual_seed(0)
    net = build_for("preln-2", (16,), 30, task="lm", vocab=30, context=16, d_model=16, n_heads=2).double()
    x = torch.randint(0, 30, (4, 16))
    got = token_cosine(net, x)
    assert len(got) == 2 * 2 + 1
    # Independent: the stream entering the first unit and after each, by hand.
    with torch.no_grad():
        h = net.embed(x).double() + net.pos[:16]
        want = [pairwise_cosine(h)]
        for u in net.blocks:
            h = u(h)
            want.append(pairwise_cosine(h))
    np.testing.assert_allclose(got, want, rtol=1e-10)


def test_no_blocks_is_one_line():
    with pytest.raises(ValueError, match="no resgrad blocks"):
        signal_propagation(nn.Linear(3, 3), torch.randn(2, 3))
