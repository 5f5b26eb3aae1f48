"""Veit's sampled single-path gradient magnitudes, vectorised over the batch.

Veit, Wilber, Belongie 2016 (arXiv 1605.06431, §5, Fig. 6): for a path of length ``k``,
pick ``k`` blocks at random, backpropagate only through the branches of those and only
through the skips of the others, and record the norm of the gradient at the input;
1,000 samples per ``k``. The total gradient magnitude per length is then
``count_k x mean_k`` (a sum of single-path magnitudes: it ignores the cancellation
between paths that the exact decomposition keeps).

Vectorised: every example in a batch carries its own random path, a bool route mask
``(n_blocks, B)``, so one backward gives a whole batch of samples. Two ways:

- ``method="gates"``: per-sample backward routing (:func:`resgrad.gates`), one forward
  and one backward per batch (``x.detach()`` / ``f.detach()`` blended by a per-sample mask);
- ``method="graph"`` (default): one forward per batch of examples records the graph (as
  :func:`resgrad.paths.decompose` does), then many rounds of paths go back through it at
  once, the cotangent sent at each block to the branch VJP or the shortcut VJP by the
  mask; no forward is repeated (about 1.5x faster on a CPU, benchmarks/paths.py).

Either needs examples not to interact, so BatchNorm runs in eval mode (running
statistics) and dropout is off. The per-path loop (:func:`sample_loop`, one example and
one path per forward and backward) is the reference both are tested and benchmarked
against.

A sample is ``||dL/dx_0[b]||`` for example ``b`` and its path, ``x_0`` the first
block's input. Use a loss that sums over examples (the default, summed cross-entropy):
with a mean, every row is scaled by 1/batch.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..nets.blocks import Residual, gates
from ._common import LossFn, as_input, call_loss, chain, has_batchnorm, preserved
from .counting import EffectiveRange, counts
from .decompose import _Batching, _Recorder, _vjp

__all__ = ["Sampled", "sample", "sample_loop", "NOTE"]

NOTE = (
    "BatchNorm in eval mode (running statistics) and dropout off while sampling, so that each "
    "example's randomly drawn path does not interact with the others in the batch"
)
# The same for a model without BatchNorm (GPT-2, a pre-LN Transformer): only dropout could mix.
NOTE_NO_BATCHNORM = (
    "eval mode (dropout off) while sampling; the model has no BatchNorm, so each example's randomly "
    "drawn path does not interact with the others in the batch"
)


@dataclass
class Sampled:
    """Single-path gradient magnitudes: ``values[j]`` are the samples for ``lengths[j]``."""

    n: int
    lengths: list[int]
    values: Tensor  # (len(lengths), samples) float64
    method: str  # "vectorised" or "loop"
    seconds: float = 0.0
    examples: int = 0  # distinct examples samples were drawn from
    note: str = NOTE

    @property
    def mean(self) -> Tensor:  # (len(lengths),)
        return self.values.mean(1)

    @property
    def std(self) -> Tensor:  # (len(lengths),)
        return self.values.std(1) if self.values.shape[1] > 1 else torch.zeros(len(self.lengths))

    @property
    def counts(self) -> list[int]:
        c = counts(self.n)
        return [c[k] for k in self.lengths]

    @property
    def total(self) -> Tensor:  # (len(lengths),) float64
        """``count_k x mean_k``: Veit's total gradient magnitude per length (Fig. 6b)."""
        return torch.tensor([float(c) for c in self.counts], dtype=torch.float64) * self.mean

    def effective_range(self, mass: float = 0.9) -> EffectiveRange:
        """Shortest window of lengths holding ``mass`` of ``sum_k count_k x mean_k``."""
        if self.lengths != list(range(self.n + 1)):
            raise ValueError(
                f"the effective range needs every length 0..{self.n} sampled, received lengths "
                f"{self.lengths[:5]}...; sample with lengths=None"
            )
        return EffectiveRange.from_mass(self.total.tolist(), self.n, mass)

    def to_dict(self, mass: float = 0.9) -> dict:
        q = torch.quantile(self.values, torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64), dim=1)
        d = {
            "n": self.n, "lengths": self.lengths, "counts": self.counts,
            "mean": self.mean.tolist(), "std": self.std.tolist(),
            "q10": q[0].tolist(), "median": q[1].tolist(), "q90": q[2].tolist(),
            "total": self.total.tolist(), "samples": int(self.values.shape[1]),
            "examples": self.examples, "method": self.method, "batchnorm": "eval",
            "seconds": self.seconds, "note": self.note,
        }
        if self.lengths == list(range(self.n + 1)):
            d["effective"] = self.effective_range(mass).to_dict()
        return d


def _setup(model: nn.Module, inputs: Tensor, lengths: Sequence[int] | None, samples: int):
    res, _ = chain(model)
    if not res:
        raise ValueError(
            f"{type(model).__name__} has no Residual blocks: a plain net has exactly one path, "
            "so there is nothing to sample; give its residual twin"
        )
    n = len(res)
    ks = list(range(n + 1)) if lengths is None else sorted({int(k) for k in lengths})
    if not ks or ks[0] < 0 or ks[-1] > n:
        raise ValueError(f"lengths must lie in 0..{n} (the model has {n} residual blocks), received {lengths}")
    if not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples (per length) must be an integer >= 1, received {samples!r}")
    return res, n, ks, as_input(model, inputs)


class _FirstInput:
    """Make the first block's input a fresh leaf and keep it: the gradient is taken there."""

    def __init__(self, block: Residual) -> None:
        self.block, self.x0 = block, None

    def __enter__(self) -> _FirstInput:
        def hook(m, args):
            self.x0 = args[0].detach().requires_grad_(True)
            return (self.x0, *args[1:])

        self.handle = self.block.register_forward_pre_hook(hook)
        return self

    def __exit__(self, *exc) -> None:
        self.handle.remove()


def _take(kw: dict[str, Any] | None, idx: Tensor | slice | None, n: int) -> dict[str, Any]:
    """Forward kwargs for the examples ``idx`` of ``n``: per-example tensors (first dim ``n``)
    indexed like the inputs, anything else passed as is."""
    if not kw:
        return {}
    if idx is None:
        return dict(kw)
    return {k: v[idx] if isinstance(v, Tensor) and v.dim() > 0 and v.shape[0] == n else v for k, v in kw.items()}


def _row_norms(
    model: nn.Module, res: list[Residual], first: _FirstInput, xb: Tensor, tb: Tensor | None,
    loss: LossFn | None, route, kw: dict[str, Any] | None = None,
) -> Tensor:  # (B,) float64
    with gates(res, route=route):
        out = model(xb, **(kw or {}))
    (g,) = torch.autograd.grad(call_loss(loss, out, tb), first.x0)
    return g.flatten(1).double().norm(dim=1)


def _random_paths(kb: Tensor, n: int, g: torch.Generator) -> Tensor:
    """(len(kb), n) bool: row j goes through the branches of a uniform ``kb[j]``-subset of blocks."""
    # The kb[j] smallest of n uniform keys: every k-subset equally likely.
    rank = torch.rand(len(kb), n, generator=g).argsort(1).argsort(1)
    return rank < kb[:, None]


def _sample_gates(model, res, x, loss, targets, want, n, per, g, got, fkw=None) -> None:
    """One forward and one backward per batch; each row routed by its own gates."""
    with _FirstInput(res[0]) as first:
        for start in range(0, len(want), per):
            kb = want[start : start + per]  # (m,) the lengths this batch samples
            m = len(kb)
            if targets is None:
                xb, tb, kw = x, None, _take(fkw, None, len(x))
                kb = torch.cat([kb, torch.zeros(per - m, dtype=kb.dtype)])  # unused rows: length 0
            else:
                idx = torch.randint(len(x), (m,), generator=g)
                xb, tb, kw = x[idx], targets.to(x.device)[idx], _take(fkw, idx.to(x.device), len(x))
            route = _random_paths(kb, n, g).T.contiguous().to(x.device)  # (n, B): True = branch
            norms = _row_norms(model, res, first, xb, tb, loss, route, kw)[:m].cpu()
            for k in got:
                got[k].append(norms[kb[:m] == k])


def _sample_graph(model, res, x, loss, targets, want, n, per, rows, g, got, how, fkw=None) -> None:
    """One forward per chunk of examples; then batched backward passes through the recorded
    graph, each row (round r, example b) with its own path: at block i the cotangent goes to
    the branch VJP where the path takes the branch and to the shortcut VJP where it skips.
    The same routing as the gates, without running the forward again for every path."""
    chunks = [torch.arange(i, min(i + per, len(x))) for i in range(0, len(x), per)]
    if targets is not None:
        order = torch.randperm(len(x), generator=g)
        chunks = [order[c] for c in chunks]
    # Each chunk samples in proportion to its size; rounds of one path per example.
    sizes = [len(c) for c in chunks]
    bounds = [0]
    for sz in sizes:
        bounds.append(bounds[-1] + round(len(want) * sz / len(x)))
    bounds[-1] = len(want)
    for c, idx in enumerate(chunks):
        part = want[bounds[c] : bounds[c + 1]]
        if not len(part):
            continue
        b = len(idx)
        pad = (-len(part)) % b
        kb = torch.cat([part, torch.zeros(pad, dtype=part.dtype)]).view(-1, b)  # (rounds, b)
        live = torch.cat([torch.ones(len(part), dtype=torch.bool), torch.zeros(pad, dtype=torch.bool)]).view(-1, b)
        xb = x if targets is None else x[idx.to(x.device)]
        tb = None if targets is None else targets.to(x.device)[idx.to(targets.device)]
        kw = _take(fkw, None if targets is None else idx.to(x.device), len(x))
        xb = xb.detach().requires_grad_(True) if xb.is_floating_point() else xb
        with _Recorder(res, res[0]) as rec:
            value = call_loss(loss, model(xb, **kw), tb)
            x0 = rec.first_input[0]
            (gy,) = torch.autograd.grad(value, rec.rec[-1]["y"], retain_graph=True)
            # Rounds per batched VJP: ``rows`` paths, by default ~2^24 numbers per cotangent stack.
            step = max(1, (rows or 2**24 // max(1, x0[0].numel())) // b)
            for r0 in range(0, len(kb), step):
                ks_r = kb[r0 : r0 + step]  # (R, b)
                m = _random_paths(ks_r.flatten(), n, g).view(*ks_r.shape, n).to(x.device)  # (R, b, n)
                grad = gy.expand(len(ks_r), *gy.shape)  # (R, b, ...) same output gradient every round
                for i in reversed(range(n)):
                    r = rec.rec[i]
                    if i + 1 < n:
                        grad = _vjp(rec.rec[i + 1]["x"], r["y"], grad, how)
                    p = grad if "z" not in r else _vjp(r["y"], r["z"], grad, how)
                    mi = m[..., i].view(*m.shape[:2], *([1] * (p.dim() - 2)))  # (R, b, 1, ...)
                    sg = _vjp(r["s"], r["x"], torch.where(mi, 0.0, p), how)
                    fg = _vjp(r["f"], r["x"], torch.where(mi, p, 0.0), how) if bool(mi.any()) else 0.0
                    grad = sg + fg
                if rec.rec[0]["x"] is not x0:
                    grad = _vjp(rec.rec[0]["x"], x0, grad, how)
                norms = grad.flatten(2).double().norm(dim=2).cpu()  # (R, b)
                keep = live[r0 : r0 + step]
                for k in got:
                    got[k].append(norms[keep & (ks_r == k)])


def sample(
    model: nn.Module,
    inputs: Tensor,
    loss: LossFn | None = None,
    *,
    targets: Tensor | None = None,
    lengths: Sequence[int] | None = None,
    samples: int = 1000,
    batch_size: int = 500,
    rows: int | None = None,
    seed: int = 0,
    method: str = "graph",
    vjp: str = "auto",
    forward_kwargs: dict[str, Any] | None = None,
) -> Sampled:
    """Veit's sampled path magnitudes, vectorised: every example carries its own random path.

    ``lengths``: which path lengths (default all ``0..n``); ``samples`` per length.
    With ``targets``, batches of ``batch_size`` examples call ``loss(output,
    targets[batch])`` (default summed cross-entropy); without, every batch is all of
    ``inputs`` and ``loss(output)``.

    ``method="graph"`` (default): one forward per batch of examples, then backward passes
    through the recorded graph with ``rows`` (round x example) paths per batched VJP
    (default: about 2^24 numbers per stack of cotangents).
    ``method="gates"``: one forward and one backward per batch, each example routed by
    per-sample gates (``resgrad.gates(route=(n, B) mask)``). Both compute the same samples'
    distribution; "graph" skips the repeated forward passes. ``vjp``: as in
    :func:`resgrad.paths.decompose`. ``forward_kwargs``: extra forward arguments
    (``attention_mask=``, ...); tensors with one row per example are indexed with the batch.
    """
    if method not in ("graph", "gates"):
        raise ValueError(f"method must be 'graph' or 'gates', received {method!r}")
    res, n, ks, x = _setup(model, inputs, lengths, samples)
    g = torch.Generator().manual_seed(seed)
    want = torch.tensor(ks).repeat_interleave(samples)
    want = want[torch.randperm(len(want), generator=g)]  # mix lengths across batches
    per = len(x) if targets is None else max(1, min(int(batch_size), len(x) if method == "graph" else len(want)))
    got: dict[int, list[Tensor]] = {k: [] for k in ks}
    t0 = time.perf_counter()
    with preserved(model, training=False), torch.enable_grad():
        if method == "gates":
            _sample_gates(model, res, x, loss, targets, want, n, per, g, got, forward_kwargs)
        else:
            _sample_graph(model, res, x, loss, targets, want, n, per, None if rows is None else max(1, int(rows)), g, got,
                          _Batching.choose(vjp, x.device), forward_kwargs)
    values = torch.stack([torch.cat(got[k]) for k in ks])  # (len(ks), samples)
    return Sampled(n, ks, values, f"vectorised ({method})", time.perf_counter() - t0, len(x), _note(model))


def sample_loop(
    model: nn.Module,
    inputs: Tensor,
    loss: LossFn | None = None,
    *,
    targets: Tensor | None = None,
    lengths: Sequence[int] | None = None,
    samples: int = 1000,
    seed: int = 0,
    forward_kwargs: dict[str, Any] | None = None,
) -> Sampled:
    """The reference: one example, one path, one forward and backward per sample.

    With ``targets`` each sample is a batch of one example; without, each sample runs
    all of ``inputs`` (``loss(output)``) and keeps one example's row.
    """
    res, n, ks, x = _setup(model, inputs, lengths, samples)
    g = torch.Generator().manual_seed(seed)
    vals = torch.empty(len(ks), samples, dtype=torch.float64)
    t0 = time.perf_counter()
    with preserved(model, training=False), torch.enable_grad(), _FirstInput(res[0]) as first:
        for j, k in enumerate(ks):
            for s in range(samples):
                b = int(torch.randint(len(x), (1,), generator=g))
                through = set(torch.randperm(n, generator=g)[:k].tolist())
                route = {i: "branch" if i in through else "skip" for i in range(n)}
                if targets is None:
                    vals[j, s] = _row_norms(model, res, first, x, None, loss, route, forward_kwargs)[b]
                else:
                    tb = targets[b : b + 1].to(x.device)
                    kw = _take(forward_kwargs, slice(b, b + 1), len(x))
                    vals[j, s] = _row_norms(model, res, first, x[b : b + 1], tb, loss, route, kw)[0]
    return Sampled(n, ks, vals, "loop", time.perf_counter() - t0, len(x), _note(model))


def _note(model: nn.Module) -> str:
    return NOTE if has_batchnorm(model) else NOTE_NO_BATCHNORM
