"""Singular values of the input-output Jacobian, per example, without materialising it.

Dynamical isometry (Pennington, Schoenholz, Ganguli 2017) asks whether all singular
values of ``J = ∂f(x)/∂x`` stay near 1; a plain stack multiplies layer Jacobians, a
residual block contributes ``I + ∂F/∂x``. Small Jacobians (``min(d_in, d_out) <=
dense_limit``) are built row by row from vector-Jacobian products and decomposed
exactly; larger ones go through batched Lanczos on the smaller Gram matrix (``J Jᵀ`` or
``JᵀJ``), each iteration one VJP and one JVP. Lanczos' Ritz values give the extremes
(its smallest is an upper bound on σ_min, exact once the Krylov space is full) and, with
the squared first components of the Ritz vectors as weights, a stochastic Lanczos
quadrature sketch of the whole spectrum (Ubaru, Chen, Saad 2017) for the histogram.

JVPs use the double-backward trick (``J t = ∂/∂u ⟨Jᵀu, t⟩``) on one recorded forward
pass, so any module autograd can differentiate twice works, BatchNorm in training mode
included, and the model's buffers (running statistics) are restored afterwards.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

__all__ = ["JacobianSpectrum", "jacobian_spectrum"]

Method = Literal["auto", "dense", "lanczos"]


@dataclass
class JacobianSpectrum:
    """Per-example Jacobian singular values (row b = example b; one row if not per example)."""

    singular_values: Tensor  # (B, m) descending: exact (dense) or Ritz values (lanczos), float64
    weights: Tensor  # (B, m) spectral-density weights per example, rows sum to 1
    method: str  # "dense" or "lanczos"
    d_in: int  # input size per example
    d_out: int  # output size per example
    exact: bool  # True when every singular value is exact

    @property
    def sigma_max(self) -> Tensor:  # (B,)
        return self.singular_values[:, 0]

    @property
    def sigma_min(self) -> Tensor:  # (B,) smallest of the min(d_in, d_out) singular values
        return self.singular_values[:, -1]

    @property
    def condition(self) -> Tensor:  # (B,) σ_max / σ_min
        return self.sigma_max / self.sigma_min

    def histogram(self, bins: int = 30, range_: tuple[float, float] | None = None) -> tuple[Tensor, Tensor]:
        """Density of log10 σ pooled over examples: (weights per bin summing to 1, bin edges)."""
        s = self.singular_values.clamp_min(1e-300).log10().flatten()
        w = (self.weights / self.weights.shape[0]).flatten()
        lo, hi = range_ if range_ is not None else (float(s.min()), float(s.max()))
        if hi <= lo:
            lo, hi = lo - 0.5, hi + 0.5
        idx = ((s - lo) / (hi - lo) * bins).long().clamp(0, bins - 1)
        counts = torch.zeros(bins, dtype=torch.float64).index_add_(0, idx, w.double())
        return counts, torch.linspace(lo, hi, bins + 1, dtype=torch.float64)

    def to_dict(self, bins: int = 30) -> dict[str, Any]:
        """JSON-able summary: per-example extremes, pooled log10 histogram."""
        counts, edges = self.histogram(bins)
        return {
            "method": self.method, "exact": self.exact, "d_in": self.d_in, "d_out": self.d_out,
            "sigma_max": self.sigma_max.tolist(), "sigma_min": self.sigma_min.tolist(),
            "log10_hist": {"density": counts.tolist(), "edges": edges.tolist()},
        }


def _couples_examples(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training for m in model.modules())


class _Linearised:
    """VJPs and JVPs of ``model`` at ``x`` from one recorded forward pass."""

    def __init__(self, model: nn.Module, x: Tensor, per_example: bool) -> None:
        self.model = model
        self._saved = {k: b.detach().clone() for k, b in model.named_buffers()}
        self.x = x.detach().clone().requires_grad_(True)
        try:
            with torch.enable_grad():
                self.y = model(self.x)
        except BaseException:
            self.restore()
            raise
        if not isinstance(self.y, Tensor):
            raise TypeError(f"jacobian_spectrum needs a model returning one tensor, received {type(self.y).__name__}")
        if not self.y.requires_grad:
            raise ValueError("the model output does not depend on its input through autograd (no grad)")
        b = x.shape[0] if per_example else 1
        self.b = b
        self.d_in = self.x.numel() // b
        self.d_out = self.y.numel() // b
        self._u: Tensor | None = None
        self._gx: Tensor | None = None

    def restore(self) -> None:
        """Put the buffers (BatchNorm running statistics) back; the graph is unusable after."""
        with torch.no_grad():
            for k, b in self.model.named_buffers():
                if k in self._saved:
                    b.copy_(self._saved[k])
        self.y = self._gx = None  # type: ignore[assignment]

    def vjp(self, v: Tensor) -> Tensor:  # (b, d_out) -> (b, d_in)
        g = torch.autograd.grad(self.y, self.x, v.to(self.y.dtype).reshape(self.y.shape), retain_graph=True)[0]
        return g.reshape(self.b, self.d_in)

    def jvp(self, t: Tensor) -> Tensor:  # (b, d_in) -> (b, d_out)
        if self._gx is None:
            # Jᵀu is linear in u; differentiating <Jᵀu, t> by u gives J t.
            self._u = torch.zeros_like(self.y, requires_grad=True)
            self._gx = torch.autograd.grad(self.y, self.x, self._u, create_graph=True)[0]
        assert self._u is not None
        out = torch.autograd.grad(self._gx, self._u, t.to(self.x.dtype).reshape(self.x.shape),
                                  retain_graph=True, allow_unused=True)[0]
        if out is None:  # the output does not depend on the input at all
            return torch.zeros(self.b, self.d_out, dtype=self.y.dtype, device=self.y.device)
        return out.reshape(self.b, self.d_out)


def jacobian_spectrum(
    model: nn.Module,
    x: Tensor,
    k: int = 32,
    *,
    method: Method = "auto",
    per_example: bool = True,
    dense_limit: int = 64,
    seed: int = 0,
) -> JacobianSpectrum:
    """Singular values of ``∂model(x)_b / ∂x_b`` for every example ``b`` of ``x`` (B, ...).

    ``k``: Lanczos iterations (more: tighter extremes, finer histogram). ``method``:
    ``"dense"`` (exact, ``min(d_in, d_out)`` products), ``"lanczos"``, or ``"auto"``
    (dense when ``min(d_in, d_out) <= dense_limit``). ``per_example=False`` treats the
    whole batch as one function, the right view for BatchNorm in training mode, which
    couples the examples of a batch (per-example Jacobians are then undefined).
    """
    if not isinstance(x, Tensor) or x.dim() < 1 or x.shape[0] < 1:
        raise ValueError(f"x must be a batch tensor (B, ...), received {type(x).__name__} {getattr(x, 'shape', '')}")
    if method not in ("auto", "dense", "lanczos"):
        raise ValueError(f"method must be 'auto', 'dense' or 'lanczos', received {method!r}")
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k (Lanczos iterations) must be an integer >= 1, received {k!r}")
    if per_example and _couples_examples(model):
        raise ValueError(
            "the model has BatchNorm in training mode, which couples the examples of a batch, so "
            "per-example Jacobians are undefined; call model.eval() or pass per_example=False"
        )
    lin = _Linearised(model, x, per_example)
    try:
        return _spectrum(lin, k, method, dense_limit, seed, x.device)
    finally:
        lin.restore()


def _spectrum(lin: _Linearised, k: int, method: Method, dense_limit: int, seed: int,
              device: torch.device) -> JacobianSpectrum:
    n = min(lin.d_in, lin.d_out)
    if method == "dense" or (method == "auto" and n <= dense_limit):
        sv = _dense(lin)
        return JacobianSpectrum(sv, torch.full_like(sv, 1.0 / sv.shape[1]), "dense", lin.d_in, lin.d_out, True)
    gen = torch.Generator().manual_seed(seed)
    if lin.d_out <= lin.d_in:
        gram: Callable[[Tensor], Tensor] = lambda v: lin.jvp(lin.vjp(v))  # noqa: E731  J Jᵀ v
    else:
        gram = lambda v: lin.vjp(lin.jvp(v))  # noqa: E731  Jᵀ J v
    theta, w = _lanczos(gram, lin.b, n, min(k, n), gen, device)
    sv = theta.clamp_min(0).sqrt()
    return JacobianSpectrum(sv, w, "lanczos", lin.d_in, lin.d_out, exact=min(k, n) == n)


def _dense(lin: _Linearised) -> Tensor:
    """Exact singular values (b, min(d_in, d_out)), descending, from one product per row."""
    eye_rows = []
    if lin.d_out <= lin.d_in:
        for j in range(lin.d_out):
            v = torch.zeros(lin.b, lin.d_out, device=lin.y.device, dtype=lin.y.dtype)
            v[:, j] = 1
            eye_rows.append(lin.vjp(v))  # row j of J: (b, d_in)
        jac = torch.stack(eye_rows, dim=1)  # (b, d_out, d_in)
    else:
        for i in range(lin.d_in):
            t = torch.zeros(lin.b, lin.d_in, device=lin.x.device, dtype=lin.x.dtype)
            t[:, i] = 1
            eye_rows.append(lin.jvp(t))  # column i of J: (b, d_out)
        jac = torch.stack(eye_rows, dim=2)  # (b, d_out, d_in)
    return torch.linalg.svdvals(jac.double().cpu())


def _lanczos(
    op: Callable[[Tensor], Tensor], b: int, n: int, m: int, gen: torch.Generator, device: torch.device
) -> tuple[Tensor, Tensor]:
    """Batched Lanczos with full reorthogonalisation on a symmetric PSD operator (b, n).

    Returns Ritz values (b, m) descending and their quadrature weights (b, m).
    """
    q = torch.randn(b, n, generator=gen, dtype=torch.float64)
    q = q / q.norm(dim=1, keepdim=True)
    Q = torch.zeros(b, m, n, dtype=torch.float64)
    alpha = torch.zeros(b, m, dtype=torch.float64)
    beta = torch.zeros(b, m, dtype=torch.float64)
    q_prev = torch.zeros_like(q)
    for j in range(m):
        Q[:, j] = q
        w = op(q.to(device)).double().cpu()
        a = (w * q).sum(1)
        alpha[:, j] = a
        w = w - a[:, None] * q - (beta[:, j - 1, None] * q_prev if j else 0)
        for _ in range(2):  # full reorthogonalisation, twice is enough (Parlett)
            w = w - torch.einsum("bm,bmn->bn", torch.einsum("bmn,bn->bm", Q[:, : j + 1], w), Q[:, : j + 1])
        bn = w.norm(dim=1)
        beta[:, j] = bn
        if j == m - 1:
            break
        scale = alpha[:, : j + 1].abs().amax(1).clamp_min(1e-300)
        dead = bn <= 1e-10 * scale
        if dead.any():  # invariant subspace found: continue from a fresh orthogonal vector
            r = torch.randn(b, n, generator=gen, dtype=torch.float64)
            r = r - torch.einsum("bm,bmn->bn", torch.einsum("bmn,bn->bm", Q[:, : j + 1], r), Q[:, : j + 1])
            w = torch.where(dead[:, None], r, w)
            beta[:, j] = torch.where(dead, torch.zeros_like(bn), bn)
            bn = w.norm(dim=1)
        q_prev, q = q, w / bn[:, None]
    T = torch.diag_embed(alpha) + torch.diag_embed(beta[:, : m - 1], 1) + torch.diag_embed(beta[:, : m - 1], -1)
    theta, U = torch.linalg.eigh(T)  # ascending
    weights = U[:, 0, :] ** 2
    return theta.flip(1), weights.flip(1)
