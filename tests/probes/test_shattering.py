"""gradient_correlation: closed form on a linear net, decay with depth (Balduzzi et al. 2017)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import resgrad
from resgrad.probes import gradient_correlation, line_inputs


def test_linear_net_correlation_is_one():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 8), nn.Linear(8, 4))  # linear: the gradient is the same everywhere
    gc = gradient_correlation(net, line_inputs(torch.zeros(3), torch.ones(3), 32), max_lag=5)
    assert gc.neighbor == pytest.approx(1.0, abs=1e-12)
    torch.testing.assert_close(gc.matrix, torch.ones(32, 32, dtype=torch.float64))
    assert gc.autocorrelation.shape == (6,)


def _neighbor(arch: str, depth: int, seeds=(0, 1)) -> float:
    vals = []
    for s in seeds:
        torch.manual_seed(s)
        net = resgrad.build(arch, depth=depth, width=32, in_features=8, num_classes=8)
        a, b = torch.randn(8), torch.randn(8)
        vals.append(gradient_correlation(net, line_inputs(a, b, 64), max_lag=4).neighbor)
    return sum(vals) / len(vals)


def test_plain_relu_correlation_falls_with_depth_residual_keeps_more():
    plain = [_neighbor("plainmlp", d) for d in (2, 12, 48)]
    assert plain[0] > plain[1] > plain[2]
    assert _neighbor("resmlp", 48) > plain[2]


def test_outputs_choices_and_errors():
    net = nn.Sequential(nn.Linear(1, 4), nn.ReLU(), nn.Linear(4, 3))
    x = line_inputs(-2.0, 2.0, 16)
    assert x.shape == (16, 1)
    assert gradient_correlation(net, x, outputs="all").gradients.shape == (16, 3)
    with pytest.raises(ValueError, match="scalars"):
        gradient_correlation(net, x, outputs="sum")
    with pytest.raises(ValueError, match="line_inputs"):
        gradient_correlation(net, torch.zeros(1, 1))
    with pytest.raises(ValueError, match="out of range"):
        gradient_correlation(net, x, outputs=5)
