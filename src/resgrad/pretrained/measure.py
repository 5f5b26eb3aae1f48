"""Gradient flow, the branch Jacobians and the residual stream of a pretrained Transformer, on real text.

Every function takes the *adapted* model (``resgrad.adapt(model)``: two Residual units per
layer, attention then MLP, sharing the original's parameters), the forward's inputs and the
model's own loss, and measures one recorded forward:

- :func:`unit_flow`: per unit, the norm of its weights' gradient (norm layers left out, as
  Xiong et al. 2020, arXiv 2002.04745, Fig. 3 plot the weight matrices), the residual-stream
  gradient at its input (and after the last unit), ``||J_F^T u|| / ||u||`` of its branch over
  random Gaussian probes ``u`` at the real hidden states, the cosine between its input and
  output, and how much of the gradient reaching its input comes through the skip and how
  much through the branch;
- :func:`stream`: the residual stream at every layer's input and after the last layer, its
  mean token norm, Gromov et al.'s angular distance between layer ``l``'s input and ``l+n``'s
  (arXiv 2403.17887, eq. 7) and ShortGPT's Block Influence (Men et al. 2024, arXiv 2403.03853, eq. 1).

Why VJPs for the Jacobian: for a Gaussian probe, ``E ||J v||^2 = E ||J^T u||^2 = ||J||_F^2 / d``
(the branch maps the whole ``(B, S, E)`` stream to itself), so the VJP ratio estimates the same
root-mean-square gain as the JVP ratio, and it is taken on the graph the forward recorded (the
attention's masks and rotary positions included) instead of calling the branch again.
:func:`jvp_ratio` gives the forward-mode number for one unit where a caller wants it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..nets.blocks import Residual, residual_blocks

__all__ = ["UnitFlow", "Stream", "unit_flow", "stream", "angular_distance", "block_influence", "weight_params",
           "jvp_ratio", "token_mask"]

LossFn = Callable[[Any], Tensor]


def weight_params(unit: nn.Module) -> list[nn.Parameter]:
    """A unit's trainable parameters outside its norm layers (LayerNorm, RMSNorm), in module order."""
    out: list[nn.Parameter] = []
    seen: set[int] = set()
    for m in unit.modules():
        if isinstance(m, nn.LayerNorm) or "Norm" in type(m).__name__:
            continue
        for p in m.parameters(recurse=False):
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                out.append(p)
    return out


def token_mask(forward_kwargs: dict[str, Any] | None, shape: tuple[int, ...]) -> Tensor:
    """(B, S) bool: the real tokens (the attention mask where given, else every position)."""
    m = (forward_kwargs or {}).get("attention_mask")
    if m is None:
        return torch.ones(shape[:2], dtype=torch.bool)
    return m.bool().cpu()


@dataclass
class UnitFlow:
    """One recorded forward and backward, per unit ``i`` (layer ``i // 2``; even: attention, odd: MLP)."""

    param_norms: list[float]  # ||dL/dW|| of the unit's weights (norm layers left out)
    stream_norms: list[float]  # ||dL/dh|| at each unit's input, then after the last unit (2L + 1)
    jacobian: list[float]  # mean over probes of ||J_F^T u|| / ||u||, the branch's RMS gain
    jacobian_std: list[float]  # spread of that ratio over the probes
    cosine: list[float]  # mean over tokens of cos(unit input, unit output)
    skip_norms: list[float]  # ||skip part of dL/dx|| at each unit's input
    branch_norms: list[float]  # ||branch part of dL/dx||
    branch_share: list[float]  # branch / (skip + branch): the share of the gradient through the branch
    loss: float
    probes: int
    info: dict[str, Any] = field(default_factory=dict)


class _Tap:
    """Forward hooks on every Residual unit: its input, branch output, pre-``post`` sum and output."""

    def __init__(self, units: list[Residual]) -> None:
        self.units = units
        self.rec: list[dict[str, Tensor]] = [{} for _ in units]
        self.handles: list[Any] = []

    def __enter__(self) -> _Tap:
        for i, u in enumerate(self.units):
            self.handles.append(u.register_forward_pre_hook(lambda m, a, i=i: self._put(i, "x", a[0])))
            self.handles.append(u.register_forward_hook(lambda m, a, o, i=i: self._put(i, "y", o)))
            self.handles.append(u.branch.register_forward_hook(lambda m, a, o, i=i: self._put(i, "f", o)))
            if not isinstance(u.post, nn.Identity):
                self.handles.append(u.post.register_forward_pre_hook(lambda m, a, i=i: self._put(i, "z", a[0])))
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()

    def _put(self, i: int, key: str, t: Tensor) -> None:
        if key in self.rec[i]:
            raise NotImplementedError(f"unit {i} ran twice in one forward; measure a model whose units run once")
        self.rec[i][key] = t


def _units(view: nn.Module) -> list[Residual]:
    units = residual_blocks(view)
    if not units:
        raise ValueError(f"{type(view).__name__} has no Residual units; pass resgrad.adapt(model), not the model")
    return units


def unit_flow(view: nn.Module, inputs: Tensor, loss: LossFn, *, forward_kwargs: dict[str, Any] | None = None,
              probes: int = 4, seed: int = 0) -> UnitFlow:
    """Measure every unit of ``view`` on one forward of ``view(inputs, **forward_kwargs)`` (eval mode)."""
    units = _units(view)
    was = view.training
    view.eval()
    try:
        with torch.enable_grad(), _Tap(units) as tap:
            out = view(inputs, **(forward_kwargs or {}))
            value = loss(out)
        rec = tap.rec
        if any("x" not in r or "f" not in r for r in rec):
            raise ValueError("some residual units did not run in the forward pass")
        xs = [r["x"] for r in rec] + [rec[-1]["y"]]
        sums = [r.get("z", r["y"]) for r in rec]
        params = [weight_params(u) for u in units]
        flat = [p for ps in params for p in ps]
        grads = torch.autograd.grad(value, xs + sums + flat, retain_graph=True, allow_unused=True,
                                    materialize_grads=True)
        n = len(units)
        g_x, g_sum, g_w = grads[: n + 1], grads[n + 1: 2 * n + 1], list(grads[2 * n + 1:])
        stream_norms = [float(g.double().norm()) for g in g_x]
        param_norms = []
        for ps in params:
            gs, g_w = g_w[: len(ps)], g_w[len(ps):]
            param_norms.append(math.sqrt(sum(float(g.double().square().sum()) for g in gs)))
        gen = torch.Generator().manual_seed(seed)
        jac, jac_sd, skip, branch, share, cos = [], [], [], [], [], []
        mask = token_mask(forward_kwargs, tuple(rec[0]["x"].shape))
        for i, r in enumerate(rec):
            x, f = r["x"], r["f"]
            # The skip carries p itself (identity shortcut); the branch carries J_F^T p.
            p = g_sum[i]
            (bp,) = torch.autograd.grad(f, x, p, retain_graph=True, allow_unused=True, materialize_grads=True)
            s_n, b_n = float(p.double().norm()), float(bp.double().norm())
            skip.append(s_n)
            branch.append(b_n)
            share.append(b_n / (s_n + b_n) if s_n + b_n > 0 else float("nan"))
            ratios = []
            for _ in range(probes):
                u = torch.randn(f.shape, generator=gen, dtype=torch.float64).to(f.dtype).to(f.device)
                (ju,) = torch.autograd.grad(f, x, u, retain_graph=True, allow_unused=True, materialize_grads=True)
                ratios.append(float(ju.double().norm() / u.double().norm()))
            t = torch.tensor(ratios, dtype=torch.float64)
            jac.append(float(t.mean()))
            jac_sd.append(float(t.std()) if probes > 1 else 0.0)
            c = F.cosine_similarity(x.detach().double(), r["y"].detach().double(), dim=-1).cpu()
            cos.append(float(c[mask].mean()) if c.dim() == 2 else float(c.mean()))
    finally:
        view.train(was)
    return UnitFlow(param_norms=param_norms, stream_norms=stream_norms, jacobian=jac, jacobian_std=jac_sd,
                    cosine=cos, skip_norms=skip, branch_norms=branch, branch_share=share, loss=float(value.detach()),
                    probes=probes)


def jvp_ratio(branch: Callable[[Tensor], Tensor], x: Tensor, v: Tensor) -> float:
    """``||J_F v|| / ||v||`` by forward mode (``torch.func.jvp``) for a branch that is a function of ``x`` alone."""
    _, jv = torch.func.jvp(branch, (x,), (v,))
    return float(jv.detach().double().norm() / v.double().norm())


@dataclass
class Stream:
    """The residual stream at every layer's input and after the last (L + 1 states)."""

    norms: list[float]  # mean over real tokens of ||h_l||
    rms: list[float]  # root mean square of h_l's entries (Sun et al. 2025, arXiv 2502.05795, Fig. 1: variance)
    angular: list[list[float]]  # (L+1, L+1): angular distance between h_l and h_m, averaged over tokens
    block_influence: list[float]  # per layer: 1 - mean cos(h_l, h_{l+1}) (ShortGPT eq. 1)


def angular_distance(a: Tensor, b: Tensor, mask: Tensor | None = None) -> float:
    """Gromov et al. 2024 eq. (7), ``arccos(cos(a, b)) / pi``, averaged over the (real) tokens."""
    cos = F.cosine_similarity(a.double(), b.double(), dim=-1).clamp(-1, 1).cpu()
    d = torch.arccos(cos) / math.pi
    return float(d[mask].mean()) if mask is not None and d.dim() == mask.dim() else float(d.mean())


def block_influence(a: Tensor, b: Tensor, mask: Tensor | None = None) -> float:
    """Men et al. 2024 eq. (1): ``1 - E_t cos(X_t, Y_t)``, a layer's input and output, over the tokens."""
    cos = F.cosine_similarity(a.double(), b.double(), dim=-1).cpu()
    return float(1 - (cos[mask].mean() if mask is not None and cos.dim() == mask.dim() else cos.mean()))


def stream(view: nn.Module, inputs: Tensor, *, forward_kwargs: dict[str, Any] | None = None) -> Stream:
    """The residual stream of one no-grad eval forward: norms, angular distances, Block Influence."""
    units = _units(view)
    seen: list[Tensor] = []
    hs = [u.register_forward_pre_hook(lambda _m, a: seen.append(a[0].detach())) for u in units[::2]]
    hs.append(units[-1].register_forward_hook(lambda _m, _a, o: seen.append(o.detach())))
    was = view.training
    try:
        with torch.no_grad():
            view.eval()(inputs, **(forward_kwargs or {}))
    finally:
        view.train(was)
        for h in hs:
            h.remove()
    mask = token_mask(forward_kwargs, tuple(seen[0].shape))
    norms = [float(h.double().norm(dim=-1).cpu()[mask].mean()) for h in seen]
    rms = [float(h.double().cpu()[mask].square().mean().sqrt()) for h in seen]
    n = len(seen)
    ang = [[0.0] * n for _ in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            ang[i][j] = ang[j][i] = angular_distance(seen[i], seen[j], mask)
    bi = [block_influence(seen[i], seen[i + 1], mask) for i in range(n - 1)]
    return Stream(norms=norms, rms=rms, angular=ang, block_influence=bi)
