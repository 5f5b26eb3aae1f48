"""Hyper-connections (Zhu et al. 2024, arXiv 2409.19606) and mHC (DeepSeek-AI 2025, arXiv 2512.24880).

The residual stream is ``n`` streams ``H`` of shape ``(B, T, n, d)``: the input is copied ``n``
times (:class:`StreamExpand`) and the streams are summed before the final norm
(:class:`StreamSum`). Each sublayer ``F`` (attention or MLP, pre-LN inside) is one resgrad
:class:`~resgrad.nets.blocks.Residual` unit:

- ``shortcut(H)``: the stream mixing, ``H'_j = sum_i M_ji H_i`` (HC: ``M = A_r^T``, Zhu et al.
  Eq. 3; mHC: ``M = H_res``, doubly stochastic by Sinkhorn-Knopp);
- ``branch(H)``: the depth connection, ``B_j * F(sum_i A_m,i H_i)`` (HC Eq. 4; mHC: ``H_post^T
  F(H_pre H)``);

so ``y = shortcut(H) + branch(H)`` is the papers' layer, and lesions, routes and the path
decomposition address the mixing and the layer apart. The connection parameters live in the
branch (``branch.hc``); the shortcut reads them unregistered, so they are stored once.

:func:`mixing_matrices` lists every unit's ``M`` and :func:`amax` reads the product
``M_L ... M_1`` across depth: its largest absolute row sum (the forward gain) and column sum
(the backward gain), the mHC paper's Amax (Fig. 3 and 7). The identity mixing gives 1.
"""

from __future__ import annotations

import math
import weakref

import torch
from torch import Tensor, nn

__all__ = ["sinkhorn", "StreamExpand", "StreamSum", "HCConnections", "MHCConnections", "StreamMix",
           "StreamBranch", "norm_linear", "mixing_matrices", "amax", "amax_profile", "SINKHORN_ITERS"]

SINKHORN_ITERS = 20  # t_max of the mHC paper (DeepSeek-AI 2025, §4)


def _rounds(m: Tensor, iters: int) -> tuple[list[Tensor], list[Tensor]]:
    """Each normalisation's output and the sums it divided by, rows (dim 1) then columns (dim 0)."""
    outs, sums = [], []
    for _ in range(iters):
        for dim in (1, 0):
            s = m.sum(dim, keepdim=True)
            m = m / s
            outs.append(m)
            sums.append(s)
    return outs, sums


class _SinkhornRounds(torch.autograd.Function):
    """The rounds on a positive ``(n, n, N)`` tensor (rows sum over dim 1, columns over dim 0).

    The same unrolled iteration as autograd would differentiate, with the backward of each
    normalisation written out, ``g <- (g - sum(g * y)) / s`` along the summed dim: about 4x
    faster on CPU than autograd's graph of 40 broadcast divisions (``benchmarks/designs_speed.py``).
    Under ``create_graph`` the rounds are recomputed from the saved input with autograd on, so
    higher derivatives (and the double-VJP trick of ``probes/jacobian.py``) stay exact.
    """

    @staticmethod
    def forward(ctx, m: Tensor, iters: int) -> Tensor:  # type: ignore[override]
        outs, sums = _rounds(m, iters)
        ctx.iters = iters
        ctx.save_for_backward(m, *outs, *sums)
        return outs[-1]

    @staticmethod
    def backward(ctx, g: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        m, *rest = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: a graph connected to the input, out of place
            outs, sums = _rounds(m, ctx.iters)
            for i in reversed(range(len(outs))):
                dim = 1 if i % 2 == 0 else 0
                g = (g - torch.linalg.vecdot(g, outs[i], dim=dim).unsqueeze(dim)) / sums[i]
            return g, None
        outs, sums = rest[: len(rest) // 2], rest[len(rest) // 2:]
        g = g.clone(memory_format=torch.contiguous_format)  # updated in place: 3 ops a round, no allocation
        for i in reversed(range(len(outs))):
            dim = 1 if i % 2 == 0 else 0
            g.sub_(torch.linalg.vecdot(g, outs[i], dim=dim).unsqueeze(dim)).div_(sums[i])
        return g, None


def sinkhorn(logits: Tensor, iters: int = SINKHORN_ITERS) -> Tensor:
    """Sinkhorn-Knopp on ``exp(logits)`` over the last two dims: rows, then columns, ``iters`` times.

    Each iteration rescales the rows to sum 1, then the columns; the result is doubly stochastic
    (columns exactly, rows to the convergence of ``iters`` rounds: the paper's 20 reach 1e-6 for
    logits of spread 0.5, ~3e-5 for spread 1; 100 rounds reach 1e-6 there). The max is subtracted
    first (the result does not change; ``exp`` cannot overflow). The matrices are laid out
    ``(n, n, N)`` for the rounds, so every broadcast runs over the contiguous batch.
    """
    n = logits.shape[-1]
    if logits.dim() < 2 or logits.shape[-2] != n:
        raise ValueError(f"sinkhorn takes square matrices (..., n, n), received shape {tuple(logits.shape)}")
    m = logits.reshape(-1, n, n).permute(1, 2, 0)
    m = torch.exp(m - m.amax(dim=(0, 1), keepdim=True)).contiguous()
    out = _SinkhornRounds.apply(m, int(iters))
    # Back to (N, n, n) in memory, not only in strides: a batched matmul with a permuted operand
    # falls back to one small gemm per matrix on CPU (~20x slower for the mixing).
    return out.permute(2, 0, 1).contiguous().reshape(logits.shape)


def _norm_linear_plain(flat: Tensor, gamma: Tensor, beta: Tensor | None, w: Tensor, eps: float) -> Tensor:
    """``norm(flat) @ w`` with torch's own norms: LayerNorm (``beta`` given) or RMSNorm (``beta=None``)."""
    if beta is None:
        return torch.nn.functional.rms_norm(flat, flat.shape[-1:], gamma, eps) @ w
    return torch.nn.functional.layer_norm(flat, flat.shape[-1:], gamma, beta, eps) @ w


class _NormLinear(torch.autograd.Function):
    """``norm(flat) @ w`` without the normalised ``(rows, d)`` tensor: the per-row scale moves past the matmul.

    LayerNorm: ``LN(h) w = rstd (h (gamma w) - mean 1^T (gamma w)) + beta w``; RMSNorm (``beta`` None):
    ``RMS(h) w = (h (gamma w)) / rms(h)``. The mean comes out of the same matmul (a column of 1/d),
    the second moment from one norm pass, and the backward is one matmul into ``dh`` plus one
    fused multiply-add: the hyper-connection coefficients read the ``n d`` stream values twice
    forward and twice backward instead of five to six times (``benchmarks/designs_speed.py``).
    ``var = E[h^2] - mean^2``: exact in float64, in float32 to ~1e-7 relative of ``E[h^2]``.
    Under ``create_graph`` the plain ops are replayed, so higher derivatives stay exact.
    """

    @staticmethod
    def forward(ctx, flat: Tensor, gamma: Tensor, beta: Tensor | None, w: Tensor, eps: float) -> Tensor:  # type: ignore[override]
        d = flat.shape[-1]
        wg = gamma[:, None] * w
        ms = torch.linalg.vector_norm(flat, dim=-1, keepdim=True).square() / d
        if beta is None:
            u, mean, c = flat @ wg, None, None
            rstd = torch.rsqrt(ms + eps)
            z = u * rstd
        else:
            ua = flat @ torch.cat([wg, wg.new_full((d, 1), 1.0 / d)], 1)
            u, mean = ua[:, :-1], ua[:, -1:]
            rstd = torch.rsqrt((ms - mean * mean).clamp_min(0) + eps)
            c = wg.sum(0, keepdim=True)
            z = rstd * (u - mean * c) + beta @ w
        ctx.eps = eps
        ctx.save_for_backward(flat, gamma, beta, w, u, rstd, mean, c)
        return z

    @staticmethod
    def backward(ctx, gz: Tensor):  # type: ignore[override]
        flat, gamma, beta, w, u, rstd, mean, c = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: differentiate the plain ops, connected to the inputs
            ins = (flat, gamma, beta, w)
            need = [t for t in ins if t is not None and t.requires_grad]
            got = iter(torch.autograd.grad(_norm_linear_plain(*ins, ctx.eps), need, gz, create_graph=True))
            return (*(next(got) if t is not None and t.requires_grad else None for t in ins), None)
        d = flat.shape[-1]
        wg = gamma[:, None] * w
        gu = gz * rstd
        if beta is None:
            # z = u rstd, rstd = (E[h^2] + eps)^-1/2: dh = gu wg^T - (gz . u) rstd^3 h / d
            a = -(gz * u).sum(-1, keepdim=True) * rstd.pow(3) / d
            gh = (gu @ wg.t()).addcmul_(flat, a)
            g_wg = flat.t() @ gu
            g_beta = None
        else:
            # z = rstd (u - mean c) + beta w, var = E[h^2] - mean^2
            g_var = -0.5 * rstd.pow(3) * (gz * (u - mean * c)).sum(-1, keepdim=True)
            a = 2.0 * g_var / d
            shift = -(gu * c).sum(-1, keepdim=True) / d - a * mean
            gh = torch.addmm(shift, gu, wg.t()).addcmul_(flat, a)
            g_wg = flat.t() @ gu - (mean * gu).sum(0, keepdim=True)
            g_beta = w @ gz.sum(0)
        g_w = g_wg * gamma[:, None]
        if beta is not None:
            g_w = g_w + beta[:, None] * gz.sum(0, keepdim=True)
        return gh, (g_wg * w).sum(1), g_beta, g_w, None


def norm_linear(h: Tensor, norm: nn.Module, w: Tensor) -> Tensor:
    """``norm(h) @ w`` over the last dim of ``h`` for a ``LayerNorm`` or ``RMSNorm`` ``norm`` (with affine weights).

    Rows narrower than 64 take the plain ops: there each op's dispatch costs more than its memory
    pass, and the fused form's extra small ops made dynamic HC ~7% slower at d = 32 (designs_speed.py).
    """
    d = w.shape[0]
    flat = h.reshape(-1, d)
    beta = norm.bias if isinstance(norm, nn.LayerNorm) else None
    eps = float(norm.eps if norm.eps is not None else torch.finfo(h.dtype).eps)
    f = _norm_linear_plain if d < 64 else _NormLinear.apply
    return f(flat, norm.weight, beta, w, eps).reshape(*h.shape[:-1], w.shape[1])


class StreamExpand(nn.Module):
    """``(B, T, d) -> (B, T, n, d)``: the input copied into ``n`` streams (Zhu et al. 2024 §2).

    The stream axis sits next to the features, so each token's mixing is one ``(n, n) @ (n, d)``
    batched matmul over contiguous memory.
    """

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def forward(self, h: Tensor) -> Tensor:
        return h.unsqueeze(-2).expand(*h.shape[:-1], self.n, h.shape[-1])

    def extra_repr(self) -> str:
        return f"n={self.n}"


class StreamSum(nn.Module):
    """``(B, T, n, d) -> (B, T, d)``: the streams summed before the final norm (Zhu et al. 2024 §2)."""

    def forward(self, h: Tensor) -> Tensor:
        return h.sum(-2)


def _weighted_sum(a: Tensor, h: Tensor) -> Tensor:
    """``sum_i a_i H_i`` per token, ``(B, T, n) x (B, T, n, d) -> (B, T, d)``.

    From d = 64 a ``(1, n) @ (n, d)`` batched matmul, which reads ``H`` once (the broadcast product
    writes an ``n d`` temporary: ~2.5x slower at d = 128 on CPU); below, where every op costs its
    dispatch more than its memory, the broadcast product, which is then the faster (designs_speed.py).
    """
    if h.shape[-1] >= 64:
        return torch.matmul(a.unsqueeze(-2), h).squeeze(-2)
    return (a.unsqueeze(-1) * h).sum(-2)


class _TokenMix(torch.autograd.Function):
    """``M @ H`` per token, ``(B, T, n, n) @ (B, T, n, d)``, on contiguous operands forward and backward.

    The first unit's ``H`` is the expanded input and the last unit's incoming gradient the expanded
    gradient of the stream sum (stride 0 over the streams); torch's CPU batched matmul falls back to
    one small gemm per token for those (6,144 selects for 1,024 tokens). The backward is written in
    differentiable ops, so second order (``create_graph``) is exact.
    """

    @staticmethod
    def forward(ctx, m: Tensor, h: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(m, h)  # the inputs themselves: copies made here would have no graph
        return torch.matmul(m.contiguous(), h.contiguous())

    @staticmethod
    def backward(ctx, g: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        m, h = (t.contiguous() for t in ctx.saved_tensors)
        g = g.contiguous()
        return torch.matmul(g, h.transpose(-1, -2)), torch.matmul(m.transpose(-1, -2), g)


class _Cached(nn.Module):
    """One forward's coefficients, computed once for the shortcut and the branch of a unit.

    The unit calls ``shortcut(H)`` and ``branch(H)`` on the same tensor; the coefficients (a norm
    and a matmul of ``H``) are kept for that tensor only while nothing it depends on changed: the
    same object, the same in-place version of it and the same parameter tensors and versions, the
    same grad mode.
    The branch's :meth:`depth`, the last reader, drops them (so no graph outlives the forward).
    """

    def _coeffs(self, h: Tensor) -> Tensor:
        try:
            key = (h._version, torch.is_grad_enabled(), tuple((id(p), p._version) for p in self.parameters()))
        except (RuntimeError, AttributeError):  # a tensor without versions (a functorch wrapper): no cache
            return self._compute(h)
        c = self.__dict__.get("_cache")
        if c is not None and c[0]() is h and c[1] == key:
            return c[2]
        z = self._compute(h)
        self.__dict__["_cache"] = (weakref.ref(h), key, z)
        return z

    def _drop(self) -> None:
        self.__dict__.pop("_cache", None)

    def __getstate__(self) -> dict:
        state = super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__.copy()
        state = dict(state)
        state.pop("_cache", None)
        return state

    def _compute(self, h: Tensor) -> Tensor:  # pragma: no cover - defined by subclasses
        raise NotImplementedError


class HCConnections(_Cached):
    """The width and depth connections of one layer, static or dynamic (Zhu et al. 2024 §2.1-2.2).

    Static: ``A_m`` (n), ``A_r`` (n x n), ``B`` (n), initialised as the paper's Eq. 14 so the
    layer starts as pre-LN on stream ``k mod n``: ``A_m = e_(k mod n)``, ``A_r = I``, ``B = 1``.
    Dynamic (Eq. 10-13): ``Hbar = LN(H)``; ``A_m(H) = s_a tanh(Hbar W_m) + A_m``,
    ``A_r(H) = s_a tanh(Hbar W_r) + A_r``, ``B(H) = s_b tanh(Hbar W_b)^T + B``, with ``W`` zero and
    ``s_a = s_b = 0.01`` at initialisation (the paper's init), one coefficient set per token.
    """

    def __init__(self, n: int, d_model: int, index: int, dynamic: bool) -> None:
        super().__init__()
        self.n, self.dynamic = n, dynamic
        am = torch.zeros(n)
        am[index % n] = 1.0
        self.static_m = nn.Parameter(am)
        self.static_r = nn.Parameter(torch.eye(n))
        self.static_b = nn.Parameter(torch.ones(n))
        if dynamic:
            self.norm = nn.LayerNorm(d_model)
            # Columns: [W_m | W_r (n columns) | W_b].
            self.weight = nn.Parameter(torch.zeros(d_model, n + 2))
            self.scale_a = nn.Parameter(torch.tensor(0.01))
            self.scale_b = nn.Parameter(torch.tensor(0.01))

    def _compute(self, h: Tensor) -> Tensor:  # (B, T, n, n + 2): tanh(LN(H) W), one row per stream
        return torch.tanh(norm_linear(h, self.norm, self.weight))

    def width(self, h: Tensor) -> Tensor:
        """The layer input ``sum_i A_m,i H_i``: ``(B, T, n, d) -> (B, T, d)``."""
        if not self.dynamic:
            return torch.einsum("i,btid->btd", self.static_m, h)
        am = self.scale_a * self._coeffs(h)[..., 0] + self.static_m  # (B, T, n)
        return _weighted_sum(am, h)

    def depth(self, h: Tensor, y: Tensor) -> Tensor:
        """``B_j * y``: the layer output written to each stream, ``(B, T, d) -> (B, T, n, d)``."""
        if not self.dynamic:
            return self.static_b[:, None] * y.unsqueeze(-2)
        b = self.scale_b * self._coeffs(h)[..., self.n + 1] + self.static_b  # (B, T, n)
        self._drop()
        return b.unsqueeze(-1) * y.unsqueeze(-2)

    def matrix(self, h: Tensor | None = None) -> Tensor:
        """The stream mixing ``M = A_r^T`` acting on the streams: ``(n, n)``, or ``(B, T, n, n)`` dynamic."""
        if not self.dynamic or h is None:
            return self.static_r.t()
        ar = self.scale_a * self._coeffs(h)[..., 1:self.n + 1] + self.static_r  # (B, T, i, j)
        return ar.transpose(-1, -2)  # M_ji = A_r,ij

    def mix(self, h: Tensor) -> Tensor:
        if not self.dynamic:  # einsum: one (B T d, n) x (n, n) product, 2-3x faster here than a broadcast matmul
            return torch.einsum("ji,btid->btjd", self.matrix(), h)
        return _TokenMix.apply(self.matrix(h), h)  # per token: (B, T, n, n) @ (B, T, n, d)

    def extra_repr(self) -> str:
        return f"n={self.n}, dynamic={self.dynamic}"


class MHCConnections(_Cached):
    """mHC's three mappings of one layer (DeepSeek-AI 2025 §4.1, Eq. 7-8), one set per token.

    ``x' = RMSNorm(vec(H))`` over the ``n d`` stream values of a token; ``H_pre = sigmoid(a_pre
    x' phi_pre + b_pre)``, ``H_post = 2 sigmoid(a_post x' phi_post + b_post)``, ``H_res =
    Sinkhorn-Knopp(a_res mat(x' phi_res) + b_res)``. Initialisation (a choice, written here): ``phi``
    zero and ``a = 0.01`` (as hyper-connections' ``W`` and ``s``); ``b_pre = -log(n - 1)`` so
    ``H_pre = 1/n`` (the copied streams average to the input), ``b_post = 0`` so ``H_post = 1``,
    ``b_res`` 0 on the diagonal and -8 off it, so ``H_res`` starts near the identity.
    """

    def __init__(self, n: int, d_model: int) -> None:
        super().__init__()
        self.n = n
        self.norm = nn.RMSNorm(n * d_model)
        self.phi = nn.Parameter(torch.zeros(n * d_model, 2 * n + n * n))  # [pre | post | res]
        self.alpha = nn.Parameter(torch.full((3,), 0.01))  # a_pre, a_post, a_res
        self.bias_pre = nn.Parameter(torch.full((n,), -math.log(n - 1) if n > 1 else 10.0))
        self.bias_post = nn.Parameter(torch.zeros(n))
        self.bias_res = nn.Parameter(torch.full((n, n), -8.0).fill_diagonal_(0.0))

    def _compute(self, h: Tensor) -> Tensor:  # (B, T, 2n + n^2): x' phi
        return norm_linear(h.flatten(-2), self.norm, self.phi)

    def width(self, h: Tensor) -> Tensor:
        n = self.n
        pre = torch.sigmoid(self.alpha[0] * self._coeffs(h)[..., :n] + self.bias_pre)  # (B, T, n)
        return _weighted_sum(pre, h)

    def depth(self, h: Tensor, y: Tensor) -> Tensor:
        n = self.n
        post = 2 * torch.sigmoid(self.alpha[1] * self._coeffs(h)[..., n:2 * n] + self.bias_post)  # (B, T, n)
        self._drop()
        return post.unsqueeze(-1) * y.unsqueeze(-2)

    def matrix(self, h: Tensor | None = None) -> Tensor:
        """``H_res``: ``(n, n)`` from the biases alone, or ``(B, T, n, n)`` for streams ``h``."""
        n = self.n
        if h is None:
            return sinkhorn(self.bias_res)
        z = self._coeffs(h)[..., 2 * n:].unflatten(-1, (n, n))
        return sinkhorn(self.alpha[2] * z + self.bias_res)

    def mix(self, h: Tensor) -> Tensor:
        return _TokenMix.apply(self.matrix(h), h)

    def extra_repr(self) -> str:
        return f"n={self.n}, sinkhorn_iters={SINKHORN_ITERS}"


class StreamMix(nn.Module):
    """A unit's shortcut: the stream mixing ``M H`` of the connections held by its branch."""

    keeps_shape = True  # a mixing, not a downsampling: lesions and swaps treat the unit as any other

    def __init__(self, connections: nn.Module) -> None:
        super().__init__()
        self._conn = (connections,)  # a tuple: not registered again, stored once (in the branch)

    @property
    def connections(self) -> nn.Module:
        return self._conn[0]

    def forward(self, h: Tensor) -> Tensor:
        return self._conn[0].mix(h)


class StreamBranch(nn.Module):
    """A unit's branch: ``depth(H, op(width(H)))``; ``op`` is the pre-LN sublayer ``F(LN(x))``."""

    def __init__(self, op: nn.Module, connections: nn.Module) -> None:
        super().__init__()
        self.op = op
        self.hc = connections

    def forward(self, h: Tensor) -> Tensor:
        return self.hc.depth(h, self.op(self.hc.width(h)))


def _mixers(model: nn.Module) -> list[StreamMix]:
    return [m for m in model.modules() if isinstance(m, StreamMix)]


def mixing_matrices(model: nn.Module, x: Tensor | None = None) -> list[Tensor]:
    """Every unit's stream-mixing matrix ``M`` (``H' = M H``), in forward order; ``[]`` for one stream.

    Without ``x``: the input-independent part (static HC: ``A_r^T``; dynamic HC: its static ``A_r^T``;
    mHC: ``Sinkhorn(b_res)``), each ``(n, n)``. With an input ``x`` the model runs once and each
    dynamic unit's matrices are those of every token, ``(B, T, n, n)``.
    """
    mixers = _mixers(model)
    if x is None or not mixers:
        return [m.connections.matrix().detach() for m in mixers]
    got: dict[int, Tensor] = {}
    hooks = [m.register_forward_hook(lambda mod, a, o, i=i: got.__setitem__(i, mod.connections.matrix(a[0])))
             for i, m in enumerate(mixers)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return [got[i].detach() for i in range(len(mixers))]


def _gains(p: Tensor, reduce: str) -> tuple[float, float]:
    fwd = p.abs().sum(-1).amax(-1)  # per token: the largest absolute row sum
    bwd = p.abs().sum(-2).amax(-1)  # the largest absolute column sum
    if reduce == "max":
        return float(fwd.max()), float(bwd.max())
    return float(fwd.mean()), float(bwd.mean())


def amax_profile(model: nn.Module, x: Tensor | None = None, *, reduce: str = "max") -> list[tuple[float, float]]:
    """:func:`amax` of the partial products ``M_k ... M_1``, one ``(forward, backward)`` per unit (``[]``: one stream).

    The depth profile the mHC paper plots (DeepSeek-AI 2025 Fig. 3b): the composite gain up to each unit.
    """
    if reduce not in ("max", "mean"):
        raise ValueError(f"reduce must be 'max' or 'mean', received {reduce!r}")
    out, p = [], None
    for m in mixing_matrices(model, x):
        p = m.double() if p is None else m.double() @ p
        out.append(_gains(p, reduce))
    return out


def amax(model: nn.Module, x: Tensor | None = None, *, reduce: str = "max") -> tuple[float, float]:
    """``(forward_gain, backward_gain)`` of the product of the stream mixings across depth.

    ``P = M_L ... M_1`` (:func:`mixing_matrices`); the forward gain is ``P``'s largest absolute row
    sum (the infinity norm: how much a stream can grow), the backward gain its largest absolute
    column sum (the 1-norm: how much a gradient can), the mHC paper's Amax (DeepSeek-AI 2025 Fig. 3).
    Per token when the mixings depend on ``x``; ``reduce`` says over tokens: ``"max"`` or ``"mean"``.
    A model with one stream (every other design) mixes by the identity: ``(1.0, 1.0)``.
    """
    if reduce not in ("max", "mean"):
        raise ValueError(f"reduce must be 'max' or 'mean', received {reduce!r}")
    mats = mixing_matrices(model, x)
    if not mats:
        return 1.0, 1.0
    p = mats[0].double()
    for m in mats[1:]:
        p = m.double() @ p  # broadcast: static (n, n) with per-token (B, T, n, n)
    return _gains(p, reduce)
