"""Fixup, SkipInit and NF-ResNet: their equations in plain torch, zero branches at init, scaled WS by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import resgrad
from resgrad.nets import blocks
from resgrad.nets.designs.cnn import NF_ALPHA, ws_weight


def _conv(dims):
    return F.conv1d if dims == 1 else F.conv2d


def _x(dims, b=3):
    g = torch.Generator().manual_seed(1)
    return torch.randn(b, 1, 40, generator=g, dtype=torch.float64) if dims == 1 else \
        torch.randn(b, 3, 16, 16, generator=g, dtype=torch.float64)


def _build(name, dims, perturb=True):
    torch.manual_seed(0)
    net = resgrad.build(name, dims=dims, in_channels=1 if dims == 1 else 3).double()
    if perturb:
        with torch.no_grad():
            for p in net.parameters():
                p.add_(0.05 * torch.randn_like(p))
    return net


def _option_a(x, cout, stride, dims):
    x = x[..., ::stride] if dims == 1 else x[..., ::stride, ::stride]
    pad = cout - x.shape[1]
    z = torch.zeros(x.shape[0], pad // 2, *x.shape[2:], dtype=x.dtype)
    z2 = torch.zeros(x.shape[0], pad - pad // 2, *x.shape[2:], dtype=x.dtype)
    return torch.cat([z, x, z2], 1)


def _ws_np(w, gain, eps=1e-4):
    w = w.detach().numpy()
    axes = tuple(range(1, w.ndim))
    fan_in = int(np.prod(w.shape[1:]))
    mu = w.mean(axis=axes, keepdims=True)
    var = ((w - mu) ** 2).mean(axis=axes, keepdims=True)
    return torch.from_numpy((w - mu) / np.sqrt(np.maximum(var * fan_in, eps)) * gain.detach().numpy())


def _reference(net, design, x, dims):
    p = {k: v.detach() for k, v in net.state_dict().items()}
    conv = _conv(dims)
    pad = 1

    def cv(h, key, stride=1, k3=True, bias=False, ws=False):
        w = _ws_np(p[key + ".weight"], p[key + ".gain"]) if ws else p[key + ".weight"]
        return conv(h, w, p[key + ".bias"] if bias else None, stride=stride, padding=pad if k3 else 0)

    gamma = math.sqrt(2 / (1 - 1 / math.pi))
    if design == "fixup":
        h = F.relu(cv(x, "stem.0") + p["stem.1.bias"])
    elif design == "skipinit":
        h = F.relu(cv(x, "stem.0"))
    else:
        h = cv(x, "stem", bias=True, ws=True)
    var = 1.0
    n = len(net.stages[0])
    for s in range(3):
        for j in range(n):
            stride = 2 if s > 0 and j == 0 else 1
            pre = f"stages.{s}.{j}."
            cout = 16 * 2 ** s
            if design == "fixup":
                b = {k: p[pre + f"branch.{k}.bias"] for k in ("bias1a", "bias1b", "bias2a", "bias2b")}
                f = F.relu(cv(h + b["bias1a"], pre + "branch.conv1", stride) + b["bias1b"])
                f = cv(f + b["bias2a"], pre + "branch.conv2") * p[pre + "branch.scale.alpha"] + b["bias2b"]
                sc = h if stride == 1 else _option_a(h + b["bias1a"], cout, stride, dims)
                h = F.relu(sc + f)
            elif design == "skipinit":
                f = cv(F.relu(cv(h, pre + "branch.0", stride)), pre + "branch.2") * p[pre + "branch.3.alpha"]
                sc = h if stride == 1 else _option_a(h, cout, stride, dims)
                h = F.relu(sc + f)
            else:  # h + alpha f(h / beta), beta the expected std (Brock et al. 2021a)
                beta = 1 / math.sqrt(var)
                a = F.relu(h) * gamma * beta
                f = cv(F.relu(cv(a, pre + "branch.2", stride, bias=True, ws=True)) * gamma, pre + "branch.4",
                       bias=True, ws=True)
                sc = h if stride == 1 else cv(a, pre + "shortcut.2", stride, k3=False, bias=True, ws=True)
                h = sc + NF_ALPHA * f
                var = (1.0 if j == 0 else var) + NF_ALPHA ** 2
    if design == "nf":
        h = F.relu(h) * gamma
    h = h.mean(dim=tuple(range(2, h.dim())))
    if design == "fixup":
        h = h + p["head_bias.bias"]
    return h @ p["fc.weight"].T + p["fc.bias"]


@pytest.mark.parametrize("dims", [1, 2])
@pytest.mark.parametrize("design", ["fixup", "skipinit", "nf"])
def test_each_cnn_design_equals_its_equation(design, dims):
    net = _build(f"{design}-resnet20", dims)
    x = _x(dims)
    torch.testing.assert_close(net(x), _reference(net, design, x, dims), rtol=0, atol=1e-6)


@pytest.mark.parametrize("dims", [1, 2])
@pytest.mark.parametrize("design", ["fixup", "skipinit"])
def test_residual_branches_are_zero_at_init(design, dims):
    net = _build(f"{design}-resnet20", dims, perturb=False)
    outs = []
    hooks = [b.branch.register_forward_hook(lambda m, a, o: outs.append(o)) for b in blocks(net)]
    net(_x(dims))
    for h in hooks:
        h.remove()
    assert len(outs) == 9 and all(torch.count_nonzero(o) == 0 for o in outs)
    if design == "fixup":  # the head starts at zero too (Zhang et al. 2019 §3)
        assert torch.count_nonzero(net(_x(dims))) == 0


def test_scaled_weight_standardisation_by_hand():
    torch.manual_seed(0)
    net = resgrad.build("nf-resnet20")
    conv = net.stages[1][0].branch[2]
    with torch.no_grad():
        conv.gain.uniform_(0.5, 2.0)
    w = ws_weight(conv.weight, conv.gain).detach().double()
    torch.testing.assert_close(w, _ws_np(conv.weight.double(), conv.gain.double()), rtol=1e-5, atol=1e-6)
    # Per filter: mean 0 and sum of squares gain^2 (variance 1/fan_in).
    flat = (w / conv.gain.detach().double()).flatten(1)
    torch.testing.assert_close(flat.mean(1), torch.zeros(32, dtype=torch.float64), atol=1e-6, rtol=0)
    torch.testing.assert_close((flat ** 2).sum(1), torch.ones(32, dtype=torch.float64), atol=1e-4, rtol=0)


def test_nf_signal_variance_grows_by_alpha_squared():
    # Brock et al. 2021a §4: Var(h_(i+1)) = Var(h_i) + alpha^2 at init, reset at each transition.
    torch.manual_seed(0)
    net = resgrad.build("nf-resnet56").eval()
    x = torch.randn(64, 3, 32, 32)
    got = []
    hooks = [b.register_forward_hook(lambda m, a, o: got.append(o.var(dim=(0, 2, 3)).mean().item()))
             for b in blocks(net)]
    with torch.no_grad():
        net(x)
    for h in hooks:
        h.remove()
    stage2 = got[9:18]  # 32 filters; its first block resets to 1 + alpha^2
    want = [1 + NF_ALPHA ** 2 * (k + 1) for k in range(9)]
    np.testing.assert_allclose(stage2, want, rtol=0.25)


def test_parameter_counts_against_a_hand_count():
    bn = {1: 0, 2: 0}
    for dims in (1, 2):
        res = resgrad.build("resnet20", dims=dims)
        bn[dims] = sum(m.weight.numel() + m.bias.numel() for m in res.modules()
                       if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)))
        n_res = sum(p.numel() for p in res.parameters())
        count = {k: sum(p.numel() for p in resgrad.build(f"{k}-resnet20", dims=dims).parameters())
                 for k in ("fixup", "skipinit", "nf")}
        assert count["skipinit"] == n_res - bn[dims] + 9  # one scalar per branch
        assert count["fixup"] == n_res - bn[dims] + 9 * 5 + 2  # 4 biases and a scale per branch; stem, head
        k = 3 if dims == 2 else 1
        convs = [(3, 16, k)] + [(c, c, k) for c in (16,) for _ in range(6)] + \
            [(16, 32, k), (32, 32, k)] + [(32, 32, k)] * 4 + [(32, 64, k), (64, 64, k)] + [(64, 64, k)] * 4
        if dims == 1:
            convs[0] = (3, 16, 1)
        # Each WS conv adds a gain and a bias per filter; the two transitions add 1x1 WS convs.
        extra = sum(2 * co for _, co, _ in convs) + (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64) - bn[dims]
        assert count["nf"] == n_res + extra, dims
