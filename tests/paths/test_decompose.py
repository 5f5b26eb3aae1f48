"""The exact decomposition against references that share none of its code.

1. Jacobian matrices: every block's post, shortcut and branch Jacobian at the recorded
   point (torch.autograd.functional.jacobian on tiny widths), multiplied out along all
   2^n paths and summed by length.
2. Gates: one backward per path, each block routed "branch" or "skip" by its gate, the
   gradient at the first block's input summed by length.
Both in float64, to 1e-10 relative; and sum_k g_k equals the autograd gradient.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn
from torch.autograd.functional import jacobian

import resgrad
from resgrad.nets import HeNet, build, residual_blocks
from resgrad.paths import counts, decompose

TOL = 1e-10


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def tiny_he(n: int, unit: str, shortcut: str, seed: int = 0) -> HeNet:
    """3 stages of n blocks, widths 2/3/3 (stage 2 changes shape), random BN statistics."""
    torch.manual_seed(seed)
    m = HeNet(n, dims=1, in_channels=1, num_classes=3, widths=(2, 3, 3), unit=unit, shortcut=shortcut)
    m = m.double()
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm1d):
            # Random affine and running statistics: no block is accidentally linear or zero.
            nn.init.uniform_(mod.weight, 0.5, 1.5)
            nn.init.uniform_(mod.bias, -0.5, 0.5)
            mod.running_mean.uniform_(-0.3, 0.3)
            mod.running_var.uniform_(0.5, 1.5)
    return m


def loss_fn(out: torch.Tensor) -> torch.Tensor:
    w = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
    return (w * out).sum() + 0.3 * (out**2).sum()  # a nonlinear scalar of the logits


def head(m: HeNet, h: torch.Tensor) -> torch.Tensor:
    return m.fc(m.pool(m.final(h)).flatten(1))


def jacobian_reference(m: HeNet, x: torch.Tensor) -> torch.Tensor:
    """sum over all 2^n paths of (dL/dy) P_n X_n ... P_1 X_1, X_i in {S_i, J_i}, by length."""
    bl = residual_blocks(m)
    h = m.stem(x).detach()
    x0_shape = h.shape
    mats = []  # per block: (P, S, J) as matrices (out_numel, in_numel)
    for b in bl:
        s = b.shortcut(h)
        z = s + b.branch(h)

        def flat(fn, at):
            return jacobian(fn, at, vectorize=True).reshape(-1, at.numel())

        mats.append((flat(b.post, z), flat(b.shortcut, h), flat(b.branch, h)))
        h = b.post(z).detach()
    gy = jacobian(lambda t: loss_fn(head(m, t)), h).reshape(1, -1)  # (1, numel of the last output)
    n = len(bl)
    g = torch.zeros(n + 1, h.new_zeros(x0_shape).numel(), dtype=h.dtype)
    for bits in itertools.product((0, 1), repeat=n):
        v = gy
        for i in reversed(range(n)):
            post, sc, br = mats[i]
            v = v @ post @ (br if bits[i] else sc)
        g[sum(bits)] += v[0]
    return g.reshape(n + 1, *x0_shape)


def gates_reference(m: HeNet, x: torch.Tensor) -> torch.Tensor:
    """One backward per path with every block routed through its branch or its skip."""
    n = len(residual_blocks(m))
    h0 = m.stem(x).detach()
    g = torch.zeros(n + 1, *h0.shape, dtype=h0.dtype)
    for bits in itertools.product((0, 1), repeat=n):
        h = h0.clone().requires_grad_(True)
        with resgrad.gates(residual_blocks(m), route={i: "branch" if b else "skip" for i, b in enumerate(bits)}):
            (gi,) = torch.autograd.grad(loss_fn(head(m, m.stages(h))), h)
        g[sum(bits)] += gi
    return g


CASES = [("post", "A"), ("post", "B"), ("pre", "A"), ("pre", "B")]


@pytest.mark.parametrize("unit,shortcut", CASES)
@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("vjp", ["batched", "loop"])
def test_decomposition_equals_all_paths_multiplied_out(unit, shortcut, training, vjp):
    m = tiny_he(3, unit, shortcut)  # 9 blocks, 512 paths
    m.train(training)
    x = torch.randn(3, 1, 4, dtype=torch.float64)
    dec = decompose(m, x, loss_fn, vjp=vjp, chunk=4 if vjp == "batched" else None)
    assert dec.n == 9 and dec.training is training
    ref = jacobian_reference(m, x)
    assert rel(dec.grads, ref) < TOL
    for k in range(dec.n + 1):
        assert rel(dec.grads[k], ref[k]) < 1e-9 or ref[k].norm() < 1e-12
    assert rel(dec.total, dec.reference) < TOL and dec.rel_error < TOL


@pytest.mark.parametrize("unit,shortcut", [("post", "A"), ("pre", "B")])
@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_decomposition_equals_gate_routed_paths(unit, shortcut, training):
    m = tiny_he(2, unit, shortcut, seed=1)  # 6 blocks, 64 backward passes
    m.train(training)
    x = torch.randn(4, 1, 6, dtype=torch.float64)
    dec = decompose(m, x, loss_fn)
    assert rel(dec.grads, gates_reference(m, x)) < TOL


def test_ten_blocks_of_a_residual_mlp_sum_to_autograd():
    torch.manual_seed(0)
    m = build("resmlp", depth=10, width=5, activation="tanh", norm="layer", in_features=4).double()
    x = torch.randn(6, 4, dtype=torch.float64)
    dec = decompose(m, x, loss_fn, input_grads=True)
    assert dec.n == 10 and dec.grads.shape == (11, 6, 5)
    h = m.stem(x).detach().requires_grad_(True)
    (g,) = torch.autograd.grad(loss_fn(m.head(m.blocks(h))), h)
    assert rel(dec.total, g) < TOL
    xi = x.clone().requires_grad_(True)
    (gx,) = torch.autograd.grad(loss_fn(m(xi)), xi)
    assert dec.input_grads.shape == (11, 6, 4) and rel(dec.input_grads.sum(0), gx) < TOL


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_resnet20_sums_to_autograd_and_leaves_the_model_unchanged(training):
    torch.manual_seed(0)
    m = build("resnet20", dims=1, in_channels=1).double()
    m.train(not training)
    state = {k: v.clone() for k, v in m.state_dict().items()}
    x, y = torch.randn(8, 1, 40, dtype=torch.float64), torch.randint(10, (8,))
    dec = decompose(m, x, targets=y, training=training)
    assert dec.n == 9 and dec.rel_error < TOL and dec.training is training
    assert m.training is (not training)  # mode restored
    assert all(torch.equal(state[k], v) for k, v in m.state_dict().items())  # BN buffers restored
    assert not any(mod._forward_hooks or mod._forward_pre_hooks for mod in m.modules())


def test_float32_sums_to_autograd():
    torch.manual_seed(0)
    m = build("preresnet", depth=20, dims=1, in_channels=1)
    x, y = torch.randn(8, 1, 40), torch.randint(10, (8,))
    dec = decompose(m, x, targets=y)
    assert dec.grads.dtype == torch.float32 and dec.rel_error < 1e-4


def test_a_plain_net_has_one_path():
    torch.manual_seed(0)
    m = build("plain20", dims=1, in_channels=1).double()
    x, y = torch.randn(4, 1, 40, dtype=torch.float64), torch.randint(10, (4,))
    dec = decompose(m, x, targets=y)
    assert dec.n == 0 and dec.counts == [1] == counts(0)
    assert torch.equal(dec.grads[0], dec.reference)
    assert dec.effective_range().share_of_paths == 1.0


def test_result_summary_is_json_ready():
    import json

    torch.manual_seed(0)
    m = build("resnet20", dims=1, in_channels=1)
    dec = decompose(m, torch.randn(4, 1, 40), targets=torch.randint(10, (4,)))
    d = json.loads(json.dumps(dec.to_dict()))
    assert d["n"] == 9 and len(d["norms"]) == 10 and d["counts"][4] == 126
    eff = dec.effective_range(0.9)
    assert 0 <= eff.lo <= eff.hi <= 9 and eff.held >= 0.9 and 0 < eff.share_of_paths <= 1


def test_non_residual_model_names_adapt():
    with pytest.raises(ValueError, match=r"resgrad\.adapt"):
        decompose(nn.Sequential(nn.Linear(3, 3)), torch.randn(2, 3), lambda o: o.sum())


def test_bad_vjp_mode():
    with pytest.raises(ValueError, match="vjp must be one of"):
        decompose(build("resmlp", depth=2, width=4, in_features=3), torch.randn(2, 3), lambda o: o.sum(), vjp="x")


def test_bad_loss_says_what_it_received():
    m = build("resmlp", depth=2, width=4, in_features=3)
    with pytest.raises(ValueError, match="scalar"):
        decompose(m, torch.randn(2, 3), lambda o: o)
    with pytest.raises(ValueError, match="loss"):
        decompose(m, torch.randn(2, 3))


def test_gated_model_is_refused():
    m = build("resmlp", depth=2, width=4, in_features=3)
    with resgrad.gates(m, lesion=[0]), pytest.raises(ValueError, match="gates"):
        decompose(m, torch.randn(2, 3), lambda o: o.sum())


def test_frozen_parameters_still_decompose():
    torch.manual_seed(0)
    m = build("resmlp", depth=4, width=6, in_features=3).double().requires_grad_(False)
    dec = decompose(m, torch.randn(5, 3, dtype=torch.float64), loss_fn)
    assert dec.n == 4 and dec.rel_error < TOL


def test_a_shortcut_shared_by_every_block():
    torch.manual_seed(0)
    shared, post = nn.Identity(), nn.Tanh()
    blocks = [resgrad.Residual(nn.Sequential(nn.Linear(4, 4), nn.Tanh()), shortcut=shared, post=post) for _ in range(5)]
    m = nn.Sequential(nn.Linear(3, 4), *blocks, nn.Linear(4, 2)).double()
    x = torch.randn(6, 3, dtype=torch.float64)
    dec = decompose(m, x, loss_fn)
    assert dec.n == 5 and dec.rel_error < TOL
    h0 = m[0](x).detach()
    ref = torch.zeros_like(dec.grads)
    for bits in itertools.product((0, 1), repeat=5):  # one backward per path, routed by gates
        h = h0.clone().requires_grad_(True)
        with resgrad.gates(blocks, route={i: "branch" if b else "skip" for i, b in enumerate(bits)}):
            (gi,) = torch.autograd.grad(loss_fn(m[1:](h)), h)
        ref[sum(bits)] += gi
    assert rel(dec.grads, ref) < TOL
