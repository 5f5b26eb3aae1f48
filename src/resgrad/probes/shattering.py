"""Shattered gradients: how correlated are input gradients at nearby inputs?

Balduzzi et al. 2017 (arXiv 1702.08591) show that the correlation between gradients at
nearby inputs decays exponentially with depth in plain nets (about 2^-L for ReLU) and
sublinearly with skip connections: deep plain nets' gradients look like white noise.
Their correlation is an expectation over random weights (Thm. 1); for one network we
estimate it over the entries of the per-example Jacobian, i.e. over output units (whose
last-layer weights are independent draws) and input coordinates: the Pearson
correlation between the flattened gradients at ``x_i`` and ``x_j``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

__all__ = ["GradientCorrelation", "gradient_correlation", "line_inputs"]

Outputs = Literal["all", "sum"] | int | Callable[[Tensor], Tensor]


@dataclass
class GradientCorrelation:
    """Correlation of input gradients along an ordered set of inputs."""

    matrix: Tensor  # (N, N) Pearson correlation between the gradients at inputs i and j
    autocorrelation: Tensor  # (max_lag+1,) mean correlation at lag k: mean_i matrix[i, i+k]
    gradients: Tensor  # (N, D) the flattened gradients, D = outputs x input size

    @property
    def neighbor(self) -> float:
        """Mean correlation between gradients at adjacent inputs (lag 1)."""
        return float(self.autocorrelation[1]) if len(self.autocorrelation) > 1 else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {"neighbor": self.neighbor, "autocorrelation": self.autocorrelation.tolist()}


def line_inputs(start: Tensor | float, end: Tensor | float, n: int = 256) -> Tensor:
    """``n`` evenly spaced inputs from ``start`` to ``end``: (n, *shape) ((n, 1) for floats).

    Balduzzi et al. use scalar inputs on [-2, 2]: ``line_inputs(-2.0, 2.0, 256)``.
    """
    a = torch.as_tensor(start, dtype=torch.get_default_dtype())
    b = torch.as_tensor(end, dtype=torch.get_default_dtype())
    if a.shape != b.shape:
        raise ValueError(f"start and end must have the same shape, received {tuple(a.shape)} and {tuple(b.shape)}")
    if a.dim() == 0:
        a, b = a.reshape(1), b.reshape(1)
    t = torch.linspace(0, 1, n).reshape(n, *([1] * a.dim()))
    return a + t * (b - a)


def gradient_correlation(
    model: nn.Module,
    inputs: Tensor,
    *,
    outputs: Outputs = "all",
    max_lag: int | None = None,
) -> GradientCorrelation:
    """Correlation of ∂f/∂x between the ordered ``inputs`` (N, ...) (Balduzzi et al. 2017).

    ``outputs``: ``"all"`` (every output unit: one backward pass per unit), ``"sum"``,
    an output index, or a callable ``out -> (N,)`` scalar per example. The model runs on
    the whole batch; BatchNorm in training mode couples the examples, so use eval mode
    for per-input gradients.
    """
    if not isinstance(inputs, Tensor) or inputs.dim() < 2 or inputs.shape[0] < 2:
        raise ValueError(
            f"inputs must be a batch (N >= 2, ...) of ordered inputs, received shape {tuple(getattr(inputs, 'shape', ()))}; "
            "build one with line_inputs(start, end, n)"
        )
    x = inputs.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        out = model(x)
    if not isinstance(out, Tensor):
        raise TypeError(f"the model must return one tensor, received {type(out).__name__}")
    n = x.shape[0]
    flat = out.reshape(n, -1)
    if outputs == "all":
        rows = []
        for j in range(flat.shape[1]):
            v = torch.zeros_like(flat)
            v[:, j] = 1
            rows.append(torch.autograd.grad(flat, x, v, retain_graph=True)[0].reshape(n, -1))
        g = torch.stack(rows, 1).reshape(n, -1)  # (N, outputs * input size)
    else:
        if outputs == "sum":
            s = flat.sum(1)
        elif isinstance(outputs, int):
            if not -flat.shape[1] <= outputs < flat.shape[1]:
                raise ValueError(f"outputs index {outputs} out of range for {flat.shape[1]} outputs")
            s = flat[:, outputs]
        elif callable(outputs):
            s = outputs(out)
        else:
            raise ValueError(f"outputs must be 'all', 'sum', an index or a callable, received {outputs!r}")
        g = torch.autograd.grad(s.sum(), x)[0].reshape(n, -1)
    if g.shape[1] < 2:
        raise ValueError(
            "gradients are scalars (one input, one output): a correlation over entries needs more; "
            "use a model with several output units and outputs='all'"
        )
    g = g.detach().double()
    c = g - g.mean(1, keepdim=True)
    c = c / c.norm(dim=1, keepdim=True)
    matrix = c @ c.T  # (N, N)
    lag = n - 1 if max_lag is None else min(int(max_lag), n - 1)
    auto = torch.stack([torch.diagonal(matrix, k).mean() for k in range(lag + 1)])
    return GradientCorrelation(matrix, auto, g)
