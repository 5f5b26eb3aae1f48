"""Transformer twins: identical parameters, shapes, LN placement, exact path decomposition."""

import pytest
import torch
import torch.nn.functional as F

import resgrad
from resgrad.nets import Plain, Residual, blocks, gates
from resgrad.nets.transformer import Transformer
from resgrad.paths import decompose


def _twins(**kw):
    torch.manual_seed(0)
    return {k: Transformer(3, kind=k, **kw) for k in ("preln", "postln", "noskip")}


@pytest.mark.parametrize("task", ["classify", "lm"])
def test_twins_have_identical_parameters(task):
    nets = _twins(task=task)
    sd = {k: n.state_dict() for k, n in nets.items()}
    keys = list(sd["preln"])
    for k in ("postln", "noskip"):
        assert list(sd[k]) == keys
        assert [v.shape for v in sd[k].values()] == [v.shape for v in sd["preln"].values()]
    counts = {k: sum(p.numel() for p in n.parameters()) for k, n in nets.items()}
    assert len(set(counts.values())) == 1
    # The post-LN norm is stored once: parameters() and state_dict agree.
    assert counts["postln"] == sum(v.numel() for v in sd["postln"].values())
    # Weights move between twins: postln with preln's weights loads strictly.
    nets["postln"].load_state_dict(sd["preln"], strict=True)


def test_forward_shapes_and_units():
    x = torch.randn(5, 1, 40)
    for k, n in _twins().items():
        assert n(x).shape == (5, 10)
        bl = blocks(n)
        assert len(bl) == 6
        assert all(isinstance(b, Plain if k == "noskip" else Residual) for b in bl)
    tok = torch.randint(0, 64, (3, 16))
    for n in _twins(task="lm").values():
        assert n(tok).shape == (3, 64, 16)  # class-major, as F.cross_entropy takes it


def test_units_compute_the_textbook_formulas():
    torch.manual_seed(1)
    x = torch.randn(2, 10, 32)
    nets = _twins()
    nets["postln"].load_state_dict(nets["preln"].state_dict())
    pre, post = nets["preln"].blocks[0], nets["postln"].blocks[0]
    norm, attn = pre.branch.norm, pre.branch.op
    torch.testing.assert_close(pre(x), x + attn(norm(x)))
    torch.testing.assert_close(post(x), F.layer_norm(x + attn(x), (32,), norm.weight, norm.bias))
    torch.testing.assert_close(nets["noskip"].blocks[0](x), nets["noskip"].blocks[0].branch(x))


def test_causal_lm_does_not_look_ahead():
    n = _twins(task="lm")["preln"].eval()
    tok = torch.randint(0, 64, (2, 12))
    tok2 = tok.clone()
    tok2[:, 8:] = (tok2[:, 8:] + 1) % 64
    torch.testing.assert_close(n(tok)[..., :8], n(tok2)[..., :8])
    assert not torch.allclose(n(tok)[..., 8:], n(tok2)[..., 8:])


@pytest.mark.parametrize("kind", ["preln", "postln"])
def test_decompose_sums_to_autograd_in_float64(kind):
    torch.manual_seed(2)
    net = Transformer(2, kind=kind, d_model=16, n_heads=2).double()
    x = torch.randn(4, 40, dtype=torch.float64)
    y = torch.randint(0, 10, (4,))
    dec = decompose(net, x, targets=y, input_grads=True)
    assert dec.n == 4
    # Independent reference: plain autograd at the model input.
    xi = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(net(xi), y, reduction="sum"), xi)
    torch.testing.assert_close(dec.input_grads.sum(0), g, rtol=1e-10, atol=1e-12)
    # Length n only: every branch taken, never the skip; brute force by routing all to branches.
    with gates(net, route="branch"):
        xi = x.clone().requires_grad_(True)
        (gb,) = torch.autograd.grad(F.cross_entropy(net(xi), y, reduction="sum"), xi)
    torch.testing.assert_close(dec.input_grads[-1], gb, rtol=1e-10, atol=1e-12)


def test_lesion_and_registry():
    net = resgrad.build("preln-2")
    x = torch.randn(3, 40)
    with gates(net, lesion=range(4)):
        # Every branch removed: the net is embedding + positions -> final LN -> head.
        h = net.norm(net.embed(x.reshape(3, -1, 4)) + net.pos)
        torch.testing.assert_close(net(x), net.head(h.mean(1)))
    assert len(blocks(resgrad.build("postln", depth=5))) == 10
    assert resgrad.nets.family_of("noskip-8") == "noskip"
    with pytest.raises(ValueError, match="kind must be one of"):
        Transformer(2, kind="sandwich")
