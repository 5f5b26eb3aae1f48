"""The Transformer designs of issue 21 against their equations written out in plain torch.

Each reference below reads the model's parameters by name and computes the paper's equation with
its own attention, MLP and norms (no module of resgrad is called), on a small LM in float64; every
parameter is perturbed first, so zero-initialised gates and connections are exercised too.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import resgrad
from resgrad.nets import Residual, blocks, gates
from resgrad.nets.designs import DESIGNS, NEW_KINDS, check_design, design_of, model_name, param_delta
from resgrad.nets.transformer import ALL_KINDS, KINDS, Transformer

D, HEADS, VOCAB, CTX = 16, 2, 11, 8


def _lm(kind: str, layers: int = 2, seed: int = 0, perturb: bool = True) -> Transformer:
    torch.manual_seed(seed)
    net = Transformer(layers, kind=kind, d_model=D, n_heads=HEADS, task="lm", vocab=VOCAB, context=CTX).double()
    if perturb:
        with torch.no_grad():
            for p in net.parameters():
                p.add_(0.3 * torch.randn_like(p))
    return net


# ---- the plain-torch pieces -----------------------------------------------------------

def _ln(x, w, b, eps=1e-5):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * w + b


def _attn(x, p, pre):
    b, t, d = x.shape
    dh = d // HEADS
    qkv = x @ p[pre + "qkv.weight"].T + p[pre + "qkv.bias"]
    q, k, v = (qkv[..., i * d:(i + 1) * d].reshape(b, t, HEADS, dh).transpose(1, 2) for i in range(3))
    s = q @ k.transpose(-1, -2) / math.sqrt(dh)
    s = s.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf"))
    y = (torch.softmax(s, -1) @ v).transpose(1, 2).reshape(b, t, d)
    return y @ p[pre + "out.weight"].T + p[pre + "out.bias"]


def _mlp(x, p, pre):
    h = x @ p[pre + "0.weight"].T + p[pre + "0.bias"]
    h = 0.5 * h * (1 + torch.erf(h / math.sqrt(2)))
    return h @ p[pre + "2.weight"].T + p[pre + "2.bias"]


def _op(x, p, i, sub="op."):
    return (_attn if i % 2 == 0 else _mlp)(x, p, f"blocks.{i}.branch.{sub}")


def _norm(x, p, pre, dyt=False):
    if dyt:
        return torch.tanh(p[pre + "alpha"] * x) * p[pre + "weight"] + p[pre + "bias"]
    return _ln(x, p[pre + "weight"], p[pre + "bias"])


def _sinkhorn_np(z, iters=20):
    m = np.exp(z - z.max(axis=(-2, -1), keepdims=True))
    for _ in range(iters):
        m = m / m.sum(-1, keepdims=True)
        m = m / m.sum(-2, keepdims=True)
    return m


def _reference(net: Transformer, kind: str, tok: torch.Tensor) -> torch.Tensor:
    p = {k: v.detach() for k, v in net.state_dict().items()}
    layers = len(net.blocks) // 2
    h = p["embed.weight"][tok] + p["pos"][: tok.shape[1]]
    n = 4
    if kind in ("hc", "hc-dynamic", "mhc"):
        H = h.unsqueeze(1).repeat(1, n, 1, 1)  # (B, n, T, d): the input copied to n streams
    for i in range(2 * layers):
        pre, layer = f"blocks.{i}.branch.", i // 2 + 1
        if kind == "deepnorm":  # LN(alpha x + F(x)), alpha = (2N)^(1/4)
            h = _norm((2 * layers) ** 0.25 * h + _op(h, p, i), p, pre + "norm.")
        elif kind == "periln":
            h = h + _norm(_op(_norm(h, p, pre + "norm."), p, i), p, pre + "out_norm.")
        elif kind == "lns":
            h = h + _op(_norm(h, p, pre + "norm.") / math.sqrt(layer), p, i)
        elif kind == "mixln":
            if layer <= layers // 4:
                h = _norm(h + _op(h, p, i), p, pre + "norm.")
            else:
                h = h + _op(_norm(h, p, pre + "norm."), p, i)
        elif kind == "rezero":
            h = h + p[pre + "gate.alpha"] * _op(h, p, i)
        elif kind == "dyt":
            h = h + _op(_norm(h, p, pre + "norm.", dyt=True), p, i)
        elif kind in ("hc", "hc-dynamic"):  # Zhu et al. 2024 Eq. 3-4 (static), 10-13 (dynamic)
            c = pre + "hc."
            B_, _, T_, _ = H.shape
            h0 = torch.zeros(B_, T_, D, dtype=H.dtype)
            mixed, bw = torch.zeros_like(H), torch.zeros(B_, T_, n, dtype=H.dtype)
            for b in range(B_):
                for t in range(T_):
                    Ht = H[b, :, t]  # (n, d): one token's streams
                    am_t, ar_t, b_t = p[c + "static_m"], p[c + "static_r"], p[c + "static_b"]
                    if kind == "hc-dynamic":
                        Hb, W = _ln(Ht, p[c + "norm.weight"], p[c + "norm.bias"]), p[c + "weight"]
                        am_t = p[c + "scale_a"] * torch.tanh(Hb @ W[:, 0]) + am_t
                        ar_t = p[c + "scale_a"] * torch.tanh(Hb @ W[:, 1:n + 1]) + ar_t
                        b_t = p[c + "scale_b"] * torch.tanh(Hb @ W[:, n + 1]) + b_t
                    h0[b, t] = am_t @ Ht  # the layer input: A_m^T H
                    mixed[b, :, t] = ar_t.T @ Ht  # the width connection: A_r^T H
                    bw[b, t] = b_t
            y = _op(_norm(h0, p, pre + "op.norm."), p, i, "op.op.")
            H = mixed + bw.permute(0, 2, 1)[..., None] * y[:, None]  # + B^T F(h0)
        elif kind == "mhc":  # DeepSeek-AI 2025 Eq. 7-8
            c = pre + "hc."
            B_, _, T_, _ = H.shape
            flat = H.permute(0, 2, 1, 3).reshape(B_, T_, n * D)
            eps = torch.finfo(flat.dtype).eps
            xr = flat / torch.sqrt((flat ** 2).mean(-1, keepdim=True) + eps) * p[c + "norm.weight"]
            z = xr @ p[c + "phi"]
            a = p[c + "alpha"]
            hpre = torch.sigmoid(a[0] * z[..., :n] + p[c + "bias_pre"])
            hpost = 2 * torch.sigmoid(a[1] * z[..., n:2 * n] + p[c + "bias_post"])
            logits = (a[2] * z[..., 2 * n:].reshape(B_, T_, n, n) + p[c + "bias_res"]).numpy()
            hres = torch.from_numpy(_sinkhorn_np(logits))
            h0 = torch.einsum("bti,bitd->btd", hpre, H)
            y = _op(_norm(h0, p, pre + "op.norm."), p, i, "op.op.")
            H = torch.einsum("btij,bjtd->bitd", hres, H) + hpost.permute(0, 2, 1)[..., None] * y[:, None]
        else:
            raise AssertionError(kind)
    if kind in ("hc", "hc-dynamic", "mhc"):
        h = H.sum(1)
    if kind != "rezero":  # ReZero has no final norm
        h = _norm(h, p, "norm.", dyt=kind == "dyt")
    return (h @ p["head.weight"].T + p["head.bias"]).transpose(1, 2)


@pytest.mark.parametrize("kind", NEW_KINDS)
def test_each_design_equals_its_equation_in_plain_torch(kind):
    layers = 4 if kind == "mixln" else 2  # Mix-LN's post-LN quarter needs 4 layers to hold one
    net = _lm(kind, layers)
    tok = torch.randint(0, VOCAB, (3, CTX), generator=torch.Generator().manual_seed(1))
    ref = _reference(net, kind, tok)
    torch.testing.assert_close(net(tok), ref, rtol=0, atol=1e-6)
    if kind == "mixln":  # the first layer's units are post-LN, the rest pre-LN
        assert [b.post.__class__.__name__ for b in net.blocks] == ["_PostNorm"] * 2 + ["Identity"] * 6


def _count(net) -> int:
    return sum(p.numel() for p in net.parameters())


def test_parameter_counts_against_a_hand_count():
    L, d, n, units = 6, 128, 4, 12
    nets = {k: resgrad.build(k, depth=L, task="lm", d_model=d, n_heads=4, vocab=64, context=64) for k in ALL_KINDS}
    pre = _count(nets["preln"])
    # pre-LN by hand: embeddings, positions, per layer qkv + out + MLP (4d) + 2 LNs, final LN, head.
    assert pre == 64 * d + 64 * d + L * ((3 * d * d + 3 * d) + (d * d + d) + (8 * d * d + 5 * d) + 4 * d) + 2 * d + d * 64 + 64
    extra = {
        "postln": 0, "noskip": 0, "deepnorm": 0, "lns": 0, "mixln": 0,
        "periln": units * 2 * d,  # one output LN per sublayer
        "rezero": -(units * 2 * d + 2 * d) + units,  # every LN gone, one gate per sublayer
        "dyt": units + 1,  # a DyT is an LN's 2d plus its alpha
        "hc": units * (n + n * n + n),  # A_m, A_r, B per unit
        "hc-dynamic": units * (n + n * n + n + 2 * d + d * (n + 2) + 2),  # + LN, W_m|W_r|W_b, s_a, s_b
        "mhc": units * (n * d + n * d * (2 * n + n * n) + 3 + 2 * n + n * n),  # RMSNorm, phi, alphas, biases
    }
    for k, e in extra.items():
        assert _count(nets[k]) - pre == e, k
    # Within 1% of pre-LN, except the two with per-token connection weights (stated in the docs table).
    for k in ALL_KINDS:
        delta = param_delta(nets[k], nets["preln"])
        assert abs(delta) < 0.01 or k in ("hc-dynamic", "mhc"), (k, delta)
    assert 0.01 < param_delta(nets["hc-dynamic"], nets["preln"]) < 0.011
    assert 0.12 < param_delta(nets["mhc"], nets["preln"]) < 0.13


def test_rezero_is_the_identity_at_init_and_hc_starts_as_pre_ln_on_copied_streams():
    torch.manual_seed(0)
    net = resgrad.build("rezero-4", task="lm", vocab=VOCAB, context=CTX)
    h = torch.randn(2, CTX, 32)
    assert torch.equal(net.blocks(h), h)
    for b in blocks(net):
        assert b.branch.gate.alpha.item() == 0.0
    # Static HC at init: A_r = I, B = 1, A_m picks stream k mod 4 -- every stream carries pre-LN's x_k.
    torch.manual_seed(3)
    pre = Transformer(2, kind="preln", d_model=D, n_heads=HEADS, task="lm", vocab=VOCAB, context=CTX)
    torch.manual_seed(3)
    hc = Transformer(2, kind="hc", d_model=D, n_heads=HEADS, task="lm", vocab=VOCAB, context=CTX)
    x = torch.randn(2, CTX, D)
    streams = hc.blocks(hc.expand(x))
    # Each unit adds F to all 4 streams: stream j = x + sum of the units' F (same F as pre-LN's).
    for j in range(4):
        torch.testing.assert_close(streams[:, :, j], pre.blocks(x), rtol=1e-5, atol=1e-5)


def test_deepnorm_constants_and_init():
    L = 6
    torch.manual_seed(0)
    net = resgrad.build("deepnorm", depth=L, d_model=64, n_heads=4)
    alpha, beta = (2 * L) ** 0.25, (8 * L) ** -0.25  # Wang et al. 2022 Table 1 (encoder- or decoder-only)
    for b in blocks(net):
        assert float(b.shortcut.alpha) == pytest.approx(alpha)
        assert not b.changes_shape  # a fixed scale: lesions and swaps treat it as any unit
    attn, mlp = net.blocks[0].branch.op, net.blocks[1].branch.op
    d = 64
    q, k, v = attn.qkv.weight.detach().split(d)
    xavier = math.sqrt(2 / (d + d))
    assert q.std().item() == pytest.approx(xavier, rel=0.05)
    assert v.std().item() == pytest.approx(beta * xavier, rel=0.05)
    assert attn.out.weight.std().item() == pytest.approx(beta * xavier, rel=0.05)
    assert mlp[0].weight.std().item() == pytest.approx(beta * math.sqrt(2 / (5 * d)), rel=0.05)


def test_existing_kinds_keep_their_keys_and_kinds_tuple():
    assert KINDS == ("preln", "postln", "noskip")  # the Transformer experiment loops over these three only
    keys = list(Transformer(2, kind="preln").state_dict())
    assert keys[:3] == ["pos", "embed.weight", "embed.bias"]
    unit = ["branch.norm.weight", "branch.norm.bias", "branch.op.qkv.weight", "branch.op.qkv.bias",
            "branch.op.out.weight", "branch.op.out.bias"]
    assert keys[3:9] == [f"blocks.0.{u}" for u in unit]
    assert keys[-4:] == ["norm.weight", "norm.bias", "head.weight", "head.bias"]
    assert not hasattr(Transformer(2, kind="preln"), "expand")
    # Same seed, same op weights for every kind (they are built in the same order).
    for kind in ("lns", "mixln", "periln", "hc"):
        torch.manual_seed(5)
        a = Transformer(2, kind="preln")
        torch.manual_seed(5)
        b = Transformer(2, kind=kind)
        assert torch.equal(a.blocks[2].branch.op.qkv.weight, _ops(b)[2].qkv.weight), kind


def _ops(net):
    out = []
    for b in net.blocks:
        op = b.branch.op
        out.append(op.op if hasattr(op, "op") and not isinstance(op, torch.nn.Sequential) else op)
    return out


@pytest.mark.parametrize("kind", ["hc-dynamic", "mhc", "deepnorm", "periln"])
def test_path_decomposition_of_a_design_sums_to_autograd(kind):
    from resgrad.paths import decompose

    torch.manual_seed(2)
    net = Transformer(2, kind=kind, d_model=8, n_heads=2).double()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(3, 40, dtype=torch.float64)
    y = torch.randint(0, 10, (3,))
    dec = decompose(net, x, targets=y, input_grads=True)
    assert dec.n == 4
    xi = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(torch.nn.functional.cross_entropy(net(xi), y, reduction="sum"), xi)
    torch.testing.assert_close(dec.input_grads.sum(0), g, rtol=1e-9, atol=1e-11)
    # Lesioning every branch leaves the shortcuts: for HC the mixings, applied to the copied streams.
    with gates(net, lesion=range(4)):
        out = net(x)
    assert torch.isfinite(out).all()
    assert all(isinstance(b, Residual) and not b.changes_shape for b in blocks(net))


def test_registry_names_and_bad_names():
    for kind in NEW_KINDS:
        assert f"{kind}-8" in resgrad.list_models(f"{kind}*")
        assert resgrad.nets.family_of(f"{kind}-8") == kind
        assert design_of(f"{kind}-24") == kind
        assert model_name(kind, 24) == f"{kind}-24"
        assert resgrad.build(model_name(kind, 3)).kind == kind
    assert resgrad.list_models("peri*") == ["periln-2", "periln-4", "periln-8"]
    assert design_of("resnet56") == "resnet" and design_of("nf-resnet56") == "nf" and design_of("vgg11") is None
    assert model_name("fixup", 56) == "fixup-resnet56" and model_name("plain", 20) == "plain20"
    with pytest.raises(ValueError, match=r"unknown design .perilm. \(did you mean periln, preln\?\); the designs are preln, "):
        check_design("perilm")
    with pytest.raises(ValueError, match="exists for cnns only"):
        check_design("fixup", "transformer")
    with pytest.raises(ValueError, match=r"^design 'dyt' exists for Transformers only .*dyt-8.*'resnet20'"):
        resgrad.build("dyt-resnet20")
    with pytest.raises(ValueError, match=r"^design 'hc-dynamic' exists for Transformers only"):
        resgrad.build("hc-dynamic-plain20")
    with pytest.raises(ValueError, match="did you mean"):
        resgrad.build("hc-dynamik-8")
    with pytest.raises(ValueError, match="kind must be one of .*mhc"):
        Transformer(2, kind="sandwich")
    assert set(DESIGNS) >= set(ALL_KINDS)
    for d in DESIGNS.values():
        assert d.claim.endswith(".") and d.arxiv.count(".") == 1 and d.paper
