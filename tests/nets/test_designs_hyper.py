"""Sinkhorn-Knopp and Amax: doubly stochastic output, the identity's gain, a product computed by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import resgrad
from resgrad.nets.designs import amax, amax_profile, mixing_matrices, sinkhorn


@pytest.mark.parametrize("dtype,std,iters", [(torch.float32, 0.5, 20), (torch.float64, 0.5, 20),
                                             (torch.float64, 1.0, 100)])
def test_sinkhorn_is_doubly_stochastic(dtype, std, iters):
    # The paper's 20 rounds converge to 1e-6 for logits of spread 0.5 (mHC's start: near the identity);
    # spread-1 logits need about 100 (20 leave rows off by ~3e-5: the approximation mHC trains with).
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 4, 4, generator=g, dtype=dtype) * std
    m = sinkhorn(logits, iters)
    assert (m > 0).all()
    ones = torch.ones(64, 4, dtype=dtype)
    torch.testing.assert_close(m.sum(-1), ones, rtol=0, atol=1e-6)
    torch.testing.assert_close(m.sum(-2), ones, rtol=0, atol=1e-6)
    # Against a numpy loop of the same iteration (rows, then columns, 20 times).
    a = np.exp(logits.double().numpy())
    for _ in range(iters):
        a = a / a.sum(-1, keepdims=True)
        a = a / a.sum(-2, keepdims=True)
    np.testing.assert_allclose(m.double().numpy(), a, rtol=0, atol=1e-6)
    # A large shift does not overflow (the max is subtracted first).
    assert torch.isfinite(sinkhorn(logits + 1000)).all()


def test_amax_of_the_identity_mixing_is_one():
    assert amax(resgrad.build("preln-4")) == (1.0, 1.0)  # one stream: no mixing at all
    assert mixing_matrices(resgrad.build("preln-4")) == []
    hc = resgrad.build("hc-4")
    mats = mixing_matrices(hc)
    assert len(mats) == 8 and all(torch.equal(m, torch.eye(4)) for m in mats)  # A_r = I at init
    assert amax(hc) == (1.0, 1.0)
    # Dynamic at init: W = 0, so every token's mixing is the static identity.
    hcd = resgrad.build("hc-dynamic-2")
    x = torch.randn(3, 40)
    per_token = mixing_matrices(hcd, x)
    assert per_token[0].shape == (3, 10, 4, 4)
    assert amax(hcd, x) == (1.0, 1.0)


def test_amax_of_a_hand_made_product():
    hc = resgrad.build("hc-1")  # two units
    a1 = torch.eye(4)
    a1[0, 1], a1[0, 2] = 1.0, -3.0  # A_r[0,1] = 1, A_r[0,2] = -3: stream 0 is written to streams 1 and 2
    a2 = 2 * torch.eye(4)
    with torch.no_grad():
        hc.blocks[0].branch.hc.static_r.copy_(a1)
        hc.blocks[1].branch.hc.static_r.copy_(a2)
    # By hand: M = A_r^T, P = M2 M1 = 2 M1 = [[2,0,0,0],[2,2,0,0],[-6,0,2,0],[0,0,0,2]].
    # Row sums of |P|: 2, 4, 8, 2 -> forward 8; column sums: 10, 2, 2, 2 -> backward 10.
    assert amax(hc) == (8.0, 10.0)
    # After the first unit alone, M1: row sums 1, 2, 4, 1 -> 4; column sums 5, 1, 1, 1 -> 5.
    assert amax_profile(hc) == [(4.0, 5.0), (8.0, 10.0)]
    assert amax_profile(resgrad.build("preln-2")) == []
    # The same matrices move the streams: one unit's shortcut applied to streams equals A_r^T H.
    h = torch.randn(2, 5, 4, 32)  # (B, T, n, d)
    torch.testing.assert_close(hc.blocks[0].shortcut(h), torch.einsum("ij,btid->btjd", a1, h))


def test_mhc_keeps_amax_near_one_where_hc_grows():
    torch.manual_seed(0)
    mhc, hc = resgrad.build("mhc-8"), resgrad.build("hc-8")
    with torch.no_grad():
        for net in (mhc, hc):
            for p in net.parameters():
                p.add_(0.5 * torch.randn_like(p))
    x = torch.randn(4, 40)
    fwd, bwd = amax(mhc, x)
    # Products of (20-round, so nearly) doubly stochastic matrices: near 1 (the paper's Fig. 7 max is ~1.6).
    assert 0.99 < fwd < 1.5 and 0.99 < bwd < 1.5
    f_hc, b_hc = amax(hc)
    # The same gains by brute force: the product of the 16 perturbed A_r^T.
    p = torch.eye(4, dtype=torch.float64)
    for b in hc.blocks:
        p = b.branch.hc.static_r.detach().double().t() @ p
    assert f_hc == pytest.approx(p.abs().sum(1).max().item()) and b_hc == pytest.approx(p.abs().sum(0).max().item())
    assert f_hc > 2 * fwd and b_hc > 2 * bwd
    with pytest.raises(ValueError, match="reduce must be"):
        amax(mhc, x, reduce="median")
    mean_f, _ = amax(mhc, x, reduce="mean")
    assert mean_f <= fwd + 1e-12


def test_the_coefficient_cache_never_serves_stale_values():
    import copy
    import pickle

    torch.manual_seed(0)
    net = resgrad.build("hc-dynamic-1").double()
    conn = net.blocks[0].branch.hc
    with torch.no_grad():
        conn.weight.normal_()
    h = torch.randn(2, 5, 4, 32, dtype=torch.float64)
    with torch.no_grad():
        first = net.blocks[0](h)  # computed without a graph
    # Same tensor, grad mode now on: recomputed, so the gradient reaches W.
    out = net.blocks[0](h)
    torch.testing.assert_close(out, first)
    out.sum().backward()
    assert conn.weight.grad is not None and conn.weight.grad.abs().sum() > 0
    # A parameter changed in place (an optimiser step): recomputed.
    conn.matrix(h)  # leaves an entry for h
    with torch.no_grad():
        conn.weight.mul_(-1)
    want = conn.scale_a * torch.tanh(conn.norm(h) @ conn.weight)[..., 1:5] + conn.static_r
    torch.testing.assert_close(conn.matrix(h), want.transpose(-1, -2))
    # Copies and pickles carry no cached tensors.
    conn.matrix(h)
    assert "_cache" not in pickle.loads(pickle.dumps(net)).blocks[0].branch.hc.__dict__
    assert "_cache" not in copy.deepcopy(net).blocks[0].branch.hc.__dict__


def test_sinkhorn_gradient_equals_autograd_through_the_plain_loop():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(5, 3, 4, 4, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, 3, 4, 4, generator=g, dtype=torch.float64)

    def plain(z):  # the iteration written out, differentiated by autograd
        m = torch.exp(z)
        for _ in range(20):
            m = m / m.sum(-1, keepdim=True)
            m = m / m.sum(-2, keepdim=True)
        return m

    (g1,) = torch.autograd.grad((sinkhorn(logits) * w).sum(), logits)
    (g2,) = torch.autograd.grad((plain(logits) * w).sum(), logits)
    torch.testing.assert_close(sinkhorn(logits), plain(logits), rtol=0, atol=1e-12)
    torch.testing.assert_close(g1, g2, rtol=0, atol=1e-12)
    small = (logits[:1, :2].detach().clone().requires_grad_(),)
    assert torch.autograd.gradcheck(lambda z: sinkhorn(z, 3), small)
    assert torch.autograd.gradgradcheck(lambda z: sinkhorn(z, 3), small)  # second order exact too
    with pytest.raises(ValueError, match="square matrices"):
        sinkhorn(torch.zeros(3, 4))


@pytest.mark.parametrize("kind", ["layer", "rms"])
@pytest.mark.parametrize("d", [8, 64])  # the plain ops below 64 wide, the fused Function from 64
def test_norm_linear_equals_the_norm_then_the_matmul(kind, d):
    # The coefficients of dynamic HC (LayerNorm) and mHC (RMSNorm) against torch's own norm
    # modules followed by the matmul, outputs and every gradient, and second order (create_graph).
    from resgrad.nets.designs.hyper import norm_linear

    g = torch.Generator().manual_seed(5)
    k = 3
    norm = (torch.nn.LayerNorm(d) if kind == "layer" else torch.nn.RMSNorm(d, eps=1e-6)).double()
    with torch.no_grad():
        for p in norm.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=torch.float64))
    w = torch.randn(d, k, generator=g, dtype=torch.float64, requires_grad=True)
    # A mean far from zero in some rows: the E[h^2] - mean^2 variance must still be exact in float64.
    h = (torch.randn(2, 5, 4, d, generator=g, dtype=torch.float64) + torch.linspace(-3, 3, 4)[:, None]).requires_grad_()
    gz = torch.randn(2, 5, 4, k, generator=g, dtype=torch.float64)
    params = [h, w, *norm.parameters()]
    got = norm_linear(h, norm, w)
    want = norm(h) @ w
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    for a, b in zip(torch.autograd.grad(got, params, gz), torch.autograd.grad(want, params, gz), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-11)
    small = h[:1, :1].detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda x, v: norm_linear(x, norm, v), (small, w), fast_mode=True)
    assert torch.autograd.gradgradcheck(lambda x, v: norm_linear(x, norm, v), (small, w), fast_mode=True)


def test_token_mix_equals_matmul_on_expanded_operands_to_second_order():
    from resgrad.nets.designs.hyper import _TokenMix

    g = torch.Generator().manual_seed(7)
    m = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64, requires_grad=True)
    x = torch.randn(2, 3, 5, generator=g, dtype=torch.float64, requires_grad=True)
    h = x.unsqueeze(-2).expand(2, 3, 4, 5)  # stride 0 over the streams, as the first unit's input
    gz = torch.randn(2, 3, 1, 5, generator=g, dtype=torch.float64).expand(2, 3, 4, 5)
    got, want = _TokenMix.apply(m, h), torch.matmul(m, h)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    for a, b in zip(torch.autograd.grad(got, (m, x), gz), torch.autograd.grad(want, (m, x), gz), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    assert torch.autograd.gradgradcheck(lambda a, b: _TokenMix.apply(a, b.unsqueeze(-2).expand(2, 3, 4, 5)), (m, x),
                                        fast_mode=True)


@pytest.mark.parametrize("d", [8, 64])  # the broadcast product below 64 wide, the batched matmul from 64
def test_weighted_sum_of_the_streams_equals_the_sum_written_out(d):
    from resgrad.nets.designs.hyper import _weighted_sum

    g = torch.Generator().manual_seed(9)
    a = torch.randn(2, 3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    h = torch.randn(2, 3, 4, d, generator=g, dtype=torch.float64, requires_grad=True)
    gy = torch.randn(2, 3, d, generator=g, dtype=torch.float64)
    got = _weighted_sum(a, h)
    want = sum(a[..., i, None] * h[..., i, :] for i in range(4))  # sum_i a_i H_i, one stream at a time
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    for u, v in zip(torch.autograd.grad(got, (a, h), gy), torch.autograd.grad(want, (a, h), gy), strict=True):
        torch.testing.assert_close(u, v, rtol=0, atol=1e-12)
