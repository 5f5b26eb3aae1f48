"""The ensemble view of a pretrained Transformer: its gradient split by path length over all 2L units.

:func:`resgrad.paths.decompose` walks the units from the output back to the input, one VJP
of each branch per live path length (after ``m`` units only lengths ``<= m`` carry gradient),
through the graph the forward recorded. Its cost in backward passes: unit ``i`` from the top
takes ``i + 1`` branch VJPs, each about ``1/n`` of a full backward (the identity skips are
free), so ``sum_i (i + 1) / n = (n + 1) / 2`` backward passes, plus one for the autograd
reference it checks its sum against: 31.5 for SmolLM2's 60 units (the issue's bound: 0.6 n = 36); :func:`path_view` also times one plain backward of the same loss, so the measured
ratio sits beside that count. Veit et al.'s sampled single-path magnitudes (arXiv
1605.06431, §5; :func:`resgrad.paths.sample`) run beside it on the same batch.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from .. import paths

__all__ = ["path_view", "backward_passes"]


def backward_passes(n: int) -> float:
    """Backward-pass equivalents of the exact decomposition over ``n`` units: ``(n + 1) / 2 + 1``."""
    return sum(i + 1 for i in range(n)) / n + 1 if n else 1.0


def path_view(view: nn.Module, inputs: Tensor, loss: Callable[[Any], Tensor], *,
              forward_kwargs: dict[str, Any] | None = None, samples: int = 50, seed: int = 0,
              mass: float = 0.9) -> dict[str, Any]:
    """Exact decomposition, its effective window, a timed plain backward and the sampled view."""
    was = view.training
    view.eval()
    try:
        t = time.perf_counter()
        with torch.enable_grad():
            value = loss(view(inputs, **(forward_kwargs or {})))
            params = [p for p in view.parameters() if p.requires_grad]
            t_fwd = time.perf_counter() - t
            t = time.perf_counter()
            torch.autograd.grad(value, params, allow_unused=True)
            t_bwd = time.perf_counter() - t
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            dec = paths.decompose(view, inputs, loss, forward_kwargs=forward_kwargs)
        exact = dec.to_dict(mass)
        exact["warnings"] = [str(w.message) for w in caught]
        sampled = None
        if samples > 0:
            s = paths.sample(view, inputs, loss, samples=samples, seed=seed, forward_kwargs=forward_kwargs)
            sampled = s.to_dict(mass)
    finally:
        view.train(was)
    n = dec.n
    return {"exact": exact, "sampled": sampled, "passes": backward_passes(n),
            "forward_seconds": t_fwd, "backward_seconds": t_bwd,
            "measured_passes": (dec.seconds - t_fwd) / t_bwd if t_bwd > 0 else None}
