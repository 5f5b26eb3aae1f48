"""The exact gradient per path length, by dynamic programming over the blocks.

Unrolled, ``n`` residual blocks are ``2^n`` paths (Veit, Wilber, Belongie 2016, arXiv
1605.06431, §3). Let ``g_k`` be the part of the gradient at the first block's input that
is carried by the paths through exactly ``k`` branches. Walking the blocks from the output
back to the input (one batched VJP per block gives every length at once)::

    p_k <- P^T g_k                      post Jacobian at the recorded sum
    g_k <- S^T p_k + J^T p_{k-1}        shortcut and branch Jacobians at the recorded input

so ``sum_k g_k`` is the ordinary gradient. Veit et al. (§5) sampled single paths; this is
exact. Each block costs one batched VJP of its shortcut and one of its branch over all
live lengths at once (after ``m`` blocks only ``k <= m`` can be non-zero, so about
``n/2`` backward passes in all).

The VJPs are taken through the recorded forward graph itself (hooks capture each block's
input, shortcut, branch, sum and output), so a train-mode BatchNorm is differentiated as
the same function the forward computed, batch statistics included, and nothing is run
twice. Running statistics and modes are restored afterwards: measuring leaves the model
as it was.

For a post-activation block (ReLU after the sum) the split is the linearisation at the
recorded point: the post Jacobian is shared by both terms, which is exactly what
backward routing through one term does (``resgrad.gates(route=...)``).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from .. import nets
from ._common import LossFn, as_input, call_loss, chain, preserved
from .counting import EffectiveRange, counts

__all__ = ["Decomposition", "decompose"]


@dataclass
class Decomposition:
    """The gradient at the first block's input, split by path length.

    ``grads[k]`` (``(n+1, *x.shape)``, x the first block's input batch) is the part
    carried by the paths through exactly ``k`` branches; they sum to ``reference``, the
    ordinary autograd gradient. ``input_grads`` (``(n+1, *inputs.shape)``) is the same
    split at the model's input (the stem's VJP applied to each part), when asked for.
    """

    grads: Tensor  # (n+1, B, ...)
    reference: Tensor  # (B, ...)
    training: bool  # BatchNorm mode during the measurement
    input_grads: Tensor | None = None  # (n+1, *inputs.shape)
    seconds: float = 0.0
    info: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return self.grads.shape[0] - 1

    @property
    def counts(self) -> list[int]:
        return counts(self.n)

    @property
    def total(self) -> Tensor:  # (B, ...)
        return self.grads.sum(0)

    @property
    def norms(self) -> Tensor:  # (n+1,) float64
        """``||g_k||`` over the whole batch."""
        return self.grads.flatten(1).double().norm(dim=1)

    @property
    def example_norms(self) -> Tensor:  # (n+1,) float64
        """Mean over examples of ``||g_k[b]||``: comparable, length by length, with
        ``count_k x`` Veit's mean single-path magnitude (:func:`resgrad.paths.sample`)."""
        if self.grads.dim() < 2:
            return self.norms
        return self.grads.flatten(2).double().norm(dim=2).mean(dim=1)

    @property
    def rel_error(self) -> float:
        """``||sum_k g_k - autograd|| / ||autograd||``: the decomposition's own check."""
        ref = self.reference.double()
        den = float(ref.norm())
        return float((self.total.double() - ref).norm()) / den if den > 0 else float((self.total).norm())

    def effective_range(self, mass: float = 0.9, *, by: str = "norms") -> EffectiveRange:
        """Shortest window of lengths holding ``mass`` of ``sum_k ||g_k||`` (``by``:
        ``"norms"`` for the batch gradient, ``"example_norms"`` per example)."""
        if by not in ("norms", "example_norms"):
            raise ValueError(f"by must be 'norms' or 'example_norms', received {by!r}")
        return EffectiveRange.from_mass(getattr(self, by).tolist(), self.n, mass)

    def to_dict(self, mass: float = 0.9) -> dict:
        """JSON-able summary (the tensors themselves are left out)."""
        d = {
            "n": self.n,
            "lengths": list(range(self.n + 1)),
            "counts": self.counts,
            "norms": self.norms.tolist(),
            "example_norms": self.example_norms.tolist(),
            "total_norm": float(self.reference.double().norm()),
            "rel_error": self.rel_error,
            "batchnorm": "train" if self.training else "eval",
            "examples": int(self.grads.shape[1]) if self.grads.dim() > 1 else 1,
            "dtype": str(self.grads.dtype).replace("torch.", ""),
            "seconds": self.seconds,
            "effective": self.effective_range(mass).to_dict(),
            **self.info,
        }
        if self.input_grads is not None:
            d["input_norms"] = self.input_grads.flatten(1).double().norm(dim=1).tolist()
        return d


VJP_MODES = ("auto", "batched", "loop")


@dataclass(frozen=True)
class _Batching:
    """How the VJP of many cotangents at once is taken."""

    batched: bool  # one vmapped call (is_grads_batched) or a loop of plain VJPs
    chunk: int | None = None  # most cotangents per vmapped call (bounds memory)

    @classmethod
    def choose(cls, mode: str, device: torch.device, chunk: int | None = None) -> _Batching:
        if mode not in VJP_MODES:
            raise ValueError(f"vjp must be one of {', '.join(VJP_MODES)}, received {mode!r}")
        # "auto": vmapped on accelerators (one launch per op for all lengths); a loop on
        # CPU, where each VJP over the batch is already compute-bound and vmap's batching
        # rules added ~20% (ResNet-110 1-D, benchmarks/paths.py).
        return cls(mode == "batched" or (mode == "auto" and device.type != "cpu"), chunk)


def _vjp(out: Tensor, inp: Tensor, grads: Tensor, how: _Batching) -> Tensor:
    """``grads[j]^T d out / d inp`` for every ``j``: (K, *out.shape) -> (K, *inp.shape)."""
    if out is inp:
        return grads
    k = grads.shape[0]
    if how.batched:
        step = k if not how.chunk else max(1, int(how.chunk))
        parts = []
        for j in range(0, k, step):
            g = grads[j : j + step]
            try:
                (r,) = torch.autograd.grad(out, inp, g, retain_graph=True, allow_unused=True, is_grads_batched=True)
            except RuntimeError:  # an op without a batching rule: loop instead
                r = _vjp(out, inp, g, _Batching(False))
            parts.append(torch.zeros(len(g), *inp.shape, dtype=inp.dtype, device=inp.device) if r is None else r)
        return parts[0] if len(parts) == 1 else torch.cat(parts)
    res = torch.zeros(k, *inp.shape, dtype=inp.dtype, device=inp.device)
    for j in range(k):
        (r,) = torch.autograd.grad(out, inp, grads[j], retain_graph=True, allow_unused=True)
        if r is not None:
            res[j] = r
    return res


class _Recorder:
    """Forward hooks that capture, per block, x, shortcut(x), branch(x), the sum and y.

    The block's own pre-hook marks it current, so a submodule shared between blocks
    (one ``nn.Identity`` passed to all of them) is recorded for the block running it.
    """

    def __init__(self, res: list[nets.Residual], first: nn.Module) -> None:
        self.res = res
        self.rec: list[dict[str, Tensor]] = [{} for _ in res]
        self.first_input: list[Tensor] = []
        self.handles: list = []
        self._first = first
        self._current = -1

    def __enter__(self) -> _Recorder:
        h = self.handles
        h.append(self._first.register_forward_pre_hook(lambda m, a: self.first_input.append(a[0])))
        seen: set[int] = set()

        def once(module: nn.Module, register: str, hook) -> None:
            if id(module) not in seen:
                seen.add(id(module))
                h.append(getattr(module, register)(hook))

        for i, b in enumerate(self.res):
            h.append(b.register_forward_pre_hook(self._enter(i)))
            h.append(b.register_forward_hook(lambda m, a, o, i=i: self._put(i, "y", o, m)))
            once(b.shortcut, "register_forward_hook", lambda m, a, o: self._put(self._current, "s", o, m))
            once(b.branch, "register_forward_hook", lambda m, a, o: self._put(self._current, "f", o, m))
            if not isinstance(b.post, nn.Identity):
                once(b.post, "register_forward_pre_hook", self._sum_hook)
        return self

    def __exit__(self, *exc) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()

    def _enter(self, i: int):
        def hook(module, args) -> None:
            self._current = i
            self._put(i, "x", args[0], module)

        return hook

    def _put(self, i: int, key: str, value: Tensor, module: nn.Module) -> None:
        if i < 0:
            return  # a shared submodule running outside any residual block
        if key in self.rec[i]:
            raise NotImplementedError(
                f"residual block {i} ran its {key!r} twice in one forward ({type(module).__name__}); "
                "the path decomposition needs each block to run once"
            )
        self.rec[i][key] = value

    def _sum_hook(self, module, args):
        if self._current < 0:
            return None
        self.rec[self._current]["z"] = args[0]
        # An in-place post (ReLU(inplace=True)) would overwrite the recorded sum.
        return (args[0].clone(), *args[1:])


def decompose(
    model: nn.Module,
    inputs: Tensor,
    loss: LossFn | None = None,
    *,
    targets: Tensor | None = None,
    training: bool | None = None,
    input_grads: bool = False,
    chunk: int | None = None,
    vjp: str = "auto",
    forward_kwargs: dict[str, Any] | None = None,
) -> Decomposition:
    """Split the gradient at the first block's input exactly by path length.

    ``loss(output) -> scalar`` (or ``loss(output, targets)``; default summed
    cross-entropy against ``targets``). ``training``: BatchNorm/dropout mode for the
    measurement (None keeps the model's). ``input_grads``: also split the gradient at
    the model input. ``chunk``: most lengths per batched VJP (bounds memory). ``vjp``:
    ``"batched"`` (``is_grads_batched``), ``"loop"``, or ``"auto"`` (batched except on CPU).
    ``forward_kwargs``: extra arguments of the forward (``attention_mask=``, ...), passed as
    given: ``model(inputs, **forward_kwargs)``; the split stays exact, since it differentiates
    the forward that ran. A net of only Plain blocks has one path (``n = 0``).
    """
    res, every = chain(model)
    x_in = as_input(model, inputs)
    how = _Batching.choose(vjp, x_in.device, chunk)
    t0 = time.perf_counter()
    first = res[0] if res else every[0]
    with preserved(model, training), _Recorder(res, first) as rec, torch.enable_grad():
        training_now = model.training
        if input_grads and not x_in.is_floating_point():
            raise ValueError(f"input_grads needs floating-point inputs, received dtype {x_in.dtype}")
        if x_in.is_floating_point():
            # So the first block's input needs grad even when every parameter is frozen.
            x_in = x_in.detach().requires_grad_(True)
        out = model(x_in, **(forward_kwargs or {}))
        value = call_loss(loss, out, targets)
        missing = [i for i, r in enumerate(rec.rec) if "y" not in r or "f" not in r]
        if missing or not rec.first_input:
            raise ValueError(
                f"residual blocks {missing or [0]} did not run in the forward pass; "
                "the path tools need every block on the way from input to output"
            )
        x0 = rec.first_input[0]  # (B, ...) the first block's input
        if not x0.requires_grad:
            raise ValueError(
                "the first block's input does not require grad (integer inputs into frozen "
                "parameters?); unfreeze the layers before the first block"
            )
        last = rec.rec[-1]["y"] if res else x0
        gy, ref = torch.autograd.grad(value, [last, x0], retain_graph=True, allow_unused=True, materialize_grads=True)

        g = gy.unsqueeze(0)  # (1, *y.shape): only k = 0 is live after the output
        for i in reversed(range(len(res))):
            r = rec.rec[i]
            if i + 1 < len(res):
                # Between two blocks (usually nothing): the recorded graph carries every length.
                g = _vjp(rec.rec[i + 1]["x"], r["y"], g, how)
            p = g if "z" not in r else _vjp(r["y"], r["z"], g, how)  # post VJP first
            sg = _vjp(r["s"], r["x"], p, how)  # (m+1, *x.shape)  lengths 0..m
            fg = _vjp(r["f"], r["x"], p, how)  # (m+1, *x.shape)  lengths 1..m+1
            g = torch.cat([sg[:1], sg[1:] + fg[:-1], fg[-1:]])
        if res and rec.rec[0]["x"] is not x0:
            g = _vjp(rec.rec[0]["x"], x0, g, how)
        gin = None
        if input_grads:
            gin = _vjp(x0, x_in, g, how)
    dec = Decomposition(
        g.detach(), ref.detach(), training_now,
        None if gin is None else gin.detach(), time.perf_counter() - t0,
    )
    _check(dec, model)
    return dec


# Modules of transformers that compute in float32 whatever the model's dtype (LlamaRMSNorm
# casts its input to float32; rotary embeddings build cos/sin in float32).
_FLOAT32_INSIDE = ("RMSNorm", "RotaryEmbedding")


def _float32_inside(model: nn.Module) -> list[str]:
    return sorted({type(m).__name__ for m in model.modules() if any(k in type(m).__name__ for k in _FLOAT32_INSIDE)})


def _check(dec: Decomposition, model: nn.Module | None = None) -> None:
    eps = torch.finfo(dec.grads.dtype).eps if dec.grads.is_floating_point() else 1e-7
    scale = max(float(dec.reference.double().norm()), float(dec.norms.max()) if dec.n >= 0 else 0.0)
    err = float((dec.total.double() - dec.reference.double()).norm())
    if scale > 0 and err > 1e4 * eps * scale:
        inside = _float32_inside(model) if model is not None and dec.grads.dtype == torch.float64 else []
        if inside and err <= 1e4 * torch.finfo(torch.float32).eps * scale:
            warnings.warn(
                f"float64 model, but {', '.join(inside)} compute in float32 internally, so the path components "
                f"sum to the autograd gradient within float32 precision ({err / scale:.2g} relative), not float64's",
                RuntimeWarning,
                stacklevel=3,
            )
            return
        warnings.warn(
            f"the path components sum to the autograd gradient only within {err / scale:.2g} "
            "(relative); are the residual blocks a simple chain (each block's output the next one's input)?",
            RuntimeWarning,
            stacklevel=3,
        )
