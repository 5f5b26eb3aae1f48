"""The block contract and its gates: routing changes backward only; lesions; restore."""

import pytest
import torch
from torch import nn

from resgrad.nets import Plain, Residual, blocks, build, gates, residual_blocks


def small_res(dtype=torch.float64):
    torch.manual_seed(0)
    return build("resmlp", depth=3, width=6, activation="tanh", in_features=5).to(dtype)


def test_residual_and_plain_compute_the_contract():
    br, sc, post = nn.Linear(4, 4), nn.Linear(4, 4), nn.Tanh()
    x = torch.randn(3, 4)
    assert torch.allclose(Residual(br, sc, post)(x), torch.tanh(sc(x) + br(x)))
    assert torch.allclose(Plain(br, sc, post)(x), torch.tanh(br(x)))
    assert torch.allclose(Residual(br)(x), x + br(x))


def test_block_rejects_a_class():
    with pytest.raises(TypeError, match="instantiate it"):
        Residual(nn.Linear)


def input_grad(model, x, **gate_kw):
    x = x.clone().requires_grad_(True)
    with gates(model, **gate_kw):
        out = model(x)
    (g,) = torch.autograd.grad(out.sum(), x)
    return out.detach(), g


def test_routing_keeps_forward_and_changes_backward():
    m = small_res()
    x = torch.randn(4, 5, dtype=torch.float64)
    out, g = input_grad(m, x)
    out_b, g_b = input_grad(m, x, route="branch")
    out_s, g_s = input_grad(m, x, route="skip")
    assert torch.equal(out, out_b) and torch.equal(out, out_s)
    assert not torch.allclose(g, g_b) and not torch.allclose(g, g_s) and not torch.allclose(g_b, g_s)
    # Skip everywhere: identity shortcuts pass dL/d(last block output) unchanged to the
    # first block's input, evaluated at the true (unrouted) forward.
    h = m.stem(x).detach().requires_grad_(True)
    with gates(m, route="skip"):
        (g_h,) = torch.autograd.grad(m.head(m.blocks(h)).sum(), h)
    hn = m.blocks(m.stem(x)).detach().requires_grad_(True)
    (g_last,) = torch.autograd.grad(m.head(hn).sum(), hn)
    assert torch.allclose(g_h, g_last, rtol=1e-12, atol=1e-12)


def test_per_sample_routing_equals_separate_passes():
    m = small_res()
    x = torch.randn(4, 5, dtype=torch.float64)
    mask = torch.tensor([[True, False, True, False], [False, False, True, True], [True, True, False, False]])
    _, g = input_grad(m, x, route=mask)
    for i in range(4):
        route = {j: ("branch" if mask[j, i] else "skip") for j in range(3)}
        _, gi = input_grad(m, x[i : i + 1], route=route)
        assert torch.allclose(g[i], gi[0])


def test_lesion_removes_the_branch_and_plain_lesion_uses_shortcut():
    m = small_res()
    x = torch.randn(2, 5, dtype=torch.float64)
    h = m.stem(x)
    b = blocks(m)[1]
    with gates(m, lesion=[1]):
        assert b.lesioned
        assert torch.equal(b(h), h)
    assert not b.lesioned
    p = Plain(nn.Linear(3, 3), nn.Identity())
    with gates([p], lesion=[0]):
        y = torch.randn(2, 3)
        assert torch.equal(p(y), y)


def test_gates_are_restored_after_an_exception():
    m = small_res()
    with pytest.raises(RuntimeError, match="boom"), gates(m, lesion=[0, 2], route="skip"):
        raise RuntimeError("boom")
    assert all(not b.lesioned and b.route is None for b in blocks(m))


def test_nested_gates_restore_the_outer_state():
    m = small_res()
    with gates(m, lesion=[0]):
        with gates(m, lesion=[1], route="branch"):
            assert [b.lesioned for b in blocks(m)] == [True, True, False]
        assert [b.lesioned for b in blocks(m)] == [True, False, False]
        assert all(b.route is None for b in blocks(m))


def test_empty_gates_reproduce_the_output_exactly():
    m = build("resnet20", dims=1, in_channels=1).eval()
    x = torch.randn(2, 1, 40)
    base = m(x)
    with gates(m, lesion=[]):
        assert torch.equal(m(x), base)


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"lesion": [7]}, "out of range"),
        ({"route": "sideways"}, "'branch', 'skip'"),
        ({"route": torch.ones(3, 2)}, "1-D bool"),
        ({"route": torch.ones(2, 4, dtype=torch.bool)}, "2 rows, the model has 3"),
    ],
)
def test_bad_gates_are_clear_errors(kw, match):
    with pytest.raises(ValueError, match=match), gates(small_res(), **kw):
        pass


def test_routing_a_plain_block_is_an_error():
    p = build("plainmlp", depth=2, width=4)
    with pytest.raises(ValueError, match="one path"), gates(p, route={0: "skip"}):
        pass


def test_gates_on_a_model_without_blocks_says_what_to_do():
    with pytest.raises(ValueError, match="resgrad.adapt"), gates(nn.Linear(2, 2)):
        pass


def test_residual_blocks_lists_only_residual_in_forward_order():
    m = build("resnet20")
    rb = residual_blocks(m)
    assert len(rb) == 9
    assert [b.changes_shape for b in rb] == [False] * 3 + [True] + [False] * 2 + [True] + [False] * 2
    assert residual_blocks(build("plain20")) == []
