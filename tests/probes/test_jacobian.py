"""jacobian_spectrum against the dense Jacobian and torch.linalg.svdvals (an independent computation)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import resgrad
from resgrad.probes import jacobian_spectrum


def _dense_svals(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return torch.stack([
        torch.linalg.svdvals(torch.autograd.functional.jacobian(lambda z: model(z[None])[0].flatten(), xi).reshape(
            -1, xi.numel()))
        for xi in x
    ])


@pytest.mark.parametrize(("d_in", "d_out"), [(12, 10), (5, 20)])
@pytest.mark.parametrize("arch", ["plainmlp", "resmlp"])
def test_dense_and_lanczos_match_svdvals(arch, d_in, d_out):
    torch.manual_seed(0)
    model = resgrad.build(arch, depth=3, width=16, in_features=d_in, num_classes=d_out, activation="tanh").double()
    x = torch.randn(3, d_in, dtype=torch.float64)
    ref = _dense_svals(model, x)
    dense = jacobian_spectrum(model, x)
    assert dense.method == "dense" and dense.exact
    torch.testing.assert_close(dense.singular_values, ref, rtol=1e-10, atol=1e-12)
    n = min(d_in, d_out)
    full = jacobian_spectrum(model, x, k=n, method="lanczos")
    assert full.exact
    torch.testing.assert_close(full.singular_values, ref, rtol=1e-8, atol=1e-10)
    part = jacobian_spectrum(model, x, k=n - 2, method="lanczos")
    assert not part.exact
    # Ritz values lie inside the spectrum, and the extremes converge first
    assert bool((part.sigma_max <= ref[:, 0] + 1e-9).all()) and bool((part.sigma_min >= ref[:, -1] - 1e-9).all())
    assert bool((part.sigma_max >= 0.9 * ref[:, 0]).all())


def test_conv_net_lanczos_matches_dense():
    torch.manual_seed(0)
    model = resgrad.build("resnet", depth=8, dims=1, in_channels=1).double().eval()
    x = torch.randn(2, 1, 8, dtype=torch.float64)
    ref = _dense_svals(model, x)
    got = jacobian_spectrum(model, x, k=8, method="lanczos")
    torch.testing.assert_close(got.singular_values, ref, rtol=1e-7, atol=1e-9)
    counts, edges = got.histogram(bins=8)
    assert counts.sum().item() == pytest.approx(1.0) and len(edges) == 9
    d = got.to_dict()
    assert d["d_in"] == 8 and d["d_out"] == 10 and len(d["sigma_max"]) == 2


def test_batchnorm_train_mode_needs_a_choice_and_buffers_are_restored():
    torch.manual_seed(0)
    model = resgrad.build("resnet", depth=8, dims=1, in_channels=1).double()
    x = torch.randn(3, 1, 8, dtype=torch.float64)
    with pytest.raises(ValueError, match="per_example=False"):
        jacobian_spectrum(model, x)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    whole = jacobian_spectrum(model, x, per_example=False, k=8, method="lanczos")
    assert whole.singular_values.shape == (1, 8) and whole.d_in == 24
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k])


def test_linear_map_exact():
    lin = nn.Linear(6, 4, bias=True).double()
    x = torch.randn(2, 6, dtype=torch.float64)
    ref = torch.linalg.svdvals(lin.weight.detach())
    got = jacobian_spectrum(lin, x)
    torch.testing.assert_close(got.singular_values, ref.expand(2, -1))
    with pytest.raises(ValueError, match="method must be"):
        jacobian_spectrum(lin, x, method="svd")  # type: ignore[arg-type]
